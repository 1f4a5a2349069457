"""Channel health: whether a channel should get traffic now."""

from __future__ import annotations

from typing import Protocol

from router.outcome import Outcome


class Health(Protocol):
    def allows(self, channel: str) -> bool:
        """Whether a request may be made on ``channel`` now."""
        ...

    def record(self, channel: str, outcome: Outcome) -> None:
        """Feed the outcome of a real request."""
        ...


class NoHealthTracking:
    """Every channel always gets traffic."""

    def allows(self, channel: str) -> bool:
        return True

    def record(self, channel: str, outcome: Outcome) -> None:
        return None
