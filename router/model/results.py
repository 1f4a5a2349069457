"""What happened to a message, per contact and per attempt."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from router.model.outcome import Outcome


class Status(enum.StrEnum):
    """How far a message got with one contact."""

    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    ACKNOWLEDGED = "acknowledged"
    FAILED = "failed"
    EXPIRED = "expired"
    UNKNOWN = "unknown"
    """The last attempt may have been sent and the policy said stop."""

    @property
    def reached(self) -> bool:
        return self in (Status.ACCEPTED, Status.DELIVERED, Status.ACKNOWLEDGED)


class AttemptKind(enum.StrEnum):
    FIRST = "first"
    """The first request on a channel for this delivery."""
    RETRY = "retry"
    """Another request after a transient failure: the previous one certainly did not send."""
    ESCALATION = "escalation"
    """The next channel, because the goal (a receipt, a person) was not met in time."""
    REPEAT = "repeat"
    """The chain again, deliberately, because nobody acknowledged: a new attempt."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request to one provider."""

    attempt_id: str
    channel: str
    outcome: Outcome
    started_at: float
    kind: AttemptKind = AttemptKind.FIRST
    provider: str | None = None
    """Who carried it (twilio, vonage, telegram, email)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt_id": self.attempt_id,
            "channel": self.channel,
            "provider": self.provider,
            "outcome": self.outcome.verdict.value,
            "scope": self.outcome.scope.value,
            "detail": self.outcome.detail,
            "provider_id": self.outcome.provider_id,
            "kind": self.kind.value,
            "started_at": _iso(self.started_at),
            "elapsed_ms": round(self.outcome.elapsed * 1000, 1),
        }


@dataclass(frozen=True, slots=True)
class Skip:
    """A channel left out of the route without a request, and why."""

    channel: str
    reason: str
    after_attempts: int
    """How many attempts came before it, to show the route in order."""
    provider: str | None = None
    """When one provider of a channel was left out, that provider."""

    def to_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "provider": self.provider, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What one message came to for one contact."""

    message_id: str
    contact: str
    status: Status
    channel: str | None
    """The channel that took the message, if any."""
    attempts: tuple[Attempt, ...] = ()
    skipped: tuple[Skip, ...] = ()
    notes: tuple[str, ...] = ()
    """Why channels were skipped, or that a last resort was used."""

    @property
    def reached(self) -> bool:
        return self.status.reached

    def to_json(self) -> dict[str, Any]:
        return {
            "contact": self.contact,
            "status": self.status.value,
            "channel": self.channel,
            "attempts": [attempt.to_json() for attempt in self.attempts],
            "skipped": [skip.to_json() for skip in self.skipped],
            "notes": list(self.notes),
        }


class ResultSource(Protocol):
    """Per-contact results kept elsewhere (the store), read back page by page."""

    def __iter__(self) -> Iterator[DeliveryResult]: ...

    def __len__(self) -> int: ...

    def unreached(self) -> int:
        """Contacts whose delivery is not accepted, delivered or acknowledged."""
        ...


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    """Results for every contact a message went to.

    A small audience's results are held here; a large one's stay in the store and are
    read back, page by page, each time the result is iterated (``stored``), so that a
    broadcast's memory does not grow with its audience.
    """

    message_id: str
    held: tuple[DeliveryResult, ...] = field(default_factory=tuple)
    taken_over: bool = False
    """This process stopped because another took the message over (it had stalled past
    its lease): the other one finishes it; these results are the store's at that time."""
    stored: ResultSource | None = None
    stopped: bool = False
    """The message was stopped while it was being sent (its incident was resolved): the
    contacts not reached by then never will be by it."""

    @property
    def results(self) -> tuple[DeliveryResult, ...]:
        """Every contact's result, in audience order (read whole from the store when
        they are kept there: prefer iterating a large result)."""
        return self.held if self.stored is None else tuple(self.stored)

    def __iter__(self) -> Iterator[DeliveryResult]:
        return iter(self.held) if self.stored is None else iter(self.stored)

    def __len__(self) -> int:
        return len(self.held) if self.stored is None else len(self.stored)

    @property
    def reached_all(self) -> bool:
        if self.stored is not None:
            return self.stored.unreached() == 0
        return all(result.reached for result in self.held)

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "message_id": self.message_id,
            "results": [result.to_json() for result in self],
        }
        if self.taken_over:
            payload["taken_over"] = True
        if self.stopped:
            payload["stopped"] = True
        return payload


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Queued:
    """Work recorded for ``backchannel worker`` processes; nothing sent yet."""

    message_id: str

    def to_json(self) -> dict[str, Any]:
        return {"message_id": self.message_id}
