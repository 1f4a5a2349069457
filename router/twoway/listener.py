"""The listening half of the router: replies, waiting for goals, background services.

A mixin of :class:`router.core.Router`, kept apart so that each file stays readable;
it uses the router's store, inbound processor and escalator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from config.settings import Settings
from router.model.errors import BadInput
from router.model.results import BroadcastResult
from router.sending.escalation import Escalator
from router.sending.outbox import recorded_results
from router.store.base import Store
from router.twoway.inbound import Inbound, Reply, ReplyHook
from router.twoway.polling import ReceiptPoller, TelegramPoller
from router.twoway.services import PRESENCE_EVERY, Services, servers_running

if TYPE_CHECKING:
    from router.registry import ChannelSet


class Listening:
    settings: Settings
    store: Store
    inbound: Inbound
    escalator: Escalator
    services: Services
    _built: ChannelSet | None
    _reply_hooks: list[ReplyHook]

    @property
    def owner(self) -> str:
        raise NotImplementedError

    def _started(self) -> bool:
        raise NotImplementedError

    def _services(self) -> Services:
        built, webhooks = self._built, self.settings.webhooks
        bot = built.telegram_bot if built is not None else None
        telegram = None
        if bot is not None and webhooks.telegram_updates == "polling":
            telegram = TelegramPoller(bot, self.inbound, self.store,
                                      lease=self._lease("telegram-updates"))
        receipts = None
        if built is not None and built.twilio is not None and webhooks.public_url is None:
            receipts = ReceiptPoller(
                built.twilio.status_of, self.inbound, self.store,
                interval=self.settings.escalation.receipt_poll_interval,
                lease=self._lease("twilio-receipts"),
            )
        return Services(store=self.store, escalator=self.escalator, telegram=telegram,
                        receipts=receipts, instance_id=self.owner)

    def _lease(self, name: str) -> Callable[[float], Awaitable[bool]]:
        """A job only one instance on this store should do at a time (polling, probing)."""
        async def hold(seconds: float) -> bool:
            now = time.time()
            return await self.store.try_lease(name, self.owner, now=now, until=now + seconds)

        return hold

    async def replies(self) -> AsyncIterator[Reply]:
        """Replies, acknowledgements and opt-outs as they arrive in this process."""
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        self.inbound.listeners.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self.inbound.listeners.remove(queue)

    def on_reply(self, hook: ReplyHook) -> None:
        """Call ``hook`` for every reply this process receives."""
        self._reply_hooks.append(hook)
        if self._started():
            self.inbound.hooks.append(hook)

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
                if not await servers_running(self.store):
                    self.services.start(server=False)  # a no-op once started
            stored = await self.store.load_message(message_id)
            if stored is None:
                raise BadInput(f"message: no message {message_id!r} in the store")
            current = recorded_results(stored)
            if on_change is not None and current != seen:
                on_change(current)
            seen = current
            if all(delivery.done for delivery in stored.deliveries):
                return current
            await asyncio.sleep(interval)
