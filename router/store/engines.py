"""The two engines: SQLite (embedded default) and PostgreSQL (several instances)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from router.store._writer import GroupCommitWriter
from router.store.base import StoreFailure, StoreTooNew
from router.store.schema import MIGRATIONS, Only
from router.store.sql import Dialect, Op, Row, SqliteTx, Tx, affected, drive, numbered

if TYPE_CHECKING:
    import asyncpg

T = TypeVar("T")
log = logging.getLogger("backchannel.store")
SCHEMA_LOCK = 0x6263_6B63  # "bckc": serialises schema changes between instances
WORK_CHANNEL = "backchannel_work"
_RETRYABLE = ("40001", "40P01")  # serialization failure, deadlock: retry the transaction
IDLE_IN_TRANSACTION = 10_000
"""Milliseconds a session may sit in an open transaction without a word: ours last a few."""
def _disk_full(path: str) -> bool:
    # SQLite reports a full disk as an I/O error when it cannot even create its WAL.
    try:
        return shutil.disk_usage(Path(path).parent).free < 64 * 1024
    except OSError:
        return False


_INFRASTRUCTURE = ("08", "53", "57", "58", "XX")
"""SQLSTATE classes of the server's trouble, not of a statement: connection, resources
(disk full), operator intervention (shutdown), system and internal errors."""


def sqlite_trouble(exc: sqlite3.Error | OSError, path: str) -> str:
    """One line for a person: what is wrong with the store file, and what to do."""
    text = str(exc)
    if "full" in text or _disk_full(path):
        return f"the disk holding {path} is full ({text}): free some space, then resume"
    if "malformed" in text or "not a database" in text:
        return (f"{path} is damaged ({text}): restore it from a backup or move it aside"
                " (a new store starts empty)")
    if "locked" in text:
        return (f"{path} is locked by another process (a backchannel paused or stuck in the"
                " middle of a write holds its write lock): resume or stop it, then try again")
    if "I/O" in text or "readonly" in text:
        return f"cannot write {path} ({text})"
    return f"{path}: {text}"


async def migrate(tx: Tx) -> int:
    """Apply the migrations this database has not seen; returns the schema version."""
    await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = await tx.fetchone("SELECT MAX(version) FROM schema_version")
    current = int(row[0] or 0) if row else 0
    if current > len(MIGRATIONS):
        raise StoreTooNew(
            f"the store's schema (version {current}) is newer than this backchannel's"
            f" ({len(MIGRATIONS)}): upgrade backchannel, or point [store] at another store"
        )
    for version, statements in enumerate(MIGRATIONS, start=1):
        if version <= current:
            continue
        for statement in statements:
            if isinstance(statement, Only):
                if statement.dialect == tx.dialect:
                    await tx.execute(statement.sql)
                continue
            await tx.execute(statement)
        await tx.execute("INSERT INTO schema_version (version) VALUES (?)", version)
        current = version
    return current


class SqliteEngine:
    """WAL, ``synchronous=FULL``, every operation through the group-commit writer."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self.path = str(path)
        self._busy_timeout = busy_timeout
        self._writer = GroupCommitWriter(self._connect)

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        await self._writer.start()

    def read_sync(self, sql: str, *params: object) -> list[Row]:
        try:
            if self._writer.running:
                return self._writer.run_blocking(lambda db: db.execute(sql, params).fetchall())
            return self._read_closed(sql, params)
        except sqlite3.DatabaseError as exc:
            raise StoreFailure(sqlite_trouble(exc, self.path)) from None

    def _read_closed(self, sql: str, params: tuple[object, ...]) -> list[Row]:
        """A read after the router closed: a large broadcast's results are read from the
        store when iterated, and ``async with Router(...)`` has usually ended by then. The
        file is still there; a read-only connection of its own reads it."""
        if self.path == ":memory:":
            raise StoreFailure("the results were kept in an in-memory store, which closed"
                               " with the router: read them before it closes")  # fmt: skip
        uri = Path(self.path).resolve().as_uri() + "?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=self._busy_timeout)) as db:
            return db.execute(sql, params).fetchall()

    async def notify(self) -> None:
        """SQLite has no NOTIFY: workers on one file poll."""

    async def listen(self, callback: Callable[[], None]) -> None:
        """SQLite has no LISTEN: workers on one file poll."""

    async def close(self) -> None:
        await self._writer.stop()

    async def run(self, op: Op[T]) -> T:
        try:
            return await self._writer.run(lambda db: drive(op(SqliteTx(db))))  # type: ignore[arg-type]
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as exc:
            raise StoreFailure(sqlite_trouble(exc, self.path)) from None

    def _connect(self) -> sqlite3.Connection:
        path = Path(self.path)
        if self.path != ":memory:" and path.exists() and not path.is_file():
            # SQLite would open /dev/null or a directory and fail later, obscurely.
            kind = "a directory" if path.is_dir() else "a device or a pipe"
            raise OSError(f"{kind}, not a regular file")
        connection = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout
        )
        self._enter_wal(connection)
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
        # BEGIN IMMEDIATE takes the write lock: two processes never migrate at once.
        connection.execute("BEGIN IMMEDIATE")
        try:
            drive(migrate(SqliteTx(connection)))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:  # else ROLLBACK's own error would hide the cause
                connection.execute("ROLLBACK")
            connection.close()
            raise
        return connection

    def _enter_wal(self, connection: sqlite3.Connection) -> None:
        # Two processes opening a new store at once (the cron probe and a broadcast) both
        # ask for WAL mode, which needs the file to themselves: SQLite answers "database
        # is locked" at once, without waiting on the busy timeout, to break the deadlock.
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.005, 0.05))


class PostgresTx:
    dialect: Dialect = "postgres"

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._db = connection

    async def execute(self, sql: str, *params: object) -> int:
        return affected(await self._db.execute(numbered(sql), *params))

    async def executemany(self, sql: str, rows: Any) -> None:
        await self._db.executemany(numbered(sql), rows)

    async def fetchall(self, sql: str, *params: object) -> list[Row]:
        return [tuple(record) for record in await self._db.fetch(numbered(sql), *params)]

    async def fetchone(self, sql: str, *params: object) -> Row | None:
        record = await self._db.fetchrow(numbered(sql), *params)
        return None if record is None else tuple(record)

    async def copy(self, table: str, columns: Any, rows: Any) -> None:
        await self._db.copy_records_to_table(table, records=rows, columns=list(columns))


class PostgresEngine:
    """An asyncpg pool; each operation one transaction, retried on serialization failure."""

    dialect: Dialect = "postgres"

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None

    async def open(self) -> None:
        import asyncpg

        if self._pool is not None:
            return
        self._pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=self._pool_size, command_timeout=60,
            # A process paused (SIGSTOP, a VM pause) in the middle of a transaction would
            # hold its row locks for as long as it sleeps; the server ends such a session
            # instead, so that the others (and whoever takes the work over) carry on.
            server_settings={"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION)},
        )
        await self.run(self._migrate_locked)

    @staticmethod
    async def _migrate_locked(tx: Tx) -> int:
        await tx.fetchone("SELECT pg_advisory_xact_lock(?)", SCHEMA_LOCK)
        return await migrate(tx)

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def run(self, op: Op[T]) -> T:
        import asyncpg

        if self._pool is None:
            raise RuntimeError("store is not open")
        for attempt in range(5):
            try:
                async with self._pool.acquire() as connection, connection.transaction():
                    return await op(PostgresTx(connection))
            except asyncpg.PostgresError as exc:
                sqlstate = getattr(exc, "sqlstate", None) or ""
                if sqlstate in _RETRYABLE and attempt < 4:
                    await asyncio.sleep(0.01 * (attempt + 1))
                    continue
                if sqlstate[:2] in _INFRASTRUCTURE:
                    raise StoreFailure(f"the database failed ({type(exc).__name__})") from None
                raise
            except (OSError, asyncpg.InterfaceError) as exc:
                # Never the URL: it may carry a password.
                raise StoreFailure(f"lost the database ({type(exc).__name__})") from None
        raise AssertionError("unreachable")

    def read_sync(self, sql: str, *params: object) -> list[Row]:
        """A connection of its own, in a thread of its own: the caller may be blocking the
        event loop the pool lives on."""
        import asyncpg

        async def read() -> list[Row]:
            connection = await asyncpg.connect(self.url)
            try:
                return [tuple(r) for r in await connection.fetch(numbered(sql), *params)]
            finally:
                await connection.close()

        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            return thread.submit(asyncio.run, read()).result()

    async def notify(self, channel: str = WORK_CHANNEL) -> None:
        await self.run(lambda tx: tx.execute(f"NOTIFY {channel}"))

    async def listen(self, callback: Callable[[], None], channel: str = WORK_CHANNEL) -> None:
        """Call ``callback`` on every NOTIFY on ``channel`` (one dedicated connection)."""
        import asyncpg

        if self._listener is None:
            self._listener = await asyncpg.connect(self.url)
        await self._listener.add_listener(channel, lambda *_: callback())
