"""Sliding-window request counting, for peers that enforce a provider's rate limits."""

from __future__ import annotations

from collections import deque


class SlidingWindow:
    """At most ``limit`` events per key in any ``window``-second span."""

    def __init__(self, limit: int, window: float = 1.0) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.window = window
        self._events: dict[object, deque[float]] = {}

    def wait(self, key: object, now: float) -> float:
        """Seconds until one more event for ``key`` fits; 0 when it fits now."""
        events = self._events.get(key)
        if events is None:
            return 0.0
        while events and events[0] <= now - self.window:
            events.popleft()
        if not events:
            del self._events[key]
            return 0.0
        if len(events) < self.limit:
            return 0.0
        return events[0] + self.window - now

    def record(self, key: object, now: float) -> None:
        self._events.setdefault(key, deque()).append(now)
