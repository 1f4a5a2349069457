"""The contract between the router and a channel adapter.

The router decides, channels only report: an adapter turns one send into one
classified :class:`~router.model.outcome.Outcome` and never raises for a delivery problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from config.channels import CHANNEL_NAMES
from router.model.outcome import Capabilities, Outcome

__all__ = ["CHANNEL_NAMES", "Channel", "Lane", "Reconciling", "Rendered", "text_with_ack"]


@dataclass(frozen=True, slots=True)
class Rendered:
    """The words one channel will carry for one contact."""

    text: str
    subject: str | None = None
    ack_code: str | None = None
    """When a person must acknowledge: the code to reply with (a button, a keypress)."""


def text_with_ack(message: Rendered) -> str:
    """SMS and WhatsApp: the words, and how to acknowledge them when a person must."""
    if message.ack_code is None:
        return message.text
    return f"{message.text}\n\nReply {message.ack_code} to acknowledge."


@runtime_checkable
class Channel(Protocol):
    """One way to reach a person. Implementations live in the ``channels`` package."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def send(self, address: str, message: Rendered, *, attempt_id: str) -> Outcome:
        """Hand one message to the provider; classify whatever happens."""
        ...

    async def check(self) -> Outcome:
        """Probe the provider without sending anything to anyone."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Lane:
    """One provider carrying one channel: its own adapter, breaker and rate limit."""

    channel: str
    provider: str
    key: str
    """Its breaker's and rate limit's name: the channel itself when one provider carries
    it, else ``<channel>.<provider>`` (:func:`config.channels.lane_key`)."""
    capabilities: Capabilities


@runtime_checkable
class Reconciling(Protocol):
    """A channel whose provider can say afterwards whether a request went through."""

    async def reconcile(
        self, address: str, message: Rendered, *, since: float
    ) -> list[str] | None:
        """Provider ids of what was sent to ``address`` with these words since ``since``
        (epoch seconds), oldest first; None when the provider cannot say."""
        ...
