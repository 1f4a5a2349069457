"""``backchannel worker``: take queued deliveries from the shared store and send them.

Several workers (on several machines, with PostgreSQL) share one queue: each
claims a batch of pending deliveries with a lease, works them concurrently,
renews the leases while it works, and releases each one when done. A worker
that dies stops renewing; its leases expire and another worker finishes those
deliveries under the same rules as a resume (in-doubt attempts are settled
first, never resent on their channel). Idle workers wake on LISTEN/NOTIFY
(PostgreSQL) or poll (SQLite).
"""

from __future__ import annotations

import asyncio
import logging
import time

from router.core import Router
from router.model.tasks import cancel
from router.sending.ownership import Claimed, Holds, LostOwnership, boot_clock
from router.store.base import Fence

log = logging.getLogger("backchannel.worker")
LEASE = 30.0
IDLE_POLL = 1.0
RELEASE_BATCH = 64
"""Finished deliveries released per transaction."""


class Worker:
    """Works the shared queue until ``stop`` is set."""

    def __init__(self, router: Router, *, concurrency: int | None = None,
                 lease: float = LEASE) -> None:
        self._router = router
        self._concurrency = concurrency or router.settings.routing.concurrency
        self._lease = lease
        self.owner = router.owner
        self.done = 0
        self.lost = 0
        """Deliveries given up because another worker took their lease over."""
        self._working: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._leases = Holds(self.owner, lease)
        self._finished: list[tuple[str, str]] = []
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        store = self._router.store
        await store.on_work(self._wake.set)
        renewal = asyncio.create_task(self._renew(), name="backchannel-lease-renewal")
        log.info("worker %s started (concurrency %d)", self.owner, self._concurrency)
        try:
            while not stop.is_set():
                free = self._concurrency - len(self._working)
                claimed = []
                if free > 0:
                    issued = boot_clock()
                    claimed = await store.claim_work(
                        self.owner, now=time.time(), lease=self._lease, limit=free
                    )
                for message_id, contact, epoch in claimed:
                    key = (message_id, contact)
                    self._leases.take(key, Fence(self.owner, epoch, contact), at=issued)
                    self._working[key] = asyncio.create_task(self._work(key))
                if not claimed:
                    await self._release()
                    await self._idle(stop)
        finally:
            await cancel([renewal])
            # Finish what is in hand: an interrupted request would only become in doubt.
            if self._working:
                await asyncio.gather(*self._working.values(), return_exceptions=True)
            await self._release()

    async def _idle(self, stop: asyncio.Event) -> None:
        self._wake.clear()
        signals = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        # A delivery finishing frees a slot: worth another look at the queue.
        finishing = list(self._working.values())[:1]
        await asyncio.wait([*signals, *finishing], timeout=IDLE_POLL,
                           return_when=asyncio.FIRST_COMPLETED)
        for waiter in signals:
            waiter.cancel()

    async def _work(self, key: tuple[str, str]) -> None:
        message_id, contact = key
        fence = self._leases.fence(key)
        try:
            if fence is None:
                raise LostOwnership("lease already lost")
            await self._router.work_on(message_id, contact, Claimed(
                fence, lambda: self._leases.holds(key), lambda: self._renew_leases([key])
            ))
        except LostOwnership:
            log.warning("%s for %s: another worker took the lease over; leaving it to them",
                        message_id, contact)
            self.lost += 1
            return
        except Exception:  # the lease will expire and another worker will settle it
            log.exception("working %s for %s failed", message_id, contact)
            return
        finally:
            self._working.pop(key, None)
            self._leases.drop(key)
        # Released with others in one transaction (see _release): a delivery already
        # settled cannot be claimed again, so a late release costs nothing.
        self._finished.append(key)
        self.done += 1
        if len(self._finished) >= RELEASE_BATCH:
            await self._release()

    async def _release(self) -> None:
        keys, self._finished = self._finished, []
        if keys:
            try:
                await self._router.store.release_many(keys, self.owner, at=time.time())
            except Exception:  # settled deliveries are never claimed again anyway
                log.warning("releasing %d deliveries failed", len(keys), exc_info=True)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 6)
            keys = [key for key in self._working if self._leases.fence(key) is not None]
            if keys:
                await self._renew_leases(keys)
            await self._release()

    async def _renew_leases(self, keys: list[tuple[str, str]]) -> bool:
        """Extend these leases; True if every one is still this worker's."""
        issued = boot_clock()
        try:
            held = await self._router.store.renew_leases(
                self.owner, keys, until=time.time() + self._lease
            )
        except Exception:  # the holds run out on their own if the store stays away
            log.warning("lease renewal failed; retrying", exc_info=True)
            return False
        self._leases.renewed(set(held), issued_at=issued)
        for key in set(keys) - held:
            self._leases.lose(key)
        return held >= set(keys)
