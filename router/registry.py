"""Channel name -> adapter, built from settings. Adapters are imported only when enabled."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from config.settings import Settings
from router.model.channel import Channel
from router.sending.probes import Probe

if TYPE_CHECKING:
    from telegram import Bot

    from channels.twilio.account import TwilioAccount

# Enough connections for a broadcast's concurrency, without one socket per contact.
MAX_POOL = 256
TWILIO_CHANNELS = ("whatsapp", "sms", "voice")
TELEGRAM_POOL = 8
"""httpcore scans every pooled connection on each request, so a pool sized to the
concurrency costs more CPU than it saves; Telegram takes 30 messages a second anyway."""


def probes_for(channels: Mapping[str, Channel], twilio: TwilioAccount | None) -> dict[str, Probe]:
    probes: dict[str, Probe] = {}
    if twilio is not None:
        probes["twilio"] = twilio.check
    for name, channel in channels.items():
        if twilio is None or name not in TWILIO_CHANNELS:
            probes[name] = channel.check
    return probes


@dataclass(slots=True)
class ChannelSet:
    """The enabled adapters, and the shared resources they hang on."""

    channels: dict[str, Channel] = field(default_factory=dict)
    twilio: TwilioAccount | None = None

    @property
    def dependencies(self) -> dict[str, list[str]]:
        """Channel -> shared dependencies with a health of their own."""
        return {name: ["twilio"] for name in TWILIO_CHANNELS if name in self.channels}

    @property
    def telegram_bot(self) -> Bot | None:
        channel = self.channels.get("telegram")
        return getattr(channel, "bot", None)

    @property
    def probes(self) -> dict[str, Probe]:
        """One probe per thing that can fail on its own: the Twilio account covers three."""
        return probes_for(self.channels, self.twilio)

    async def aclose(self) -> None:
        for channel in self.channels.values():
            await channel.aclose()
        if self.twilio is not None:
            await self.twilio.aclose()


def build_channels(settings: Settings) -> ChannelSet:
    """Open every enabled channel. Call inside a running event loop (aiohttp needs one)."""
    pool = min(settings.routing.concurrency, MAX_POOL)
    built = ChannelSet()
    phone = settings.channels
    if settings.twilio is not None and (phone.whatsapp or phone.sms or phone.voice):
        from channels.twilio.account import TwilioAccount

        built.twilio = TwilioAccount(
            settings.twilio, pool_size=pool,
            status_callback=settings.webhooks.url("/webhooks/twilio/status"),
            gather_url=settings.webhooks.url("/webhooks/twilio/gather"),
        )
        if phone.whatsapp is not None:
            from channels.twilio.whatsapp import WhatsAppChannel

            built.channels["whatsapp"] = WhatsAppChannel(
                built.twilio, phone.whatsapp.sender, content_sid=phone.whatsapp.content_sid
            )
        if phone.sms is not None:
            from channels.twilio.sms import SmsChannel

            built.channels["sms"] = SmsChannel(built.twilio, phone.sms.sender)
        if phone.voice is not None:
            from channels.twilio.voice import VoiceChannel

            built.channels["voice"] = VoiceChannel(
                built.twilio, phone.voice.sender,
                language=phone.voice.language, repeat=phone.voice.repeat,
            )
    if settings.telegram is not None:
        from channels.telegram.channel import TelegramChannel

        built.channels["telegram"] = TelegramChannel(
            settings.telegram, pool_size=min(pool, TELEGRAM_POOL)
        )
    if settings.email is not None:
        from channels.email.channel import EmailChannel

        built.channels["email"] = EmailChannel(settings.email)
    return built
