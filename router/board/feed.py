"""Live updates: one watcher per server turns the store's change cursor into versions,
at most one per ``update_interval``; each viewer's event stream re-renders its view when
the version moves and sends only the parts that changed.

Nothing here grows with the number of updates: a viewer holds the version it saw and a
hash per part, the cache holds the current version's parts only, and a viewer that
reads slowly simply skips versions (it always gets the newest picture, never a backlog).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from router.store.changes import ChangeCursor

T = TypeVar("T")
log = logging.getLogger("backchannel.board")


class Watcher:
    """Bumps :attr:`version` when the store changes; coalesces bursts."""

    def __init__(self, cursor: ChangeCursor, interval: float,
                 clock: Callable[[], float]) -> None:
        self._cursor = cursor
        self._interval = interval
        self._clock = clock
        self.version = 0
        self.changed_at = clock()
        self._moved = asyncio.Event()
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cache: dict[object, tuple[int, asyncio.Future[object]]] = {}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="backchannel-board-watcher")

    def hang_up(self) -> None:
        """End every event stream now (the server is stopping; browsers reconnect later)."""
        self._closed.set()
        self._moved.set()

    async def close(self) -> None:
        self.hang_up()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._cursor.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def _run(self) -> None:
        while True:
            try:
                await self._cursor.wait()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is briefly unreadable: try again shortly
                log.warning("board: watching the store failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            self.version += 1
            self.changed_at = self._clock()
            self._cache.clear()
            moved, self._moved = self._moved, asyncio.Event()
            moved.set()
            # Coalescing: whatever else is committed meanwhile is one more version later.
            await asyncio.sleep(self._interval)

    async def newer_than(self, seen: int, within: float) -> bool:
        """Wait until the version passes ``seen``; False on timeout or close."""
        if self.version > seen:
            return True
        moved = self._moved
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await moved.wait()
        return self.version > seen and not self.closed

    async def shared(self, key: object, compute: Callable[[], Awaitable[T]]) -> T:
        """``compute()`` once per version and key, whoever asks: three viewers of the same
        view cost one query."""
        version = self.version
        entry = self._cache.get(key)
        if entry is None or entry[0] != version:
            if len(self._cache) > 256:
                self._cache.clear()
            future: asyncio.Future[object] = asyncio.ensure_future(compute())
            entry = (version, future)
            self._cache[key] = entry
        try:
            result = await asyncio.shield(entry[1])
        except Exception:
            if self._cache.get(key) is entry:
                del self._cache[key]
            raise
        return result  # type: ignore[return-value]
