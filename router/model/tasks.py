"""Background tasks: started by the router's parts, stopped the same way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


async def cancel(tasks: Iterable[asyncio.Task[None] | None]) -> None:
    """Cancel and wait for each task; a cancelled task's CancelledError is expected."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
