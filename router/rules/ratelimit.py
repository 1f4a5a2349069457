"""Token buckets per channel and per recipient, and pauses a provider asks for.

Each bucket is a GCRA (generic cell rate algorithm): one timestamp per key, the
time the next request would be due in a perfectly spaced stream. A caller
reserves its slot and sleeps until then, so concurrent senders queue fairly
and the channel's rate is never exceeded, whatever the concurrency.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from router.model.clock import Clock

_PRUNE_EVERY = 4096
BLOCK_SECONDS = 0.25
"""A process reserves this much of a shared rate at once (one transaction per block)."""
MAX_BLOCK = 64
LATE_SLOT = 0.05
"""Seconds after which an unused reserved slot is dropped rather than used late."""
HEADROOM = 0.97
"""Requests are spaced for this share of a configured rate: a provider counts arrivals,
and scheduling and network jitter (worse across processes) must not push a burst over."""


@dataclass(frozen=True, slots=True)
class Limit:
    """A rate in requests per second, with a burst allowance; None for no limit."""

    per_second: float | None = None
    per_recipient_per_second: float | None = None
    burst: int = 1


class RateLimiter:
    """Spaces requests per channel and per (channel, recipient)."""

    def __init__(self, limits: Mapping[str, Limit], clock: Clock) -> None:
        self._limits = dict(limits)
        self._clock = clock
        self._due: dict[object, float] = {}
        self._paused_until: dict[str, float] = {}
        self._reservations = 0

    def limit(self, channel: str) -> Limit:
        return self._limits.get(channel, Limit())

    def pause(self, channel: str, seconds: float) -> None:
        """The provider said to wait (HTTP 429, flood control): nobody sends before then."""
        until = self._clock.monotonic() + seconds
        self._paused_until[channel] = max(self._paused_until.get(channel, 0.0), until)

    def paused_for(self, channel: str) -> float:
        return max(0.0, self._paused_until.get(channel, 0.0) - self._clock.monotonic())

    def paced(self, channel: str) -> bool:
        """Whether this channel has a rate of its own (not only per recipient)."""
        limit = self._limits.get(channel)
        return limit is not None and bool(limit.per_second)

    async def reserve(self, channel: str, recipient: str | None) -> float:
        """Take this channel's and this recipient's next slot: seconds until it is due.

        The caller sleeps until then; reserving and sleeping apart lets it do its own
        work (recording the attempt) during the wait, so that the request itself
        leaves on time: a provider counts arrivals, and a late one bunches up with
        the punctual ones behind it.
        """
        limit = self._limits.get(channel)
        now = self._clock.monotonic()
        go_at = self._paused_until.get(channel, now)
        if limit is not None:
            if limit.per_recipient_per_second and recipient is not None:
                go_at = max(go_at, self._reserve(
                    (channel, recipient), limit.per_recipient_per_second, 1, max(go_at, now)
                ))
            if limit.per_second:
                go_at = max(go_at, self._reserve(channel, limit.per_second, limit.burst,
                                                 max(go_at, now)))
        return go_at - now

    def _reserve(self, key: object, rate: float, burst: int, earliest: float) -> float:
        interval = 1.0 / (rate * HEADROOM)
        due = self._due.get(key, earliest)
        go_at = max(earliest, due - (burst - 1) * interval)
        self._due[key] = max(due, go_at) + interval
        self._reservations += 1
        if self._reservations % _PRUNE_EVERY == 0:
            self._prune(earliest)
        return go_at

    def _prune(self, now: float) -> None:
        # A key whose next slot is already past behaves exactly like a new key.
        for key in [key for key, due in self._due.items() if due <= now]:
            del self._due[key]


class SharedRateLimiter(RateLimiter):
    """The same limits, drawn from one budget in the database by every instance.

    A provider's limit is per account, not per process: slots are GCRA reservations
    in a row of the store, so three workers together keep to 30 messages a second, and
    a worker that dies holds back at most the block it had reserved. A process reserves
    its slots a block at a time (as many as its requests are waiting for, up to a quarter
    of a second's worth or 64: one short transaction per block, not per request) and
    drops the ones it let pass. A
    recipient's own limit is kept in this process only: the same person in two
    processes' messages at the same instant is rare, and a provider's 429 then is
    retried like any other. Wall-clock time, because the budget is shared.
    """

    def __init__(self, limits: Mapping[str, Limit], clock: Clock, store: SharedRates) -> None:
        super().__init__(limits, clock)
        self._store = store
        self._shared_pause: dict[str, float] = {}
        self._writes: set[asyncio.Future[None]] = set()
        self._slots: dict[str, collections.deque[float]] = {}
        self._refills: dict[str, asyncio.Lock] = {}
        self._wanted: dict[str, int] = {}

    def pause(self, channel: str, seconds: float) -> None:
        until = self._clock.time() + seconds
        self._slots.pop(channel, None)  # reserved before the provider asked for a pause
        self._shared_pause[channel] = max(self._shared_pause.get(channel, 0.0), until)
        # Written in the background (pause() is called from sync code); kept referenced
        # so that the write is not collected before it lands.
        task = asyncio.ensure_future(self._store.pause_rate(channel, until=until))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def paused_for(self, channel: str) -> float:
        return max(0.0, self._shared_pause.get(channel, 0.0) - self._clock.time())

    async def reserve(self, channel: str, recipient: str | None) -> float:
        limit = self._limits.get(channel)
        now = self._clock.time()
        go_at = now + await self._recipient_wait(channel, recipient)
        if limit is not None and limit.per_second:
            go_at = max(go_at, await self._shared_slot(channel, limit.per_second, limit.burst,
                                                       not_before=go_at))
        elif channel in self._shared_pause:
            go_at = max(go_at, self._shared_pause[channel])
        return go_at - self._clock.time()

    async def _recipient_wait(self, channel: str, recipient: str | None) -> float:
        limit = self._limits.get(channel)
        if limit is None or not limit.per_recipient_per_second or recipient is None:
            return 0.0
        now = self._clock.monotonic()
        go_at = self._reserve((channel, recipient), limit.per_recipient_per_second, 1, now)
        return go_at - now

    async def _shared_slot(self, channel: str, rate: float, burst: int, *,
                           not_before: float) -> float:
        slots = self._slots.setdefault(channel, collections.deque())
        self._wanted[channel] = self._wanted.get(channel, 0) + 1
        try:
            return await self._take_slot(channel, rate, burst, slots, not_before)
        finally:
            self._wanted[channel] -= 1

    async def _take_slot(self, channel: str, rate: float, burst: int,
                         slots: collections.deque[float], not_before: float) -> float:
        lock = self._refills.setdefault(channel, asyncio.Lock())
        while True:
            late = self._clock.time() - LATE_SLOT
            while slots and (slots[0] < late or slots[0] < not_before):
                slots.popleft()  # let pass (this process was busy): not to bunch later
            if slots:
                return slots.popleft()
            async with lock:  # one refill at a time; the others take from it
                if slots:
                    continue
                # As many slots as requests are waiting for one here, up to a quarter of
                # a second's worth: nothing is booked ahead that nobody asked for.
                block = max(1, min(MAX_BLOCK, int(rate * BLOCK_SECONDS),
                                   self._wanted[channel]))
                slots.extend(await self._store.reserve_rates(
                    channel, not_before=not_before, clock=self._clock.time,
                    interval=1.0 / (rate * HEADROOM), burst=burst, count=block,
                ))


class SharedRates(Protocol):
    async def reserve_rates(
        self, key: str, *, not_before: float, clock: Callable[[], float], interval: float,
        burst: int, count: int,
    ) -> list[float]: ...

    async def pause_rate(self, key: str, *, until: float) -> None: ...
