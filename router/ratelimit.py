"""Token buckets per channel and per recipient, and pauses a provider asks for.

Each bucket is a GCRA (generic cell rate algorithm): one timestamp per key, the
time the next request would be due in a perfectly spaced stream. A caller
reserves its slot and sleeps until then, so concurrent senders queue fairly
and the channel's rate is never exceeded, whatever the concurrency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from router.clock import Clock

_PRUNE_EVERY = 4096


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

    async def acquire(self, channel: str, recipient: str) -> None:
        """Wait for this channel's and this recipient's next slot."""
        limit = self._limits.get(channel)
        now = self._clock.monotonic()
        go_at = self._paused_until.get(channel, now)
        if limit is not None:
            if limit.per_recipient_per_second:
                go_at = max(go_at, self._reserve(
                    (channel, recipient), limit.per_recipient_per_second, 1, max(go_at, now)
                ))
            if limit.per_second:
                go_at = max(go_at, self._reserve(channel, limit.per_second, limit.burst,
                                                 max(go_at, now)))
        wait = go_at - now
        if wait > 0:
            await self._clock.sleep(wait)

    def _reserve(self, key: object, rate: float, burst: int, earliest: float) -> float:
        interval = 1.0 / rate
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
