"""Store operations for audiences of any size: a message is recorded first (state
``recording``), its deliveries added in batches as the audience is read, then sealed
(``pending`` for its own process, ``queued`` for workers). Nothing is sent before it is
sealed, so an interrupted recording sent nothing; a repeat of its idempotency key
carries on recording where it stopped. Work and results are read back a page at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from router.store.base import (
    Claim,
    DeliverySeed,
    Fence,
    KeyConflict,
    MessageRecord,
    OwnerCheck,
    StoredAttempt,
    StoredDelivery,
)
from router.store.results import ATTEMPT_COLUMNS, StoredResults
from router.store.sql import Engine, Row, Tx

DELIVERY_COLUMNS = (
    "contact, position, addresses, status, channel, goal, done, round, ack_code, waiting_for,"
    " waiting_attempt, next_action_at, notes"
)
_RECORD = (
    "INSERT INTO deliveries (message_id, contact, position, addresses, status, updated_at, goal,"
    " ack_code) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (message_id, contact)"
    " DO NOTHING"
)
_COLUMNS = ("message_id", "contact", "position", "addresses", "status", "updated_at", "goal",
            "ack_code")  # fmt: skip


def delivery_row(row: Row) -> StoredDelivery:
    values = list(row)
    values[6] = bool(values[6])
    return StoredDelivery(*values)


class AudienceOperations:
    """Mixed into the store; every method is one transaction."""

    run: Callable[[Callable[[Tx], Awaitable[Any]]], Awaitable[Any]]
    engine: Engine

    async def begin_message(
        self, record: MessageRecord, *, owner: str, owner_is_alive: OwnerCheck,
    ) -> Claim:
        """Record a new message, not yet with its audience (``new``: this process records
        it), or find the earlier run of its idempotency key: ``done``, ``attach`` (a live
        process runs or records it), ``resume`` (its process died after sealing it) or
        ``record`` (its process died while recording it: nothing was sent; go on).

        Raises :class:`KeyConflict` when the key was used for a different request.
        """
        claim: Claim = await self.run(
            lambda tx: _begin(tx, record, owner, owner_is_alive, "recording")
        )
        return claim

    async def claim_message(
        self,
        record: MessageRecord,
        contacts: Sequence[DeliverySeed],
        *,
        owner: str | None,
        owner_is_alive: OwnerCheck,
        state: str = "pending",
    ) -> Claim:
        """A message and its whole (small) audience in one transaction, already ``pending``
        or ``queued``: for callers that hold the audience anyway."""
        async def claim(tx: Tx) -> Claim:
            found = await _begin(tx, record, owner, owner_is_alive, state)
            if found.action == "new":
                await tx.executemany(_RECORD, [
                    (record.message_id, seed.contact, position, seed.addresses_json, "pending",
                     record.created_at, record.goal, seed.ack_code)
                    for position, seed in enumerate(contacts)
                ])
            return found

        claimed: Claim = await self.run(claim)
        return claimed

    async def record_deliveries(
        self, message_id: str, seeds: Sequence[DeliverySeed], *, first_position: int,
        at: float, goal: str, fence: Fence, fresh: bool,
    ) -> bool:
        """Add a batch of the audience, if the recorder still owns the recording (False
        otherwise: nothing written). ``fresh``: nobody recorded any of it before, so the
        engine's bulk path applies (COPY on PostgreSQL); else rows already there stay."""
        rows = [(message_id, seed.contact, first_position + index, seed.addresses_json,
                 "pending", at, goal, seed.ack_code)
                for index, seed in enumerate(seeds)]

        async def record(tx: Tx) -> bool:
            owned = await tx.fetchone(
                "SELECT 1 FROM messages WHERE id = ? AND state = 'recording' AND owner = ?"
                " AND epoch = ?", message_id, fence.owner, fence.epoch,
            )
            if owned is None:
                return False
            if fresh:
                await tx.copy("deliveries", _COLUMNS, rows)
            else:
                await tx.executemany(_RECORD, rows)
            return True

        recorded: bool = await self.run(record)
        return recorded

    async def seal_message(self, message_id: str, *, fence: Fence, queued: bool) -> bool:
        """The whole audience is recorded: the message is ``pending`` (its recorder sends
        it) or ``queued`` (workers do, and it has no owner)."""
        changed = await self.run(lambda tx: tx.execute(
            "UPDATE messages SET state = ?, owner = CASE WHEN ? THEN NULL ELSE owner END"
            " WHERE id = ? AND state = 'recording' AND owner = ? AND epoch = ?",
            "queued" if queued else "pending", queued, message_id, fence.owner, fence.epoch,
        ))
        return bool(changed)

    async def pending_page(
        self, message_id: str, *, after: int, limit: int
    ) -> list[StoredDelivery]:
        """Deliveries still to work on, in audience order, after position ``after``."""
        rows = await self.run(lambda tx: tx.fetchall(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = ?"  # noqa: S608
            " AND position > ? AND status = 'pending' AND done = 0 ORDER BY position LIMIT ?",
            message_id, after, limit,
        ))
        return [delivery_row(row) for row in rows]

    async def attempts_of(
        self, message_id: str, contacts: Sequence[str]
    ) -> dict[str, list[StoredAttempt]]:
        """Every attempt so far for these contacts of a message, oldest first."""
        if not contacts:
            return {}
        marks = ", ".join("?" for _ in contacts)
        rows = await self.run(lambda tx: tx.fetchall(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE message_id = ?"  # noqa: S608
            f" AND contact IN ({marks}) ORDER BY started_at, id", message_id, *contacts,
        ))
        found: dict[str, list[StoredAttempt]] = {}
        for row in rows:
            found.setdefault(str(row[2]), []).append(StoredAttempt(*row))
        return found

    async def in_doubt(self, message_id: str) -> list[StoredAttempt]:
        """Attempts of a message left ``sending`` (by a process that died or stalled)."""
        rows = await self.run(lambda tx: tx.fetchall(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE state = 'sending'"  # noqa: S608
            " AND message_id = ? ORDER BY started_at, id", message_id,
        ))
        return [StoredAttempt(*row) for row in rows]

    async def delivery_counts(self, message_id: str) -> dict[str, int]:
        """How many of a message's deliveries are in each status (progress, from counts)."""
        rows = await self.run(lambda tx: tx.fetchall(
            "SELECT status, COUNT(*) FROM deliveries WHERE message_id = ? GROUP BY status",
            message_id,
        ))
        return {str(status): int(count) for status, count in rows}

    async def record_notes(self, message_id: str, contact: str, notes: str) -> None:
        """What a result said beyond its attempts (skipped channels, notes)."""
        await self.run(lambda tx: tx.execute(
            "UPDATE deliveries SET notes = ? WHERE message_id = ? AND contact = ?",
            notes, message_id, contact,
        ))

    async def load_message_record(self, message_id: str) -> tuple[MessageRecord, str] | None:
        """The message as recorded, and its state: without its deliveries."""
        row = await self.run(lambda tx: tx.fetchone(
            "SELECT id, body, audience, fingerprint, created_at, idempotency_key, expires_at,"
            " goal, state FROM messages WHERE id = ?", message_id,
        ))
        return None if row is None else (MessageRecord(*row[:8]), str(row[8]))

    async def message_owner(self, message_id: str) -> tuple[str, str | None, float | None] | None:
        """(state, owner, heartbeat) of a message: whether its run is alive."""
        row = await self.run(lambda tx: tx.fetchone(
            "SELECT state, owner, heartbeat_at FROM messages WHERE id = ?", message_id,
        ))
        return None if row is None else (str(row[0]), row[1], row[2])

    async def count_deliveries(self, message_id: str) -> int:
        row = await self.run(lambda tx: tx.fetchone(
            "SELECT COUNT(*) FROM deliveries WHERE message_id = ?", message_id,
        ))
        return int(row[0]) if row else 0

    def results_of(self, message_id: str) -> StoredResults:
        """A message's per-contact results, read from the store each time they are iterated."""
        return StoredResults(self.engine, message_id)


async def _begin(
    tx: Tx, record: MessageRecord, owner: str | None, owner_is_alive: OwnerCheck, state: str,
) -> Claim:
    """Insert the message in ``state``, or find the earlier run of its idempotency key."""
    if record.idempotency_key is not None:
        row = await tx.fetchone(
            "SELECT id, fingerprint, state, owner, heartbeat_at FROM messages"
            " WHERE idempotency_key = ?", record.idempotency_key,
        )
        if row is not None:
            message_id, fingerprint, current_state, current, heartbeat_at = row
            if fingerprint != record.fingerprint:
                raise KeyConflict(
                    "idempotency key already used for a different message or audience"
                )
            if current_state in ("done", "waiting", "queued"):
                return Claim(message_id, "done")
            if owner_is_alive(current, heartbeat_at):
                return Claim(message_id, "attach")
            epoch = await take_ownership(tx, message_id, owner, record.created_at)
            return Claim(message_id, "record" if current_state == "recording" else "resume",
                         epoch)
    await tx.execute(
        "INSERT INTO messages (id, idempotency_key, fingerprint, body, audience,"
        " created_at, expires_at, goal, state, owner, heartbeat_at, epoch, incident_id,"
        " incident_entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
        record.message_id, record.idempotency_key, record.fingerprint, record.body_json,
        record.audience_json, record.created_at, record.expires_at, record.goal, state,
        owner, record.created_at, record.incident_id, record.incident_entry,
    )
    return Claim(record.message_id, "new", 1)


async def take_ownership(tx: Tx, message_id: str, owner: str | None, at: float) -> int:
    """Make ``owner`` the message's owner at the next epoch; returns that epoch."""
    await tx.execute(
        "UPDATE messages SET owner = ?, heartbeat_at = ?, epoch = epoch + 1 WHERE id = ?",
        owner, at, message_id,
    )
    row = await tx.fetchone("SELECT epoch FROM messages WHERE id = ?", message_id)
    return int(row[0]) if row else 0
