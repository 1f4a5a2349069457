"""Settings in, the enabled providers and their channels out.

Each provider's code is imported only when it is enabled (python-telegram-bot and
httpx are about 35 MB of a process that never uses Telegram). What a provider
serves is listed once, in :data:`config.channels.PROVIDER_CHANNELS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from config.channels import PROVIDER_CHANNELS
from config.settings import Settings
from router.model.channel import Channel
from router.model.inbound import Endpoint, StatusSource, UpdateFeed
from router.model.outcome import Outcome

Probe = Callable[[], Awaitable[Outcome]]
# Enough connections for a broadcast's concurrency, without one socket per contact.
MAX_POOL = 256
TELEGRAM_POOL = 8
"""httpcore scans every pooled connection on each request, so a pool sized to the
concurrency costs more CPU than it saves; Telegram takes 30 messages a second anyway."""


class _Closable(Protocol):
    async def aclose(self) -> None: ...


@dataclass(slots=True)
class Providers:
    """The enabled channels, and what their providers share, probe and send back."""

    channels: dict[str, Channel] = field(default_factory=dict)
    shared: dict[str, Probe] = field(default_factory=dict)
    """A provider account behind several channels, by provider name, with its probe."""
    endpoints: list[Endpoint] = field(default_factory=list)
    feeds: list[UpdateFeed] = field(default_factory=list)
    statuses: dict[str, StatusSource] = field(default_factory=dict)
    """Channel -> where to ask for the status of its requests."""
    _resources: list[_Closable] = field(default_factory=list)

    @classmethod
    def of(cls, channels: Mapping[str, Channel]) -> Providers:
        """Channels built elsewhere (tests, embedding): nothing shared, nothing inbound."""
        return cls(channels=dict(channels))

    @property
    def dependencies(self) -> dict[str, list[str]]:
        """Channel -> the shared provider accounts it hangs on, with a health of their own."""
        return {
            channel: [provider]
            for provider in self.shared
            for channel in PROVIDER_CHANNELS.get(provider, ())
            if channel in self.channels
        }

    @property
    def probes(self) -> dict[str, Probe]:
        """One probe per thing that can fail on its own: a shared account covers its channels."""
        covered = set(self.dependencies)
        probes: dict[str, Probe] = dict(self.shared)
        for name, channel in self.channels.items():
            if name not in covered:
                probes[name] = channel.check
        return probes

    async def aclose(self) -> None:
        for channel in self.channels.values():
            await channel.aclose()
        for resource in self._resources:
            await resource.aclose()


def build_providers(settings: Settings) -> Providers:
    """Open every enabled provider. Call inside a running event loop (aiohttp needs one)."""
    pool = min(settings.routing.concurrency, MAX_POOL)
    built = Providers()
    phone = settings.channels
    if settings.twilio is not None and any(
        getattr(phone, name) is not None for name in PROVIDER_CHANNELS["twilio"]
    ):
        _add_twilio(built, settings, pool)
    if settings.telegram is not None:
        from channels.telegram.channel import TelegramChannel

        telegram = TelegramChannel(settings.telegram, pool_size=min(pool, TELEGRAM_POOL))
        built.channels["telegram"] = telegram
        secret = settings.webhooks.telegram_secret
        updates = telegram.updates(webhook_secret=secret.get_secret_value() if secret else None)
        built.feeds.append(updates)
        built.endpoints += updates.endpoints()
    if settings.email is not None:
        from channels.email.channel import EmailChannel

        built.channels["email"] = EmailChannel(settings.email)
    return built


def _add_twilio(built: Providers, settings: Settings, pool: int) -> None:
    from channels.twilio.account import TwilioAccount
    from channels.twilio.inbound import TwilioStatuses, TwilioWebhooks

    assert settings.twilio is not None
    phone = settings.channels
    account = TwilioAccount(
        settings.twilio, pool_size=pool,
        status_callback=settings.webhooks.url("/webhooks/twilio/status"),
        gather_url=settings.webhooks.url("/webhooks/twilio/gather"),
    )
    built.shared["twilio"] = account.check
    built._resources.append(account)
    built.endpoints += TwilioWebhooks(settings.twilio.auth_token.get_secret_value()).endpoints()
    statuses = TwilioStatuses(account)
    if phone.whatsapp is not None:
        from channels.twilio.whatsapp import WhatsAppChannel

        built.channels["whatsapp"] = WhatsAppChannel(
            account, phone.whatsapp.sender, content_sid=phone.whatsapp.content_sid
        )
    if phone.sms is not None:
        from channels.twilio.sms import SmsChannel

        built.channels["sms"] = SmsChannel(account, phone.sms.sender)
    if phone.voice is not None:
        from channels.twilio.voice import VoiceChannel

        built.channels["voice"] = VoiceChannel(
            account, phone.voice.sender, language=phone.voice.language, repeat=phone.voice.repeat,
        )
    for name in PROVIDER_CHANNELS["twilio"]:
        if name in built.channels:
            built.statuses[name] = statuses
