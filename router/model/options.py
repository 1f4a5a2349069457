"""How far a send must go, and under which key: one value, not a keyword list per call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

Goal = Literal["accepted", "delivered", "acknowledged"]
GOALS: tuple[Goal, ...] = ("accepted", "delivered", "acknowledged")


@dataclass(frozen=True, slots=True)
class SendOptions:
    """What a caller asks of one send or broadcast, beyond the words and the audience."""

    idempotency_key: str | None = None
    """A repeat returns the first run's results and sends nothing."""
    expires_after: float | None = None
    """Seconds after which an unsent message is dropped as expired."""
    until: Goal = "accepted"
    """``delivered`` or ``acknowledged`` escalate to the next channel when the receipt or
    the person does not come in time."""

    def __post_init__(self) -> None:
        if self.until not in GOALS:
            raise ValueError(f"until: must be one of {', '.join(GOALS)}")
        if self.expires_after is not None and self.expires_after <= 0:
            raise ValueError("expires_after: must be longer than zero")


class SendKeywords(TypedDict, total=False):
    """:class:`SendOptions` spelled as keywords, for ``router.send(..., until=...)``."""

    idempotency_key: str | None
    expires_after: float | None
    until: Goal
