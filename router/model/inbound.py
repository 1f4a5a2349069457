"""What comes back from providers, in words that name no provider.

A provider's inbound side (``channels/<provider>/``) authenticates and parses its
own webhooks and polls; it hands the core these neutral events through one
:data:`Apply` callable and answers the provider from what it returns. The
two-way room (:mod:`router.twoway`) decides what each event means.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from router.model.redact import mask_address


class ReceiptState(enum.StrEnum):
    """How far a provider says one of our requests got, whatever the provider."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    """Handed to the network (a message), or ringing (a call)."""
    ANSWERED = "answered"
    """A call picked up and in progress."""
    DELIVERED = "delivered"
    """On the handset, or a call answered and completed."""
    FAILED = "failed"
    """Undelivered, rejected, or a call busy, unanswered or cancelled: escalate now."""
    READ = "read"

    @property
    def rank(self) -> int:
        """Receipts only move forward: a late ``sent`` never undoes ``delivered``."""
        return _RANK[self]

    @property
    def reached(self) -> bool:
        return self in (ReceiptState.DELIVERED, ReceiptState.READ)


_RANK = {
    ReceiptState.QUEUED: 0, ReceiptState.SENDING: 1, ReceiptState.SENT: 2,
    ReceiptState.ANSWERED: 3, ReceiptState.DELIVERED: 4, ReceiptState.FAILED: 4,
    ReceiptState.READ: 5,
}


@dataclass(frozen=True, slots=True)
class ReceiptEvent:
    """A provider's status for one of our requests, by the id it gave us."""

    provider_id: str
    state: ReceiptState
    dedupe_key: str | None = None
    """The provider's own id for this delivery of the webhook, where it gives one."""
    attempt_id: str | None = None
    """Our attempt id, where the provider gives it back (the status callback URL named it
    for Twilio; Vonage echoes our client reference): settles one whose answer was lost."""


@dataclass(frozen=True, slots=True)
class TextReceived:
    """Words a person sent to one of our senders."""

    channel: str
    address: str
    text: str
    external_id: str
    """The provider's id for the message: a replay is recognised by it."""
    dedupe_key: str | None = None


@dataclass(frozen=True, slots=True)
class KeyPressed:
    """A key a callee pressed during one of our calls."""

    channel: str
    provider_id: str
    """The call, as the provider named it when we placed it."""
    address: str
    digits: str
    external_id: str
    dedupe_key: str | None = None


@dataclass(frozen=True, slots=True)
class ButtonPressed:
    """A button under one of our messages, pressed by the person it went to."""

    channel: str
    address: str
    data: str
    external_id: str
    dedupe_key: str | None = None


@dataclass(frozen=True, slots=True)
class OptedOut:
    """The provider itself reports that a person opted out (a carrier keyword)."""

    channel: str
    address: str
    text: str
    external_id: str
    dedupe_key: str | None = None


Incoming = ReceiptEvent | TextReceived | KeyPressed | ButtonPressed | OptedOut
ReplyKind = Literal["reply", "ack", "opt_out"]


@dataclass(frozen=True, slots=True)
class Reply:
    """A message from a person, with the contact resolved where the address is known."""

    channel: str
    contact: str | None
    address: str
    text: str
    kind: ReplyKind
    message_id: str | None
    """The message it answers, when it acknowledged one."""
    received_at: float

    @property
    def acknowledged(self) -> bool:
        return self.kind == "ack"

    def to_json(self) -> dict[str, object]:
        return {
            "channel": self.channel, "contact": self.contact,
            "address": mask_address(self.channel, self.address), "text": self.text,
            "kind": self.kind, "message_id": self.message_id, "received_at": self.received_at,
        }


Apply = Callable[[Incoming], Awaitable[Reply | None]]
"""The core's one entry for what comes back: a Reply for what a person did (None for
a receipt or a replay)."""


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """One HTTP request to ``/webhooks/<provider>/...``, body already read (and capped)."""

    path: str
    headers: Mapping[str, str]
    """Lower-case names."""
    body: bytes
    public_url: str | None
    """The URL the provider was told to call, query included (``[webhooks] public_url``
    plus the path); None when none is configured, so no signature can be checked."""


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    status: int = 200
    body: str = ""
    media_type: str = "text/plain"


FORBIDDEN = WebhookResponse(403, "forbidden")
"""Deliberately vague: a forger learns nothing about what was wrong."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One webhook a provider answers, under ``/webhooks/<provider>/``."""

    path: str
    handle: Callable[[WebhookRequest, Apply], Awaitable[WebhookResponse]]


class FeedConflict(Exception):
    """Another reader takes this feed's updates (Telegram allows one): back off a while."""


class FeedUnavailable(Exception):
    """The provider could not be asked this time; try again later."""


class UpdateFeed(Protocol):
    """Updates a provider keeps for us to fetch (Telegram's getUpdates)."""

    @property
    def name(self) -> str:
        """Also the lease that lets only one instance read it at a time."""
        ...

    async def fetch(self, cursor: int | None, wait: int) -> Sequence[tuple[int, object]]:
        """Updates after ``cursor``, waiting up to ``wait`` seconds for the first: each
        with the cursor to save once it is handled. Raises FeedConflict or FeedUnavailable."""
        ...

    async def handle(self, update: object, apply: Apply) -> None:
        """Parse one update, hand its events to ``apply``, answer the provider if needed."""
        ...


class StatusSource(Protocol):
    """A provider that can be asked how one of our requests is doing (when it cannot
    call back: no public URL)."""

    async def status(self, provider_id: str) -> ReceiptState | None: ...
