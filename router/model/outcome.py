"""What one send or probe came to, as the router needs to know it.

Adapters classify at the boundary, once per transport; everything after that
(retry, fallback, health, escalation) reads only these types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.StrEnum):
    """Whether the provider took the message, and if not, what that means for a retry."""

    ACCEPTED = "accepted"
    """The provider took it."""
    TRANSIENT = "transient"
    """Certainly not sent; may work later."""
    PERMANENT = "permanent"
    """Will not work until someone changes something."""
    UNKNOWN = "unknown"
    """May have been sent: never resend on the same channel."""


class Scope(enum.StrEnum):
    """Who a failure is about; only channel-scope failures count toward a channel's health."""

    RECIPIENT = "recipient"
    CHANNEL = "channel"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The classified result of one request to a provider."""

    verdict: Verdict
    scope: Scope = Scope.CHANNEL
    detail: str = ""
    provider_id: str | None = None
    retry_after: float | None = None
    """Seconds the provider asked us to wait (HTTP 429, Telegram flood control)."""
    elapsed: float = 0.0
    warning: str = ""
    """A probe that succeeded but saw trouble coming (a low balance)."""

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.ACCEPTED

    @property
    def counts_against_channel(self) -> bool:
        return self.verdict is not Verdict.ACCEPTED and self.scope is Scope.CHANNEL

    @classmethod
    def accepted(cls, provider_id: str | None = None, detail: str = "") -> Outcome:
        return cls(Verdict.ACCEPTED, Scope.CHANNEL, detail, provider_id)

    @classmethod
    def transient(cls, detail: str, *, retry_after: float | None = None) -> Outcome:
        return cls(Verdict.TRANSIENT, Scope.CHANNEL, detail, retry_after=retry_after)

    @classmethod
    def permanent(cls, detail: str, scope: Scope) -> Outcome:
        return cls(Verdict.PERMANENT, scope, detail)

    @classmethod
    def unknown(cls, detail: str) -> Outcome:
        return cls(Verdict.UNKNOWN, Scope.CHANNEL, detail)

    def timed(self, elapsed: float) -> Outcome:
        return Outcome(
            self.verdict, self.scope, self.detail, self.provider_id, self.retry_after, elapsed,
            self.warning,
        )


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a channel can carry and what it depends on."""

    max_length: int | None
    """Longest text the channel accepts, in characters; None for no practical limit."""
    failure_domains: frozenset[str]
    """Shared dependencies: two channels are independent when these do not intersect."""
    reports_delivery: bool = False
    reports_acknowledgement: bool = False
