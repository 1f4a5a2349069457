"""The store protocol and the records that cross it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

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


@dataclass(frozen=True, slots=True)
class Claim:
    """What this process should do with a message it asked to run."""

    message_id: str
    action: Literal["new", "resume", "attach", "done"]
    """new: just recorded; resume: interrupted, now ours; attach: another live process is
    running it; done: finished earlier (an idempotent repeat)."""


class KeyConflict(Exception):
    """An idempotency key reused for a different message or audience."""


@dataclass(frozen=True, slots=True)
class StoredAttempt:
    attempt_id: str
    message_id: str
    contact: str
    channel: str
    address: str
    kind: str
    state: str
    """``sending`` (in doubt until settled) or ``done``."""
    verdict: str | None
    scope: str | None
    detail: str | None
    provider_id: str | None
    retry_after: float | None
    started_at: float
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class StoredDelivery:
    contact: str
    position: int
    addresses_json: str
    """The contact as it was when the message was recorded: a resume goes where the
    message was meant to go, even if the contact book changed since."""
    status: str
    channel: str | None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message with every delivery and attempt, as recorded."""

    record: MessageRecord
    state: str
    owner: str | None
    heartbeat_at: float | None
    deliveries: tuple[StoredDelivery, ...]
    attempts: tuple[StoredAttempt, ...]


class OwnerCheck(Protocol):
    def __call__(self, owner: str | None, heartbeat_at: float | None) -> bool:
        """Whether the process that owns a pending message is still running it."""
        ...


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

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

    async def claim_message(
        self,
        record: MessageRecord,
        contacts: Sequence[tuple[str, str]],
        *,
        owner: str,
        owner_is_alive: OwnerCheck,
    ) -> Claim:
        """Record a new message, or find the earlier run of its idempotency key.

        Raises :class:`KeyConflict` when the key was used for a different request.
        """
        ...

    async def take_over(self, message_id: str, *, owner: str, owner_is_alive: OwnerCheck) -> bool:
        """Become the owner of a pending message whose owner is gone."""
        ...

    async def heartbeat(self, message_ids: Sequence[str], *, owner: str, at: float) -> None: ...

    async def finish_message(self, message_id: str, *, owner: str, at: float) -> None: ...

    async def load_message(self, message_id: str) -> StoredMessage | None: ...

    async def orphaned_messages(self, *, owner_is_alive: OwnerCheck) -> list[str]:
        """Pending messages whose owner is gone: work a crash interrupted."""
        ...

    async def history(
        self, *, message_id: str | None = None, contact: str | None = None, limit: int = 200
    ) -> list[StoredAttempt]:
        """Newest attempts first, optionally for one message and/or one contact."""
        ...

    async def load_health(self) -> list[Breaker]: ...

    async def save_health(self, breakers: Sequence[Breaker]) -> None:
        """Upsert; a row is only replaced by a newer one (``updated_at``)."""
        ...
