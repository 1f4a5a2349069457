"""What the crisis board reads: read-only queries, off the writers' path, and a change cursor.

On SQLite the board reads on a connection of its own, in a thread of its own, so that it
never takes the write lock the group-commit writer needs; on PostgreSQL it borrows the
pool. Lists are paginated and filtered in SQL, and counts by status come from an index
(``deliveries_by_status``): a message to 10,000 people costs one index scan, not 10,000
rows. :class:`ChangeCursor` says when any process committed something (SQLite's
``data_version``, PostgreSQL's NOTIFY), so that the board asks again only then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from router.model.health import Breaker, State
from router.store.base import InboundEvent
from router.store.changes import ChangeCursor, DataVersionCursor, NotifyCursor
from router.store.engines import PostgresEngine, SqliteEngine
from router.store.incidents import IncidentRecord, read_incidents
from router.store.reachability_log import RunRecord
from router.store.sql import Op, SqliteTx, Tx, drive
from router.store.sqlstore import SqlStore

T = TypeVar("T")
Item = TypeVar("Item")
log = logging.getLogger("backchannel.board")
STATUSES = ("pending", "accepted", "delivered", "acknowledged", "failed", "expired", "unknown")
_HEALTH = ("name, state, since, consecutive_failures, cooldown, next_trial_at, trial_started_at,"
           " closed_at, last_error, last_probe_at, last_probe_ok, last_probe_latency, updated_at,"
           " warning")


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """One message, with how many of its deliveries are in each status."""

    message_id: str
    body_json: str
    audience_json: str
    created_at: float
    state: str
    goal: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class AttemptView:
    channel: str
    kind: str
    state: str
    verdict: str | None
    detail: str | None
    address: str
    started_at: float
    finished_at: float | None
    round: int
    receipt: str | None
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """One contact of one message, with its attempts and acknowledgement."""

    contact: str
    position: int
    addresses_json: str
    status: str
    channel: str | None
    goal: str
    done: bool
    round: int
    waiting_for: str | None
    next_action_at: float | None
    updated_at: float
    attempts: tuple[AttemptView, ...]
    acknowledged_at: float | None = None
    acknowledged_on: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """The per-contact table's filter box: any part may be empty."""

    name: str = ""
    status: str = ""
    channel: str = ""


@dataclass(frozen=True, slots=True)
class Page(Generic[Item]):
    items: tuple[Item, ...]
    total: int
    """Matching rows in all pages."""
    offset: int
    limit: int


@dataclass(frozen=True, slots=True)
class LastRun:
    """The newest reachability run with each contact's checks (contact -> channel -> ok)."""

    run: RunRecord
    reachable: dict[str, tuple[str, ...]]


class BoardReader:
    """Read-only queries over one open store."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        engine = store.engine
        self._sqlite_path = engine.path if isinstance(engine, SqliteEngine) else None
        self._postgres_url = engine.url if isinstance(engine, PostgresEngine) else None
        self._thread: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._runs: tuple[str, LastRun] | None = None

    async def open(self) -> None:
        if self._sqlite_path is not None and self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="backchannel-board")
            await self._in_thread(self._connect)

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(thread, self._disconnect)
            thread.shutdown(wait=False)

    def _connect(self) -> None:
        assert self._sqlite_path is not None
        db = sqlite3.connect(self._sqlite_path, isolation_level=None, timeout=5.0)
        db.execute("PRAGMA query_only = ON")
        self._db = db

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _in_thread(self, call: Callable[[], T]) -> T:
        if self._thread is None:
            raise RuntimeError("the board's reader is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def read(self, op: Op[T]) -> T:
        """Run ``op`` on one consistent snapshot."""
        if self._sqlite_path is None:
            return await self._store.run(op)

        def snapshot() -> T:
            db = self._db
            assert db is not None
            db.execute("BEGIN")
            try:
                return drive(op(SqliteTx(db)))  # type: ignore[arg-type]
            finally:
                db.execute("COMMIT")

        return await self._in_thread(snapshot)

    def cursor(self) -> ChangeCursor:
        """Says when any process committed something to this store."""
        if self._sqlite_path is not None:
            return DataVersionCursor(self.data_version)
        assert self._postgres_url is not None
        return NotifyCursor(self._postgres_url)

    async def data_version(self) -> int:
        def version() -> int:
            assert self._db is not None
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

        return await self._in_thread(version)

    async def secret(self, name: str) -> bytes:
        """A random key kept in the store, made once: every server on it signs alike,
        and a restart logs nobody out."""
        fresh = secrets.token_hex(32)

        async def get_or_make(tx: Tx) -> str:
            await tx.execute("INSERT INTO settings_kv (key, value) VALUES (?, ?)"
                             " ON CONFLICT (key) DO NOTHING", name, fresh)
            row = await tx.fetchone("SELECT value FROM settings_kv WHERE key = ?", name)
            assert row is not None
            return str(row[0])

        return bytes.fromhex(await self._store.run(get_or_make))

    # -- the queries ----------------------------------------------------------------------

    async def health(self) -> list[Breaker]:
        rows = await self.read(lambda tx: tx.fetchall(
            f"SELECT {_HEALTH} FROM channel_health ORDER BY name"  # noqa: S608
        ))
        return [_breaker(row) for row in rows]

    async def messages(self, *, since: float, limit: int, offset: int) -> Page[MessageSummary]:
        async def query(tx: Tx) -> Page[MessageSummary]:
            total = await tx.fetchone("SELECT COUNT(*) FROM messages WHERE created_at >= ?",
                                      since)
            rows = await tx.fetchall(
                "SELECT id, body, audience, created_at, state, goal FROM messages"
                " WHERE created_at >= ? ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                since, limit, offset,
            )
            counts = await _counts(tx, [row[0] for row in rows])
            items = tuple(_summary(row, counts.get(row[0], {})) for row in rows)
            return Page(items, int(total[0]) if total else 0, offset, limit)

        return await self.read(query)

    async def incidents(self, *, resolved_since: float, limit: int) -> list[IncidentRecord]:
        """Open incidents, and those resolved since ``resolved_since``."""
        return await self.read(lambda tx: read_incidents(tx, limit=limit,
                                                         resolved_since=resolved_since))

    async def message(self, message_id: str) -> MessageSummary | None:
        async def query(tx: Tx) -> MessageSummary | None:
            row = await tx.fetchone(
                "SELECT id, body, audience, created_at, state, goal FROM messages WHERE id = ?",
                message_id,
            )
            if row is None:
                return None
            counts = await _counts(tx, [message_id])
            return _summary(row, counts.get(message_id, {}))

        return await self.read(query)

    async def deliveries(
        self, message_id: str, chosen: DeliveryFilter, *, limit: int, offset: int
    ) -> Page[DeliveryView]:
        where, params = _delivery_filter(message_id, chosen)

        async def query(tx: Tx) -> Page[DeliveryView]:
            total = await tx.fetchone(
                f"SELECT COUNT(*) FROM deliveries d WHERE {where}", *params  # noqa: S608
            )
            rows = await tx.fetchall(
                "SELECT contact, position, addresses, status, channel, goal, done, round,"  # noqa: S608
                " waiting_for, next_action_at, updated_at FROM deliveries d"
                f" WHERE {where} ORDER BY position LIMIT ? OFFSET ?",
                *params, limit, offset,
            )
            names = [row[0] for row in rows]
            attempts = await _attempts(tx, message_id, names)
            acks = await _acks(tx, message_id, names)
            items = []
            for row in rows:
                contact, updated_at = row[0], float(row[10])
                ack = _ack_for(acks.get(contact, []), updated_at) if row[3] == "acknowledged" \
                    else None
                items.append(DeliveryView(
                    contact=contact, position=int(row[1]), addresses_json=row[2],
                    status=row[3], channel=row[4], goal=row[5], done=bool(row[6]),
                    round=int(row[7]), waiting_for=row[8],
                    next_action_at=row[9], updated_at=updated_at,
                    attempts=tuple(attempts.get(contact, [])),
                    acknowledged_at=ack[1] if ack else None,
                    acknowledged_on=ack[0] if ack else None,
                ))
            return Page(tuple(items), int(total[0]) if total else 0, offset, limit)

        return await self.read(query)

    async def inbox(self, limit: int) -> list[InboundEvent]:
        rows = await self.read(lambda tx: tx.fetchall(
            "SELECT id, channel, external_id, address, contact, kind, text, message_id,"
            " received_at FROM inbound ORDER BY received_at DESC LIMIT ?", limit,
        ))
        return [InboundEvent(*row) for row in rows]

    async def opt_outs(self, limit: int) -> list[tuple[str, str, float]]:
        rows = await self.read(lambda tx: tx.fetchall(
            "SELECT contact, channel, at FROM opt_outs ORDER BY at DESC LIMIT ?", limit
        ))
        return [(str(c), str(ch), float(at)) for c, ch, at in rows]

    async def runs(self, limit: int) -> list[RunRecord]:
        rows = await self.read(lambda tx: tx.fetchall(
            "SELECT id, started_at, finished_at, audience, send_test, exit_status, contacts,"
            " redundant, single_domain, unreachable, channels_down FROM reachability_runs"
            " ORDER BY started_at DESC LIMIT ?", limit,
        ))
        return [_run(row) for row in rows]

    async def last_run(self) -> LastRun | None:
        """The newest run and what each contact could be reached on; cached by run."""
        runs = await self.runs(1)
        if not runs:
            return None
        run = runs[0]
        if self._runs is not None and self._runs[0] == run.run_id:
            return self._runs[1]
        rows = await self.read(lambda tx: tx.fetchall(
            "SELECT contact, channel, up, tested, outcome FROM reachability_checks"
            " WHERE run_id = ? ORDER BY contact, channel", run.run_id,
        ))
        reachable: dict[str, list[str]] = {}
        for contact, channel, up, tested, outcome in rows:
            channels = reachable.setdefault(str(contact), [])
            if (outcome == "accepted") if tested else bool(up):
                channels.append(str(channel))
        last = LastRun(run, {name: tuple(found) for name, found in reachable.items()})
        self._runs = (run.run_id, last)
        return last

    async def last_passed(self, channels: Sequence[str]) -> dict[str, float | None]:
        """When a test message on each channel was last accepted (one index probe each)."""
        async def query(tx: Tx) -> dict[str, float | None]:
            found: dict[str, float | None] = {}
            for channel in channels:
                row = await tx.fetchone(
                    "SELECT MAX(at) FROM reachability_checks"
                    " WHERE channel = ? AND outcome = 'accepted'", channel,
                )
                found[channel] = None if row is None or row[0] is None else float(row[0])
            return found

        return await self.read(query)


# -- helpers ------------------------------------------------------------------------------


async def _counts(tx: Tx, message_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    if not message_ids:
        return {}
    marks = ", ".join("?" for _ in message_ids)
    rows = await tx.fetchall(
        "SELECT message_id, status, COUNT(*) FROM deliveries"  # noqa: S608
        f" WHERE message_id IN ({marks}) GROUP BY message_id, status", *message_ids,
    )
    counts: dict[str, dict[str, int]] = {}
    for message_id, status, count in rows:
        counts.setdefault(str(message_id), {})[str(status)] = int(count)
    return counts


def _delivery_filter(message_id: str, chosen: DeliveryFilter) -> tuple[str, list[object]]:
    where, params = ["d.message_id = ?"], list[object]([message_id])
    if chosen.name:
        escaped = chosen.name.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
        where.append("LOWER(d.contact) LIKE ? ESCAPE '!'")
        params.append(f"%{escaped}%")
    if chosen.status:
        where.append("d.status = ?")
        params.append(chosen.status)
    if chosen.channel:
        # Carried by, or tried on, that channel.
        where.append("(d.channel = ? OR EXISTS (SELECT 1 FROM attempts a WHERE"
                     " a.message_id = d.message_id AND a.contact = d.contact AND a.channel = ?))")
        params += [chosen.channel, chosen.channel]
    return " AND ".join(where), params


async def _attempts(
    tx: Tx, message_id: str, contacts: Sequence[str]
) -> dict[str, list[AttemptView]]:
    if not contacts:
        return {}
    marks = ", ".join("?" for _ in contacts)
    rows = await tx.fetchall(
        "SELECT contact, channel, kind, state, verdict, detail, address, started_at,"  # noqa: S608
        " finished_at, round, receipt, provider FROM attempts"
        f" WHERE message_id = ? AND contact IN ({marks}) ORDER BY started_at, id",
        message_id, *contacts,
    )
    found: dict[str, list[AttemptView]] = {}
    for row in rows:
        found.setdefault(str(row[0]), []).append(AttemptView(*row[1:]))
    return found


async def _acks(
    tx: Tx, message_id: str, contacts: Sequence[str]
) -> dict[str, list[tuple[str, float]]]:
    if not contacts:
        return {}
    marks = ", ".join("?" for _ in contacts)
    rows = await tx.fetchall(
        "SELECT contact, channel, received_at FROM inbound WHERE kind = 'ack'"  # noqa: S608
        f" AND contact IN ({marks}) AND received_at >="
        " (SELECT created_at FROM messages WHERE id = ?) ORDER BY received_at",
        *contacts, message_id,
    )
    found: dict[str, list[tuple[str, float]]] = {}
    for contact, channel, at in rows:
        found.setdefault(str(contact), []).append((str(channel), float(at)))
    return found


def _ack_for(acks: list[tuple[str, float]], settled_at: float) -> tuple[str, float] | None:
    """The acknowledgement that ended a delivery: the last one up to when it was settled
    (an acknowledgement ends all of a person's waits at once, at its own time)."""
    before = [ack for ack in acks if ack[1] <= settled_at + 1e-6]
    if before:
        return before[-1]
    return acks[0] if acks else None


def _summary(row: Sequence[Any], counts: dict[str, int]) -> MessageSummary:
    return MessageSummary(
        message_id=row[0], body_json=row[1], audience_json=row[2], created_at=float(row[3]),
        state=row[4], goal=row[5], counts=counts,
    )


def _breaker(row: Sequence[Any]) -> Breaker:
    return Breaker(
        name=row[0], state=State(row[1]), since=row[2], consecutive_failures=row[3],
        cooldown=row[4], next_trial_at=row[5], trial_started_at=row[6], closed_at=row[7],
        last_error=row[8], last_probe_at=row[9],
        last_probe_ok=None if row[10] is None else bool(row[10]), last_probe_latency=row[11],
        updated_at=row[12], warning=row[13] or "",
    )


def _run(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        run_id=row[0], started_at=row[1], finished_at=row[2], audience=row[3],
        send_test=bool(row[4]), exit_status=row[5], contacts=row[6], redundant=row[7],
        single_domain=row[8], unreachable=row[9], channels_down=tuple(json.loads(row[10])),
    )
