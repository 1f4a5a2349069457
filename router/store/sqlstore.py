"""The store: one implementation over either engine (SQLite or PostgreSQL).

Messages, deliveries, attempts and channel health here; the way back in
:mod:`router.store.ops_twoway`, the work queue in :mod:`router.store.ops_queue`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from router.model.health import Breaker, State
from router.model.outcome import Outcome
from router.store.base import (
    AttemptStart,
    Fence,
    MessageRecord,
    OwnerCheck,
    StoredAttempt,
    StoredMessage,
)
from router.store.ops_audience import (
    DELIVERY_COLUMNS,
    AudienceOperations,
    delivery_row,
    take_ownership,
)
from router.store.ops_queue import QueueOperations
from router.store.ops_twoway import NOTHING_MAYBE_SENT, TwoWayOperations
from router.store.sql import Dialect, Engine, Op, Tx

T = TypeVar("T")
ATTEMPT_COLUMNS = (
    "id, message_id, contact, channel, address, kind, state, verdict, scope, detail, provider_id,"
    " retry_after, started_at, finished_at, round, receipt, provider"
)
MESSAGE_COLUMNS = (
    "id, body, audience, fingerprint, created_at, idempotency_key, expires_at, goal"
)
_BEGIN = (
    "INSERT INTO attempts (id, message_id, contact, channel, address, kind, state, started_at,"
    " round, provider) SELECT ?, ?, ?, ?, ?, ?, 'sending', ?, ?, ?"
)
# A stopped message (its incident was resolved) starts no attempt, whoever holds it. The
# check reads the rows a take-over, an acknowledgement or a resolve writes: on PostgreSQL
# it locks them (FOR SHARE), so that an insert racing one of those waits for it and sees
# what it wrote, instead of judging by a snapshot taken just before (read committed).
_BEGIN_AS_OWNER = (
    "INSERT INTO attempts (id, message_id, contact, channel, address, kind, state, started_at,"
    " round, provider) SELECT ?, ?, ?, ?, ?, ?, 'sending', ?, ?, ?"
    " WHERE EXISTS (SELECT 1 FROM messages WHERE id = ? AND owner = ? AND epoch = ?"
    " AND stopped_at IS NULL{lock})"
)
_BEGIN_AS_LEASE_HOLDER = (
    "INSERT INTO attempts (id, message_id, contact, channel, address, kind, state, started_at,"
    " round, provider) SELECT ?, ?, ?, ?, ?, ?, 'sending', ?, ?, ?"
    " WHERE EXISTS (SELECT 1 FROM deliveries d JOIN messages m ON m.id = d.message_id"
    " WHERE d.message_id = ? AND d.contact = ? AND d.lease_owner = ? AND d.lease_epoch = ?"
    " AND m.stopped_at IS NULL{lock})"
)
_BEGIN_WHILE_WAITING = (
    "INSERT INTO attempts (id, message_id, contact, channel, address, kind, state, started_at,"
    " round, provider) SELECT ?, ?, ?, ?, ?, ?, 'sending', ?, ?, ?"
    " WHERE EXISTS (SELECT 1 FROM deliveries d JOIN messages m ON m.id = d.message_id"
    " WHERE d.message_id = ? AND d.contact = ? AND d.done = 0 AND m.stopped_at IS NULL{lock})"
)
_LOCKS = {"sqlite": ("", ""), "postgres": (" FOR SHARE", " FOR SHARE OF d, m")}
"""The lock clause of the owner's check, and of the joined checks, per engine (SQLite's
single writer already runs every transaction alone)."""
LATE_ANSWER = " (answered after another process had settled it as maybe sent)"
_OWNER_ROW = "SELECT state, owner, heartbeat_at FROM messages WHERE id = ?"
_HEALTH_COLUMNS = (
    "name", "state", "since", "consecutive_failures", "cooldown", "next_trial_at",
    "trial_started_at", "closed_at", "last_error", "last_probe_at", "last_probe_ok",
    "last_probe_latency", "updated_at", "warning",
)


class SqlStore(AudienceOperations, TwoWayOperations, QueueOperations):
    """Every operation is one transaction; on SQLite, one share of a group commit."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> Dialect:
        return self.engine.dialect

    @property
    def ordered_writes(self) -> bool:
        return self.engine.dialect == "sqlite"

    async def open(self) -> None:
        await self.engine.open()

    async def close(self) -> None:
        await self.engine.close()

    async def wake_workers(self) -> None:
        """Tell idle workers that work was queued (NOTIFY on PostgreSQL; SQLite workers poll)."""
        await self.engine.notify()

    async def on_work(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever work is queued by another process, where the engine
        can say so (LISTEN on PostgreSQL); SQLite workers poll instead."""
        await self.engine.listen(callback)

    async def run(self, op: Op[T]) -> T:
        return await self.engine.run(op)

    # -- messages and deliveries --------------------------------------------------------

    async def take_over(
        self, message_id: str, *, owner: str, owner_is_alive: OwnerCheck
    ) -> int | None:
        async def take(tx: Tx) -> int | None:
            lock = " FOR UPDATE" if tx.dialect == "postgres" else ""
            row = await tx.fetchone(
                _OWNER_ROW + lock, message_id,
            )
            if row is None or row[0] != "pending" or owner_is_alive(row[1], row[2]):
                return None
            # Our heartbeat starts now: the last one was the dead owner's.
            return await take_ownership(tx, message_id, owner, _now())

        taken: int | None = await self.run(take)
        return taken

    async def heartbeat(self, message_ids: Sequence[str], *, owner: str, at: float) -> set[str]:
        async def beat(tx: Tx) -> set[str]:
            await tx.executemany(
                "UPDATE messages SET heartbeat_at = ? WHERE id = ? AND owner = ?",
                [(at, message_id, owner) for message_id in message_ids],
            )
            marks = ", ".join("?" for _ in message_ids)
            rows = await tx.fetchall(
                f"SELECT id FROM messages WHERE owner = ? AND id IN ({marks})",  # noqa: S608
                owner, *message_ids,
            )
            return {str(row[0]) for row in rows}

        if not message_ids:
            return set()
        owned: set[str] = await self.run(beat)
        return owned

    async def finish_message(self, message_id: str, *, owner: str, at: float) -> None:
        # Deliveries still waiting for a receipt or a person leave it 'waiting': the
        # escalation loop of a server (or of the CLI that waits) carries on from there.
        await self.run(lambda tx: tx.execute(
            "UPDATE messages SET finished_at = ?, owner = NULL, state = CASE WHEN EXISTS"
            " (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id AND d.done = 0)"
            " THEN 'waiting' ELSE 'done' END WHERE id = ? AND (owner = ? OR owner IS NULL)",
            at, message_id, owner,
        ))

    async def settle_stopped(self, message_id: str, *, at: float) -> bool:
        """Whether the message was stopped (its incident resolved); if so, a delivery that
        was between two attempts when it stopped, nothing of it maybe sent, expires."""
        async def settle(tx: Tx) -> bool:
            row = await tx.fetchone("SELECT stopped_at FROM messages WHERE id = ?", message_id)
            if row is None or row[0] is None:
                return False
            await tx.execute(
                "UPDATE deliveries SET status = 'expired', done = 1, updated_at = ?"  # noqa: S608
                f" WHERE message_id = ? AND status = 'pending' AND {NOTHING_MAYBE_SENT}",
                at, message_id,
            )
            return True

        stopped: bool = await self.run(settle)
        return stopped

    async def load_message(self, message_id: str) -> StoredMessage | None:
        async def load(tx: Tx) -> StoredMessage | None:
            row = await tx.fetchone(
                f"SELECT {MESSAGE_COLUMNS}, incident_id, incident_entry, state, owner,"  # noqa: S608
                " heartbeat_at, stopped_at FROM messages WHERE id = ?", message_id,
            )
            if row is None:
                return None
            deliveries = await tx.fetchall(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = ?"  # noqa: S608
                " ORDER BY position", message_id,
            )
            attempts = await tx.fetchall(
                f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE message_id = ?"  # noqa: S608
                " ORDER BY started_at, id", message_id,
            )
            return StoredMessage(
                record=MessageRecord(*row[:10]), state=row[10], owner=row[11],
                heartbeat_at=row[12], deliveries=tuple(delivery_row(d) for d in deliveries),
                attempts=tuple(StoredAttempt(*a) for a in attempts), stopped_at=row[13],
            )

        return await self.run(load)

    async def orphaned_messages(self, *, owner_is_alive: OwnerCheck) -> list[str]:
        rows = await self.run(lambda tx: tx.fetchall(
            "SELECT id, owner, heartbeat_at FROM messages WHERE state = 'pending'"
            " ORDER BY created_at"
        ))
        return [row[0] for row in rows if not owner_is_alive(row[1], row[2])]

    async def history(
        self, *, message_id: str | None = None, contact: str | None = None, limit: int = 200
    ) -> list[StoredAttempt]:
        where, params = ["1 = 1"], list[object]()
        if message_id is not None:
            where.append("message_id = ?")
            params.append(message_id)
        if contact is not None:
            where.append("contact = ?")
            params.append(contact)
        query = (
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts"  # noqa: S608
            f" WHERE {' AND '.join(where)} ORDER BY started_at DESC, id DESC LIMIT ?"
        )
        rows = await self.run(lambda tx: tx.fetchall(query, *params, limit))
        return [StoredAttempt(*row) for row in rows]

    async def message_ids_like(self, part: str, limit: int = 10) -> list[str]:
        escaped = part.replace("!", "!!").replace("%", "!%").replace("_", "!_")
        rows = await self.run(lambda tx: tx.fetchall(
            "SELECT id FROM messages WHERE id = ? OR id LIKE ? ESCAPE '!'"
            " OR id LIKE ? ESCAPE '!' ORDER BY created_at DESC LIMIT ?",
            part, f"{escaped}%", f"%{escaped}", limit,
        ))
        return [str(row[0]) for row in rows]

    # -- attempts ------------------------------------------------------------------------

    async def begin_attempt(
        self, attempt: AttemptStart, fence: Fence | None = None
    ) -> bool:
        values = (attempt.attempt_id, attempt.message_id, attempt.contact, attempt.channel,
                  attempt.address, attempt.kind, attempt.started_at, attempt.round,
                  attempt.provider)
        check: tuple[object, ...] = ()
        own, joined = _LOCKS[self.dialect]
        if fence is None:
            statement = _BEGIN
        elif fence.waiting:
            statement = _BEGIN_WHILE_WAITING.format(lock=joined)
            check = (attempt.message_id, fence.contact)
        elif fence.contact is None:
            statement = _BEGIN_AS_OWNER.format(lock=own)
            check = (attempt.message_id, fence.owner, fence.epoch)
        else:
            statement = _BEGIN_AS_LEASE_HOLDER.format(lock=joined)
            check = (attempt.message_id, fence.contact, fence.owner, fence.epoch)
        written = await self.run(lambda tx: tx.execute(statement, *values, *check))
        return bool(written)

    async def finish_attempt(
        self,
        attempt_id: str,
        outcome: Outcome,
        finished_at: float,
        *,
        delivery_status: str | None = None,
        delivery_channel: str | None = None,
    ) -> None:
        value = outcome.verdict.value
        late_detail = LATE_ANSWER.strip(" ()") if outcome.ok else outcome.detail + LATE_ANSWER

        async def update(tx: Tx) -> None:
            # One statement per table, old values read in place: "no answer" never
            # overwrites what the provider itself told us meanwhile (a status callback
            # naming this attempt came before our read timed out); an answer that comes
            # after another process settled the attempt as maybe sent (this one was
            # paused, its work taken over) is the truth about the request, marked late.
            changed = await tx.execute(
                "UPDATE attempts SET state = 'done', verdict = ?, scope = ?,"
                " detail = CASE WHEN state = 'done' AND verdict = 'unknown' THEN ? ELSE ? END,"
                " provider_id = ?, retry_after = ?, finished_at = ? WHERE id = ?"
                " AND NOT (? = 'unknown' AND provider_id IS NOT NULL"
                " AND COALESCE(verdict, '') = 'accepted')",
                value, outcome.scope.value, late_detail, outcome.detail, outcome.provider_id,
                outcome.retry_after, finished_at, attempt_id, value,
            )
            if delivery_status is not None and changed:
                # Accepted is the end only when that was the goal; otherwise the delivery
                # now waits for a receipt or a person. The channel is the first that took
                # it (as in the results): a late answer never moves it.
                await tx.execute(
                    "UPDATE deliveries SET channel = CASE WHEN status IN"
                    " ('accepted', 'delivered', 'acknowledged') THEN channel ELSE ? END,"
                    " updated_at = ?,"
                    " status = CASE WHEN status IN ('delivered', 'acknowledged') THEN status"
                    " ELSE ? END, done = CASE WHEN goal = 'accepted' THEN 1 ELSE done END"
                    " WHERE (message_id, contact) ="
                    " (SELECT message_id, contact FROM attempts WHERE id = ?)",
                    delivery_channel, finished_at, delivery_status, attempt_id,
                )

        await self.run(update)

    async def finish_delivery(
        self, message_id: str, contact: str, status: str, channel: str | None, at: float
    ) -> None:
        # Never over a delivery another process reached meanwhile (a paused run waking up
        # after its work was taken over and finished).
        await self.run(lambda tx: tx.execute(
            "UPDATE deliveries SET status = ?, channel = ?, updated_at = ?, done = 1,"
            " next_action_at = NULL, waiting_for = NULL WHERE message_id = ? AND contact = ?"
            " AND status NOT IN ('accepted', 'delivered', 'acknowledged')",
            status, channel, at, message_id, contact,
        ))

    # -- channel health ------------------------------------------------------------------

    async def load_health(self) -> list[Breaker]:
        columns = ", ".join(_HEALTH_COLUMNS)
        rows = await self.run(
            lambda tx: tx.fetchall(f"SELECT {columns} FROM channel_health")  # noqa: S608
        )
        return [_breaker(row) for row in rows]

    async def save_health(self, breakers: Sequence[Breaker]) -> None:
        columns = ", ".join(_HEALTH_COLUMNS)
        marks = ", ".join("?" for _ in _HEALTH_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _HEALTH_COLUMNS[1:])
        statement = (
            f"INSERT INTO channel_health ({columns}) VALUES ({marks})"  # noqa: S608
            f" ON CONFLICT (name) DO UPDATE SET {updates}"
            " WHERE excluded.updated_at > channel_health.updated_at"
        )
        rows = [_health_row(breaker) for breaker in breakers]
        await self.run(lambda tx: tx.executemany(statement, rows))


def _now() -> float:
    return time.time()


def _health_row(breaker: Breaker) -> tuple[object, ...]:
    return tuple(
        breaker.state.value if column == "state" else getattr(breaker, column)
        for column in _HEALTH_COLUMNS
    )


def _breaker(row: tuple[Any, ...]) -> Breaker:
    values = dict(zip(_HEALTH_COLUMNS, row, strict=True))
    values["state"] = State(values["state"])
    if values["last_probe_ok"] is not None:
        values["last_probe_ok"] = bool(values["last_probe_ok"])
    return Breaker(**values)
