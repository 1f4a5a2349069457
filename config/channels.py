"""The channels backchannel knows, and the providers that carry them: the one list.

A channel is what a person receives; a provider is who carries it. Everything
else (the config's sections, contacts, templates, the registry, the router's
default ranking) reads these names from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

ChannelName = Literal["whatsapp", "telegram", "sms", "voice", "email"]
CHANNEL_NAMES: tuple[ChannelName, ...] = get_args(ChannelName)
"""Every channel, in the default ranking."""

PHONE_CHANNELS: tuple[ChannelName, ...] = ("whatsapp", "sms", "voice")
"""Channels addressed by a phone number: a contact's ``phone`` fills all three."""

PROVIDER_CHANNELS: Mapping[str, tuple[ChannelName, ...]] = {
    "twilio": ("whatsapp", "sms", "voice"),
    "vonage": ("sms", "voice"),
    "telegram": ("telegram",),
    "email": ("email",),
}
"""The channels each provider serves, providers in their default ranking (Twilio before
Vonage where both carry a channel); a provider serving several is one shared dependency
of all of them (its account probe, its credentials)."""

PhoneProvider = Literal["twilio", "vonage"]
"""Providers a deployment ranks inside a phone channel (``[channels.sms] providers``)."""


def providers_of(channel: str) -> tuple[str, ...]:
    """Every provider that can carry ``channel``, in the default ranking."""
    return tuple(name for name, served in PROVIDER_CHANNELS.items() if channel in served)


def lane_key(channel: str, provider: str, providers: int) -> str:
    """The name of one provider's lane in a channel (its breaker, its rate limit).

    A channel carried by one provider is its own lane, named as before providers were
    told apart (``sms``), so that the health and rate limits a store recorded carry on;
    a channel with several is split into ``sms.twilio`` and ``sms.vonage``.
    """
    return channel if providers <= 1 else f"{channel}.{provider}"
