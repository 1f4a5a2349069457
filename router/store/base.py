"""The store protocol and the records that cross it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from router.health import Breaker
from router.outcome import Outcome


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message as recorded before anything is sent."""

    message_id: str
    body_json: str
    audience_json: str
    fingerprint: str
    """Hash of body and audience: the same idempotency key must mean the same request."""
    created_at: float
    idempotency_key: str | None = None
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class AttemptStart:
    """An attempt about to be made: recorded durably before the provider call."""

    attempt_id: str
    message_id: str
    contact: str
    channel: str
    address: str
    kind: str
    started_at: float


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create_message(self, record: MessageRecord, contacts: Sequence[str]) -> None:
        """Record a message and one pending delivery per contact, durably, in one transaction."""
        ...

    async def begin_attempt(self, attempt: AttemptStart) -> None:
        """Durable before returning: after a crash, this attempt is known to be in doubt."""
        ...

    async def finish_attempt(
        self,
        attempt_id: str,
        outcome: Outcome,
        finished_at: float,
        *,
        delivery_status: str | None = None,
        delivery_channel: str | None = None,
    ) -> None:
        """Record what the attempt came to; optionally settle its delivery in the same commit."""
        ...

    async def finish_delivery(
        self, message_id: str, contact: str, status: str, channel: str | None, at: float
    ) -> None: ...

    async def load_health(self) -> list[Breaker]: ...

    async def save_health(self, breakers: Sequence[Breaker]) -> None:
        """Upsert; a row is only replaced by a newer one (``updated_at``)."""
        ...
