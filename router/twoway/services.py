"""The background work of a router that listens: escalations, polling, presence.

A server runs all of it for as long as it lives; ``send --until ...`` runs it
while it waits, unless a server is already doing it for everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from router.model.tasks import cancel
from router.sending.escalation import Escalator
from router.store.base import Store, StoreFailure
from router.twoway.polling import ReceiptPoller, UpdatePoller

log = logging.getLogger("backchannel.services")
ESCALATION_TICK = 0.5
PRESENCE_EVERY = 5.0
PRESENCE_LEASE = 20.0
Loop = Callable[[], Coroutine[Any, Any, None]]


class Services:
    """Starts and stops the loops; each one survives its own errors."""

    def __init__(
        self,
        *,
        store: Store,
        escalator: Escalator,
        updates: Sequence[UpdatePoller],
        receipts: ReceiptPoller | None,
        instance_id: str,
        timers: Sequence[tuple[str, Loop]] = (),
    ) -> None:
        """``timers``: more loops that live in the store like escalation (the incidents'
        reminders), each run by whoever runs the escalation."""
        self._store = store
        self._escalator = escalator
        self._updates = list(updates)
        self._receipts = receipts
        self._timers = list(timers)
        self._instance_id = instance_id
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, *, server: bool) -> None:
        if self._tasks:
            return
        loops: list[tuple[str, Loop]] = [("escalation", self._escalate), *self._timers]
        loops += [(f"updates-{index}", poller.run) for index, poller in enumerate(self._updates)]
        if self._receipts is not None:
            loops.append(("receipts", self._receipts.run))
        if server:
            loops.append(("presence", self._presence))
        self._tasks = [asyncio.create_task(run(), name=f"backchannel-{name}")
                       for name, run in loops]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel(tasks)
        if tasks:
            with contextlib.suppress(Exception):  # the leases expire anyway
                await self._store.release_leases(self._instance_id)

    async def _escalate(self) -> None:
        while True:
            pause = ESCALATION_TICK
            try:
                await self._escalator.run_due()
                # Wake at the next deadline rather than up to a tick late; other
                # processes may add earlier ones, hence the tick as an upper bound.
                due = await self._store.next_due()
                if due is not None:
                    pause = min(pause, max(0.005, due - self._escalator.now()))
            except StoreFailure as exc:  # it explains itself: no traceback each time
                log.error("escalation loop failed: %s; retrying", exc)
            except Exception:
                log.exception("escalation loop failed; retrying")
            await asyncio.sleep(pause)

    async def _presence(self) -> None:
        """Lets a CLI that stops waiting say whether a server will carry on."""
        while True:
            with contextlib.suppress(Exception):
                await self._store.beat_instance(self._instance_id, "serve", time.time())
            await asyncio.sleep(PRESENCE_EVERY)


async def servers_running(store: Store) -> list[str]:
    return await store.live_instances("serve", time.time() - PRESENCE_LEASE)
