"""The listening side of a router, for callers: replies as they arrive, and waiting
for a message's goal (receipts, people) while the escalation loop runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from router.model.errors import BadInput
from router.model.inbound import Reply
from router.model.results import BroadcastResult
from router.store.base import Store
from router.store.results import recorded_results
from router.twoway.inbound import Inbound, ReplyHook
from router.twoway.services import PRESENCE_EVERY, Services, servers_running


class Listener:
    """Replies and waits, over one router's inbound processor and background services."""

    def __init__(self, *, store: Store, inbound: Inbound, services: Services) -> None:
        self._store = store
        self._inbound = inbound
        self._services = services

    async def replies(self) -> AsyncIterator[Reply]:
        """Replies, acknowledgements and opt-outs as they arrive in this process."""
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        self._inbound.listeners.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._inbound.listeners.remove(queue)

    def on_reply(self, hook: ReplyHook) -> None:
        self._inbound.hooks.append(hook)

    async def wait_until_done(
        self, message_id: str, *, on_change: Callable[[BroadcastResult], None] | None = None,
        interval: float = 0.5,
    ) -> BroadcastResult:
        """Wait until every delivery of a message has reached its goal or given up.

        Escalates meanwhile, unless a ``backchannel serve`` on the same store already
        does (and takes over if that server goes away).
        """
        seen: BroadcastResult | None = None
        checked_servers = float("-inf")
        while True:
            if time.monotonic() - checked_servers > PRESENCE_EVERY:
                checked_servers = time.monotonic()
                if not await servers_running(self._store):
                    self._services.start(server=False)  # a no-op once started
            stored = await self._store.load_message(message_id)
            if stored is None:
                raise BadInput(f"message: no message {message_id!r} in the store")
            current = recorded_results(stored)
            if on_change is not None and current != seen:
                on_change(current)
            seen = current
            if all(delivery.done for delivery in stored.deliveries):
                return current
            await asyncio.sleep(interval)
