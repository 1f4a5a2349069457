"""SQLite store: WAL, ``synchronous=FULL``, group commits, one file shared by every process."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router.health import Breaker, State
from router.outcome import Outcome
from router.store._writer import GroupCommitWriter
from router.store.base import (
    AttemptStart,
    Claim,
    DeliverySeed,
    KeyConflict,
    MessageRecord,
    OwnerCheck,
    StoredAttempt,
    StoredDelivery,
    StoredMessage,
)
from router.store.schema import MIGRATIONS
from router.store.sqlite_twoway import TwoWayOperations

_ATTEMPT_COLUMNS = (
    "id, message_id, contact, channel, address, kind, state, verdict, scope, detail, provider_id,"
    " retry_after, started_at, finished_at, round, receipt"
)
DELIVERY_COLUMNS = (
    "contact, position, addresses, status, channel, goal, done, round, ack_code, waiting_for,"
    " waiting_attempt, next_action_at"
)
_HEALTH_COLUMNS = (
    "name", "state", "since", "consecutive_failures", "cooldown", "next_trial_at",
    "trial_started_at", "closed_at", "last_error", "last_probe_at", "last_probe_ok",
    "last_probe_latency", "updated_at",
)


class SqliteStore(TwoWayOperations):
    """The embedded default store, one file shared by the CLI, cron and a server."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self.path = str(path)
        self._busy_timeout = busy_timeout
        self._writer = GroupCommitWriter(self._connect)

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        await self._writer.start()

    async def close(self) -> None:
        await self._writer.stop()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
        _migrate(connection)
        return connection

    # -- messages and deliveries --------------------------------------------------------

    async def claim_message(
        self,
        record: MessageRecord,
        contacts: Sequence[DeliverySeed],
        *,
        owner: str,
        owner_is_alive: OwnerCheck,
    ) -> Claim:
        def claim(db: sqlite3.Connection) -> Claim:
            if record.idempotency_key is not None:
                row = db.execute(
                    "SELECT id, fingerprint, state, owner, heartbeat_at FROM messages"
                    " WHERE idempotency_key = ?", (record.idempotency_key,),
                ).fetchone()
                if row is not None:
                    message_id, fingerprint, state, current, heartbeat_at = row
                    if fingerprint != record.fingerprint:
                        raise KeyConflict(
                            "idempotency key already used for a different message or audience"
                        )
                    if state in ("done", "waiting"):
                        return Claim(message_id, "done")
                    if owner_is_alive(current, heartbeat_at):
                        return Claim(message_id, "attach")
                    _own(db, message_id, owner, record.created_at)
                    return Claim(message_id, "resume")
            db.execute(
                "INSERT INTO messages (id, idempotency_key, fingerprint, body, audience,"
                " created_at, expires_at, goal, state, owner, heartbeat_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (record.message_id, record.idempotency_key, record.fingerprint, record.body_json,
                 record.audience_json, record.created_at, record.expires_at, record.goal, owner,
                 record.created_at),
            )
            db.executemany(
                "INSERT INTO deliveries (message_id, contact, position, addresses, status,"
                " updated_at, goal, ack_code) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)",
                [(record.message_id, seed.contact, position, seed.addresses_json,
                  record.created_at, record.goal, seed.ack_code)
                 for position, seed in enumerate(contacts)],
            )
            return Claim(record.message_id, "new")

        return await self._writer.run(claim)

    async def take_over(self, message_id: str, *, owner: str, owner_is_alive: OwnerCheck) -> bool:
        def take(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT state, owner, heartbeat_at, created_at FROM messages WHERE id = ?",
                (message_id,),
            ).fetchone()
            if row is None or row[0] != "pending" or owner_is_alive(row[1], row[2]):
                return False
            _own(db, message_id, owner, row[3])
            return True

        return await self._writer.run(take)

    async def heartbeat(self, message_ids: Sequence[str], *, owner: str, at: float) -> None:
        await self._writer.run(lambda db: db.executemany(
            "UPDATE messages SET heartbeat_at = ? WHERE id = ? AND owner = ?",
            [(at, message_id, owner) for message_id in message_ids],
        ))

    async def finish_message(self, message_id: str, *, owner: str, at: float) -> None:
        # Deliveries still waiting for a receipt or a person leave it 'waiting': the
        # escalation loop of a server (or of the CLI that waits) carries on from there.
        await self._writer.run(lambda db: db.execute(
            "UPDATE messages SET finished_at = ?, owner = NULL, state = CASE WHEN EXISTS"
            " (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id AND d.done = 0)"
            " THEN 'waiting' ELSE 'done' END WHERE id = ? AND (owner = ? OR owner IS NULL)",
            (at, message_id, owner),
        ))

    async def load_message(self, message_id: str) -> StoredMessage | None:
        def load(db: sqlite3.Connection) -> StoredMessage | None:
            row = db.execute(
                "SELECT id, body, audience, fingerprint, created_at, idempotency_key, expires_at,"
                " goal, state, owner, heartbeat_at FROM messages WHERE id = ?", (message_id,),
            ).fetchone()
            if row is None:
                return None
            deliveries = db.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = ?"  # noqa: S608
                " ORDER BY position", (message_id,),
            ).fetchall()
            attempts = db.execute(
                f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE message_id = ?"  # noqa: S608
                " ORDER BY started_at, rowid", (message_id,),
            ).fetchall()
            return StoredMessage(
                record=MessageRecord(*row[:8]), state=row[8], owner=row[9], heartbeat_at=row[10],
                deliveries=tuple(delivery_row(d) for d in deliveries),
                attempts=tuple(StoredAttempt(*a) for a in attempts),
            )

        return await self._writer.run(load)

    async def orphaned_messages(self, *, owner_is_alive: OwnerCheck) -> list[str]:
        rows = await self._writer.run(lambda db: db.execute(
            "SELECT id, owner, heartbeat_at FROM messages WHERE state = 'pending'"
            " ORDER BY created_at"
        ).fetchall())
        return [row[0] for row in rows if not owner_is_alive(row[1], row[2])]

    async def history(
        self, *, message_id: str | None = None, contact: str | None = None, limit: int = 200
    ) -> list[StoredAttempt]:
        where, params = ["1 = 1"], list[str]()
        if message_id is not None:
            where.append("message_id = ?")
            params.append(message_id)
        if contact is not None:
            where.append("contact = ?")
            params.append(contact)
        query = (
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts"  # noqa: S608
            f" WHERE {' AND '.join(where)} ORDER BY started_at DESC, rowid DESC LIMIT ?"
        )
        rows = await self._writer.run(lambda db: db.execute(query, (*params, limit)).fetchall())
        return [StoredAttempt(*row) for row in rows]

    # -- attempts ------------------------------------------------------------------------

    async def begin_attempt(self, attempt: AttemptStart) -> None:
        await self._writer.run(lambda db: db.execute(
            "INSERT INTO attempts (id, message_id, contact, channel, address, kind, state,"
            " started_at, round) VALUES (?, ?, ?, ?, ?, ?, 'sending', ?, ?)",
            (attempt.attempt_id, attempt.message_id, attempt.contact, attempt.channel,
             attempt.address, attempt.kind, attempt.started_at, attempt.round),
        ))

    async def finish_attempt(
        self,
        attempt_id: str,
        outcome: Outcome,
        finished_at: float,
        *,
        delivery_status: str | None = None,
        delivery_channel: str | None = None,
    ) -> None:
        def update(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE attempts SET state = 'done', verdict = ?, scope = ?, detail = ?,"
                " provider_id = ?, retry_after = ?, finished_at = ? WHERE id = ?",
                (outcome.verdict.value, outcome.scope.value, outcome.detail, outcome.provider_id,
                 outcome.retry_after, finished_at, attempt_id),
            )
            if delivery_status is not None:
                # Accepted is the end only when that was the goal; otherwise the
                # delivery now waits for a receipt or a person.
                db.execute(
                    "UPDATE deliveries SET channel = ?, updated_at = ?,"
                    " status = CASE WHEN status IN ('delivered', 'acknowledged') THEN status"
                    " ELSE ? END, done = CASE WHEN goal = 'accepted' THEN 1 ELSE done END"
                    " WHERE (message_id, contact) ="
                    " (SELECT message_id, contact FROM attempts WHERE id = ?)",
                    (delivery_channel, finished_at, delivery_status, attempt_id),
                )

        await self._writer.run(update)

    async def finish_delivery(
        self, message_id: str, contact: str, status: str, channel: str | None, at: float
    ) -> None:
        await self._writer.run(lambda db: db.execute(
            "UPDATE deliveries SET status = ?, channel = ?, updated_at = ?, done = 1,"
            " next_action_at = NULL, waiting_for = NULL WHERE message_id = ? AND contact = ?",
            (status, channel, at, message_id, contact),
        ))

    # -- channel health ------------------------------------------------------------------

    async def load_health(self) -> list[Breaker]:
        columns = ", ".join(_HEALTH_COLUMNS)
        rows = await self._writer.run(
            lambda db: db.execute(f"SELECT {columns} FROM channel_health").fetchall()  # noqa: S608
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
        await self._writer.run(lambda db: db.executemany(statement, rows))


def delivery_row(row: tuple[Any, ...]) -> StoredDelivery:
    values = list(row)
    values[6] = bool(values[6])
    return StoredDelivery(*values)


def _own(db: sqlite3.Connection, message_id: str, owner: str, at: float) -> None:
    db.execute(
        "UPDATE messages SET owner = ?, heartbeat_at = ? WHERE id = ?", (owner, at, message_id)
    )


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


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for version, statements in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            for statement in statements:
                db.execute(statement)
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
