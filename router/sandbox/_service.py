"""``async with`` for the sandbox's servers: start on entry, close on exit, whatever happened."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """A server with ``start()`` and ``close()``, usable as ``async with Peer() as peer``."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
