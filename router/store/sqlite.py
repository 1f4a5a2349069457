"""SQLite store: WAL, ``synchronous=FULL``, and group commits from one writer thread.

An fsync'd commit per attempt caps a durable router near a thousand attempts a
second, whatever the providers could take. Every write is queued to one
thread that runs whatever has accumulated in a single ``BEGIN IMMEDIATE``
transaction (one savepoint per operation, so one failure spoils nothing else)
and commits once: each caller still waits for its own durable commit, and no
transaction is ever held across an ``await``.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from router.health import Breaker, State
from router.outcome import Outcome
from router.store.base import AttemptStart, MessageRecord
from router.store.schema import MIGRATIONS

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]
Job = tuple[Operation, "asyncio.Future[Any]"]
_MAX_BATCH = 512


class SqliteStore:
    """The embedded default store, one file shared by the CLI, cron and a server."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self.path = str(path)
        self._busy_timeout = busy_timeout
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()  # None: stop
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        if self._thread is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="backchannel-store", daemon=True
        )
        self._thread.start()
        await ready

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(thread.join)

    async def run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` in the next group commit and wait until it is durable."""
        if self._thread is None or self._loop is None:
            raise RuntimeError("store is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((operation, future))
        return await future

    # -- the writer thread -------------------------------------------------------------

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

    def _run(self, ready: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            connection = self._connect()
        except Exception as exc:  # reported to open(), which re-raises in the caller
            failed: list[Settled] = [(ready, None, exc)]
            loop.call_soon_threadsafe(_settle, failed)
            return
        opened: list[Settled] = [(ready, None, None)]
        loop.call_soon_threadsafe(_settle, opened)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < _MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self._queue.put(None)
                        break
                    batch.append(item)
                loop.call_soon_threadsafe(_settle, _commit(connection, batch))
        finally:
            connection.close()

    # -- operations --------------------------------------------------------------------

    async def create_message(self, record: MessageRecord, contacts: Sequence[str]) -> None:
        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO messages (id, idempotency_key, fingerprint, body, audience,"
                " created_at, expires_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
                (record.message_id, record.idempotency_key, record.fingerprint, record.body_json,
                 record.audience_json, record.created_at, record.expires_at),
            )
            db.executemany(
                "INSERT INTO deliveries (message_id, contact, position, status, updated_at)"
                " VALUES (?, ?, ?, 'pending', ?)",
                [(record.message_id, name, position, record.created_at)
                 for position, name in enumerate(contacts)],
            )

        await self.run(insert)

    async def begin_attempt(self, attempt: AttemptStart) -> None:
        await self.run(lambda db: db.execute(
            "INSERT INTO attempts (id, message_id, contact, channel, address, kind, state,"
            " started_at) VALUES (?, ?, ?, ?, ?, ?, 'sending', ?)",
            (attempt.attempt_id, attempt.message_id, attempt.contact, attempt.channel,
             attempt.address, attempt.kind, attempt.started_at),
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
                db.execute(
                    "UPDATE deliveries SET status = ?, channel = ?, updated_at = ?"
                    " WHERE (message_id, contact) ="
                    " (SELECT message_id, contact FROM attempts WHERE id = ?)",
                    (delivery_status, delivery_channel, finished_at, attempt_id),
                )

        await self.run(update)

    async def finish_delivery(
        self, message_id: str, contact: str, status: str, channel: str | None, at: float
    ) -> None:
        await self.run(lambda db: db.execute(
            "UPDATE deliveries SET status = ?, channel = ?, updated_at = ?"
            " WHERE message_id = ? AND contact = ?",
            (status, channel, at, message_id, contact),
        ))

    async def load_health(self) -> list[Breaker]:
        columns = ", ".join(_HEALTH_COLUMNS)
        rows = await self.run(
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
        await self.run(lambda db: db.executemany(statement, rows))


Settled = tuple["asyncio.Future[Any]", Any, BaseException | None]


_HEALTH_COLUMNS = (
    "name", "state", "since", "consecutive_failures", "cooldown", "next_trial_at",
    "trial_started_at", "closed_at", "last_error", "last_probe_at", "last_probe_ok",
    "last_probe_latency", "updated_at",
)


def _health_row(breaker: Breaker) -> tuple[object, ...]:
    return tuple(
        breaker.state.value if column == "state" else getattr(breaker, column)
        for column in _HEALTH_COLUMNS
    )


def _breaker(row: sqlite3.Row | tuple[Any, ...]) -> Breaker:
    values = dict(zip(_HEALTH_COLUMNS, row, strict=True))
    values["state"] = State(values["state"])
    if values["last_probe_ok"] is not None:
        values["last_probe_ok"] = bool(values["last_probe_ok"])
    return Breaker(**values)


def _commit(db: sqlite3.Connection, batch: list[Job]) -> list[Settled]:
    """Run a batch in one transaction; return (future, result, error) for each operation."""
    settled: list[Settled] = []
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        return [(future, None, exc) for _, future in batch]
    for operation, future in batch:
        db.execute("SAVEPOINT op")
        try:
            result = operation(db)
        except Exception as exc:
            db.execute("ROLLBACK TO op")
            settled.append((future, None, exc))
        else:
            settled.append((future, result, None))
        db.execute("RELEASE op")
    try:
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        db.execute("ROLLBACK")
        return [(future, None, exc) for future, _, _ in settled]
    return settled


def _settle(settled: list[Settled]) -> None:
    for future, result, error in settled:
        if future.done():  # the caller was cancelled; the write stands regardless
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


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
