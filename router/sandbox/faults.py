"""Scripted failures shared by the sandbox peers.

A :class:`Fault` says how one request fails; a :class:`FaultBook` holds the faults a
peer has been told to inject, per channel key (``"sms"``, ``"whatsapp"``, ``"voice"``,
``"telegram"``, ``"email"``) and optionally per recipient, each for a number of uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Literal, cast, get_args

FaultKind = Literal[
    "http", "rate_limited", "stall", "drop", "reject_recipient", "undelivered", "smtp",
    "refuse", "partial",
]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
SMTP_STAGES: frozenset[str] = frozenset({"mail", "rcpt", "data"})


@dataclass(frozen=True, slots=True)
class Fault:
    """How one request fails. Build it with the class-method constructors."""

    kind: FaultKind
    status: int = 0
    """http: the HTTP status to answer."""
    code: int | None = None
    """Provider error code: Twilio's (21211), Telegram's HTTP-like code, or an SMTP reply."""
    message: str = ""
    """Provider error text; empty means the provider's usual text."""
    retry_after: float = 0
    """rate_limited: seconds the client is asked to wait."""
    stage: str = "rcpt"
    """smtp: the step that fails, "mail", "rcpt" or "data"."""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.kind == "http" and not 400 <= self.status <= 599:
            raise ValueError(f"an http fault needs a 4xx or 5xx status, not {self.status}")
        if self.kind == "smtp":
            if self.stage not in SMTP_STAGES:
                raise ValueError(f"smtp stage must be one of {sorted(SMTP_STAGES)}")
            if self.code is None or not 400 <= self.code <= 599:
                raise ValueError("an smtp fault needs a 4xx or 5xx reply code")
        if self.retry_after < 0 or math.isnan(self.retry_after):
            raise ValueError("retry_after must be a non-negative number of seconds")

    @classmethod
    def http(cls, status: int, *, code: int | None = None, message: str = "") -> Fault:
        return cls("http", status=status, code=code, message=message)

    @classmethod
    def rate_limited(cls, retry_after: float = 1.0) -> Fault:
        return cls("rate_limited", retry_after=retry_after)

    @classmethod
    def stall(cls) -> Fault:
        """Record the message as sent, then never answer."""
        return cls("stall")

    @classmethod
    def drop(cls) -> Fault:
        """Record the message as sent, then close the connection without answering."""
        return cls("drop")

    @classmethod
    def reject_recipient(cls, *, code: int | None = None, message: str = "") -> Fault:
        return cls("reject_recipient", code=code, message=message)

    @classmethod
    def undelivered(cls, code: int = 30003, message: str = "") -> Fault:
        """Twilio only: accepted now, undelivered (or failed) later with this error code."""
        return cls("undelivered", code=code, message=message)

    @classmethod
    def refuse(cls, code: int, message: str = "") -> Fault:
        """Vonage: the provider's own error code in a complete answer (an SMS API status
        such as 9, no credit; for calls, an HTTP problem with ``status`` 403)."""
        return cls("refuse", code=code, message=message)

    @classmethod
    def partial(cls, code: int = 5) -> Fault:
        """Vonage SMS: the first part of a long text is taken, the others refused."""
        return cls("partial", code=code)

    @classmethod
    def smtp(cls, code: int, message: str = "", *, stage: str = "rcpt") -> Fault:
        return cls("smtp", code=code, message=message, stage=stage)

    @property
    def retry_after_seconds(self) -> int:
        """What a wire format that only carries whole seconds announces (at least 1)."""
        return max(1, math.ceil(self.retry_after))

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "retry_after": self.retry_after,
            "stage": self.stage,
        }


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One scripted fault as a FaultBook holds it."""

    channel: str
    fault: Fault
    remaining: int | None
    """Uses left; None means until cleared."""
    address: str | None


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """A fault script as the ``/_sandbox/faults`` control API receives it."""

    channel: str
    fault: Fault
    times: int | None = None
    address: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> FaultSpec:
        """Parse ``{"channel", "kind", "status", "code", ..., "times", "address"}``."""
        unknown = set(data) - {
            "channel",
            "kind",
            "status",
            "code",
            "message",
            "retry_after",
            "stage",
            "times",
            "address",
        }
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        channel, kind = data.get("channel"), data.get("kind")
        if not isinstance(channel, str) or not isinstance(kind, str):
            raise ValueError('"channel" and "kind" are required strings')
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        fault = Fault(
            cast(FaultKind, kind),
            status=_int(data, "status") or 0,
            code=_int(data, "code"),
            message=_str(data, "message") or "",
            retry_after=_float(data, "retry_after", 1.0 if kind == "rate_limited" else 0.0),
            stage=_str(data, "stage") or "rcpt",
        )
        return cls(channel, fault, _int(data, "times"), _str(data, "address"))


class FaultBook:
    """The faults one peer has been told to inject.

    Rules are consulted in the order they were added; the first one whose channel
    matches, whose address is unset or equal to the request's, and that the peer can
    apply at this point of the exchange is used, and one of its uses consumed.
    """

    def __init__(
        self,
        channels: Collection[str],
        kinds: Collection[str] = FAULT_KINDS,
        *,
        normalize: Callable[[str], str] = str,
    ) -> None:
        self._channels = frozenset(channels)
        self._kinds = frozenset(kinds)
        self._normalize = normalize
        self._rules: list[FaultRule] = []

    @property
    def channels(self) -> frozenset[str]:
        return self._channels

    @property
    def rules(self) -> tuple[FaultRule, ...]:
        return tuple(self._rules)

    def fail(
        self, channel: str, fault: Fault, *, times: int | None = None, address: str | None = None
    ) -> None:
        """Inject ``fault`` into the next ``times`` requests (None: until cleared)."""
        if channel not in self._channels:
            raise ValueError(f"this peer serves {sorted(self._channels)}, not {channel!r}")
        if fault.kind not in self._kinds:
            raise ValueError(f"this peer cannot inject {fault.kind!r} faults")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for until cleared")
        key = None if address is None else self._normalize(address)
        self._rules.append(FaultRule(channel, fault, times, key))

    def apply(self, spec: FaultSpec) -> None:
        self.fail(spec.channel, spec.fault, times=spec.times, address=spec.address)

    def clear(self, channel: str | None = None) -> None:
        self._rules = [r for r in self._rules if channel is not None and r.channel != channel]

    def take(
        self,
        channel: str,
        address: str | None,
        *,
        where: Callable[[Fault], bool] | None = None,
    ) -> Fault | None:
        """The fault for this request, if any, consuming one use of its rule.

        ``where`` limits the search to faults the caller can inject at this point
        (an SMTP session meets MAIL-stage faults before it knows the recipient).
        """
        key = None if address is None else self._normalize(address)
        for index, rule in enumerate(self._rules):
            if rule.channel != channel or (rule.address is not None and rule.address != key):
                continue
            if where is not None and not where(rule.fault):
                continue
            if rule.remaining is None:
                return rule.fault
            if rule.remaining <= 1:
                del self._rules[index]
            else:
                self._rules[index] = FaultRule(
                    rule.channel, rule.fault, rule.remaining - 1, rule.address
                )
            return rule.fault
        return None

    def to_json(self) -> list[dict[str, object]]:
        return [
            {"channel": r.channel, "times": r.remaining, "address": r.address, **r.fault.to_json()}
            for r in self._rules
        ]


def _int(data: Mapping[str, object], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'"{key}" must be an integer')
    return value


def _float(data: Mapping[str, object], key: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'"{key}" must be a number')
    return float(value)


def _str(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f'"{key}" must be a string')
    return value
