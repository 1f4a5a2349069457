"""One set of SQL for two engines.

Every store operation is an ``async def op(tx)`` written once against :class:`Tx`,
with ``?`` placeholders. The SQLite engine drives it synchronously inside its
group-commit thread (a SQLite ``Tx`` never really suspends); the PostgreSQL
engine awaits it inside an asyncpg transaction, with placeholders rewritten to
``$1, $2...``. Where the dialects must differ (``FOR UPDATE SKIP LOCKED``),
an operation asks ``tx.dialect``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import lru_cache
from typing import Any, Literal, Protocol, TypeVar

T = TypeVar("T")
Dialect = Literal["sqlite", "postgres"]
Row = tuple[Any, ...]


class Tx(Protocol):
    """A transaction in progress."""

    dialect: Dialect

    async def execute(self, sql: str, *params: object) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...

    async def fetchall(self, sql: str, *params: object) -> list[Row]: ...

    async def fetchone(self, sql: str, *params: object) -> Row | None: ...

    async def copy(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]
    ) -> None:
        """Bulk-insert fresh rows (COPY on PostgreSQL)."""
        ...


Op = Callable[[Tx], Awaitable[T]]


class Engine(Protocol):
    dialect: Dialect

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def run(self, op: Op[T]) -> T:
        """Run ``op`` in one transaction, durable when this returns."""
        ...

    async def notify(self) -> None:
        """Wake listeners in other processes (no-op where the engine has no such thing)."""
        ...

    async def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on every notify from another process, where the engine can."""
        ...

    def read_sync(self, sql: str, *params: object) -> list[Row]:
        """One read, blocking the caller: for results iterated by synchronous code."""
        ...


class SqliteTx:
    dialect: Dialect = "sqlite"

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    async def execute(self, sql: str, *params: object) -> int:
        return self._db.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self._db.executemany(sql, rows)

    async def fetchall(self, sql: str, *params: object) -> list[Row]:
        return self._db.execute(sql, params).fetchall()

    async def fetchone(self, sql: str, *params: object) -> Row | None:
        row: Row | None = self._db.execute(sql, params).fetchone()
        return row

    async def copy(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]
    ) -> None:
        marks = ", ".join("?" for _ in columns)
        self._db.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows  # noqa: S608
        )


def drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (a SQLite operation) to completion, here."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a store operation awaited something other than its transaction")


_PLACEHOLDER = re.compile(r"\?")


@lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2...`` (our SQL has no literal '?')."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


def affected(status: str) -> int:
    """asyncpg's command status ("UPDATE 3", "INSERT 0 1") as a row count."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0
