"""How far a send must go, and under which key: one value, not a keyword list per call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

from router.model.errors import BadInput
from router.model.text import text_problem

Goal = Literal["accepted", "delivered", "acknowledged"]
GOALS: tuple[Goal, ...] = ("accepted", "delivered", "acknowledged")


@dataclass(frozen=True, slots=True)
class IncidentTag:
    """The incident a message is sent for, and the entry of its timeline it carries."""

    incident_id: str
    entry_id: str


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
    incident: IncidentTag | None = None
    """Set by the incidents part (:mod:`router.incidents`): the message belongs to it."""

    def __post_init__(self) -> None:
        if self.until not in GOALS:
            raise BadInput(f"until: must be one of {', '.join(GOALS)}")
        if self.expires_after is not None and self.expires_after <= 0:
            raise BadInput("expires_after: must be longer than zero")
        key = self.idempotency_key
        if key is not None and not key.strip():
            # `-k "$ALERT_ID"` with the variable unset: every later alert would be taken
            # for a repeat of the first and silently not sent.
            raise BadInput("idempotency key: is empty (an unset variable?); give one or none")
        if key is not None and (problem := text_problem(key)):
            raise BadInput(f"idempotency key: {problem}")


class SendKeywords(TypedDict, total=False):
    """:class:`SendOptions` spelled as keywords, for ``router.send(..., until=...)``."""

    idempotency_key: str | None
    expires_after: float | None
    until: Goal
