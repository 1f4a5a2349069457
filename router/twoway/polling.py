"""Asking providers for what would otherwise come by webhook.

Update feeds (Telegram's ``getUpdates``) are long-polled unless a webhook is set;
without a public URL, no provider can call back, so the status of the requests a
delivery waits on is fetched instead. The loops, leases and cursors live here; the
providers only fetch and parse.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from router.model.inbound import Apply, FeedConflict, FeedUnavailable, StatusSource, UpdateFeed
from router.store.base import Store, StoreFailure
from router.twoway.inbound import Inbound

log = logging.getLogger("backchannel.pollers")
Lease = Callable[[float], Awaitable[bool]]
"""Hold a named lease for this many seconds: only one instance polls at a time."""


async def _always(seconds: float) -> bool:
    return True


class UpdatePoller:
    """One long-polling reader of a provider's updates (Telegram allows only one)."""

    def __init__(self, feed: UpdateFeed, apply: Apply, store: Store, *, timeout: int = 20,
                 lease: Lease = _always) -> None:
        self._feed = feed
        self._apply = apply
        self._store = store
        self._timeout = timeout
        self._lease = lease
        self._cursor_key = f"{feed.name}.cursor"

    async def run(self) -> None:
        backoff = 1.0
        while True:
            if not await self._lease(self._timeout * 1.5):
                await asyncio.sleep(self._timeout)  # another instance reads the updates
                continue
            try:
                await self.poll_once()
                backoff = 1.0
            except FeedConflict:
                # Another process polls this bot (or a webhook is set): it gets the updates.
                log.warning("%s: another reader takes the updates; retrying in 30s",
                            self._feed.name)
                await asyncio.sleep(30)
            except FeedUnavailable as exc:
                log.warning("%s: %s; retrying in %.0fs", self._feed.name, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60)

    async def poll_once(self, wait: int | None = None) -> int:
        cursor = int(await self._store.get_value(self._cursor_key) or 0)
        updates = await self._feed.fetch(cursor or None, self._timeout if wait is None else wait)
        for next_cursor, update in updates:
            await self._feed.handle(update, self._apply)
            # Saved after each update: a crash re-reads at most the one in hand, and the
            # inbound table recognises it by its id.
            await self._store.set_value(self._cursor_key, str(next_cursor))
        return len(updates)


class ReceiptPoller:
    """Fetches the status of the requests that deliveries wait on, from the provider that
    carried each (sources by provider name)."""

    def __init__(self, sources: Mapping[str, StatusSource], inbound: Inbound, store: Store, *,
                 interval: float, lease: Lease = _always) -> None:
        self._sources = dict(sources)
        self._inbound = inbound
        self._store = store
        self._interval = interval
        self._lease = lease

    async def run(self) -> None:
        while True:
            try:
                if await self._lease(self._interval * 3):
                    await self.poll_once()
            except StoreFailure as exc:  # it explains itself: no traceback each time
                log.error("receipt polling failed: %s; retrying", exc)
            except Exception:  # the store or the provider may be briefly unavailable
                log.exception("receipt polling failed; retrying")
            await asyncio.sleep(self._interval)

    async def poll_once(self) -> int:
        changed = 0
        for attempt in await self._store.awaiting_receipts():
            source = self._sources.get(attempt.provider or "")
            if source is None or not attempt.provider_id:
                continue
            state = await source.status(attempt.provider_id)
            if state is not None and await self._inbound.receipt(attempt.provider_id, state):
                changed += 1
        return changed
