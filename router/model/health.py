"""What a channel's health looks like as a record: shared by the breakers that
decide (:mod:`router.rules.health`), the store that keeps it, and the reports."""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class State(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    TRIAL = "trial"
    """Down, with one trial request or probe under way."""


@dataclass(slots=True)
class Breaker:
    """The health of one channel or shared dependency. Times are wall-clock seconds."""

    name: str
    state: State = State.UP
    since: float = 0.0
    consecutive_failures: int = 0
    cooldown: float = 0.0
    """The cool-down used the last time it opened; grows while it keeps failing."""
    next_trial_at: float = 0.0
    trial_started_at: float = 0.0
    closed_at: float = 0.0
    last_error: str = ""
    last_probe_at: float | None = None
    last_probe_ok: bool | None = None
    last_probe_latency: float | None = None
    updated_at: float = 0.0
    warning: str = ""
    """From the last probe that succeeded: trouble coming (a low balance)."""
    transitions: int = 0
    """Times it went down or came back up, in this process."""
    window: deque[tuple[float, bool]] = field(default_factory=deque, repr=False)


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """What ``backchannel status`` shows for one channel or shared dependency."""

    name: str
    state: State
    since: float
    blocked_by: str | None
    """The breaker keeping it out of the route: itself, or a shared dependency."""
    last_error: str
    last_probe_at: float | None
    last_probe_ok: bool | None
    last_probe_latency: float | None
    next_trial_at: float | None
    warning: str = ""
    """Trouble coming that is not a failure yet (a provider's low balance)."""
    lanes: tuple[str, ...] = ()
    """A channel carried by several providers: their lanes, best first."""

    @property
    def up(self) -> bool:
        return self.blocked_by is None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state.value if self.up else State.DOWN.value,
            "own_state": self.state.value,
            "since": self.since,
            "blocked_by": self.blocked_by,
            "last_error": self.last_error or None,
            "last_probe_at": self.last_probe_at,
            "last_probe_ok": self.last_probe_ok,
            "last_probe_latency_ms": None if self.last_probe_latency is None
            else round(self.last_probe_latency * 1000, 1),
            "next_trial_at": self.next_trial_at,
            "warning": self.warning or None,
            "lanes": list(self.lanes),
        }
