"""Change cursors: how a reader learns, within a fraction of a second, that any process
(a CLI broadcast, the cron probe, a worker on another host) committed something.

SQLite: ``PRAGMA data_version`` on the reader's own connection, looked at every 50 ms (a
read of shared memory; writers pay nothing). PostgreSQL: LISTEN on a connection of its
own, fed by the statement triggers of the board's migration, which name the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from router.store.schema import BOARD_CHANNEL

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("backchannel.board")
POLL = 0.05
"""Seconds between looks at SQLite's data_version."""


class ChangeCursor(Protocol):
    async def wait(self) -> frozenset[str] | None:
        """Return once something was committed since the last return: the tables that
        changed, or None when the engine cannot say which."""
        ...

    async def close(self) -> None: ...



class DataVersionCursor:
    """SQLite: ``PRAGMA data_version`` moves when another connection (any process) commits."""

    def __init__(self, version: Callable[[], Awaitable[int]]) -> None:
        self._version = version
        self._seen: int | None = None

    async def wait(self) -> frozenset[str] | None:
        if self._seen is None:
            self._seen = await self._version()
        while True:
            await asyncio.sleep(POLL)
            current = await self._version()
            if current != self._seen:
                self._seen = current
                return None

    async def close(self) -> None:
        return None


class NotifyCursor:
    """PostgreSQL: LISTEN on a connection of its own; the triggers name the table."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: asyncpg.Connection | None = None
        self._changed: set[str] = set()
        self._event = asyncio.Event()
        self._lost = False

    async def _connect(self) -> None:
        import asyncpg

        connection = await asyncpg.connect(self._url)
        await connection.add_listener(BOARD_CHANNEL, self._notified)
        connection.add_termination_listener(self._terminated)
        self._connection = connection

    def _notified(self, *args: Any) -> None:
        self._changed.add(str(args[-1]))
        self._event.set()

    def _terminated(self, _connection: Any) -> None:
        self._connection = None
        self._lost = True
        self._event.set()

    async def wait(self) -> frozenset[str] | None:
        while self._connection is None:
            try:
                await self._connect()
            except Exception:  # the database restarts: keep trying
                log.warning("board: cannot listen for changes; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            if self._lost:  # what changed while we were away is unknown: everything
                self._lost = False
                return None
        await self._event.wait()
        self._event.clear()
        if self._lost:
            return None
        changed, self._changed = frozenset(self._changed), set()
        return changed

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
