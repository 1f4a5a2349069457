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
    "telegram": ("telegram",),
    "email": ("email",),
}
"""The channels each provider serves; a provider serving several is one shared
dependency of all of them (its account probe, its credentials)."""
