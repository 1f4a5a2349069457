"""Keeping a process's breakers in step with the store, and probing channels.

Health lives in the store so that the cron probe, a CLI broadcast and a
server in other processes agree: transitions are written as they happen, and
a running router reads back what others wrote every ``refresh_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from config.sections import HealthSettings
from router.model.clock import Clock
from router.model.outcome import Outcome
from router.model.tasks import cancel
from router.rules.health import HealthBoard
from router.store.base import Store, StoreFailure

Probe = Callable[[], Awaitable[Outcome]]
log = logging.getLogger("backchannel.health")


class HealthKeeper:
    """Loads, saves and refreshes a :class:`HealthBoard`; runs probe rounds."""

    def __init__(
        self,
        board: HealthBoard,
        store: Store,
        probes: Mapping[str, Probe],
        settings: HealthSettings,
        clock: Clock,
        lease: Callable[[float], Awaitable[bool]] | None = None,
    ) -> None:
        self.board = board
        self._store = store
        self.probes = dict(probes)
        self._settings = settings
        self._clock = clock
        self._lease = lease
        self._task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        for breaker in await self._store.load_health():
            self.board.adopt(breaker)

    async def flush(self) -> None:
        if not self.board.dirty:
            return
        names, self.board.dirty = self.board.dirty, set()
        await self._store.save_health([self.board.breaker(name) for name in sorted(names)])

    async def probe_once(self) -> dict[str, Outcome]:
        """One round: every probe at once; results recorded and saved before returning."""
        names = list(self.probes)
        outcomes = await asyncio.gather(*(self._probe(name) for name in names))
        for name, outcome in zip(names, outcomes, strict=True):
            self.board.record_probe(name, outcome)
            if not outcome.ok:
                log.warning("probe %s: %s (%s)", name, outcome.verdict.value, outcome.detail)
        await self.flush()
        return dict(zip(names, outcomes, strict=True))

    async def _probe(self, name: str) -> Outcome:
        try:
            return await self.probes[name]()
        except Exception as exc:  # a probe must report, never take the loop down
            log.exception("probe %s raised", name)
            return Outcome.unknown(f"probe error: {type(exc).__name__}")

    def start(self, *, probing: bool) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(probing), name="backchannel-health")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel([task])
        await self.flush()

    async def _run(self, probing: bool) -> None:
        # This loop paces itself in real time even under a test's fake clock: it only
        # moves state between processes; every decision it feeds uses the clock.
        settings = self._settings
        next_probe = time.monotonic() if probing else float("inf")
        while True:
            try:
                if time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + settings.probe_interval
                    # Several instances on one store: one probes per interval, all read it.
                    if self._lease is None or await self._lease(settings.probe_interval * 0.9):
                        await self.probe_once()
                await self.flush()
                await self.load()
            except StoreFailure as exc:  # it explains itself: no traceback every 2 s
                log.error("health refresh failed: %s; retrying", exc)
            except Exception:  # the store may be briefly locked by another process
                log.exception("health refresh failed; retrying")
            await asyncio.sleep(settings.refresh_interval)
