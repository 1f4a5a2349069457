"""Channel name -> adapter, built from settings. Adapters are imported only when enabled."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from config.settings import Settings
from router.channel import Channel

if TYPE_CHECKING:
    from channels._twilio import TwilioAccount

# Enough connections for a broadcast's concurrency, without one socket per contact.
MAX_POOL = 256


@dataclass(slots=True)
class ChannelSet:
    """The enabled adapters, and the shared resources they hang on."""

    channels: dict[str, Channel] = field(default_factory=dict)
    twilio: TwilioAccount | None = None

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
        from channels._twilio import TwilioAccount

        built.twilio = TwilioAccount(settings.twilio, pool_size=pool)
        if phone.whatsapp is not None:
            from channels.whatsapp import WhatsAppChannel

            built.channels["whatsapp"] = WhatsAppChannel(
                built.twilio, phone.whatsapp.sender, content_sid=phone.whatsapp.content_sid
            )
        if phone.sms is not None:
            from channels.sms import SmsChannel

            built.channels["sms"] = SmsChannel(built.twilio, phone.sms.sender)
        if phone.voice is not None:
            from channels.voice import VoiceChannel

            built.channels["voice"] = VoiceChannel(
                built.twilio, phone.voice.sender,
                language=phone.voice.language, repeat=phone.voice.repeat,
            )
    if settings.telegram is not None:
        from channels.telegram import TelegramChannel

        built.channels["telegram"] = TelegramChannel(settings.telegram, pool_size=pool)
    if settings.email is not None:
        from channels.email import EmailChannel

        built.channels["email"] = EmailChannel(settings.email)
    return built
