"""Settings in, the enabled providers and the channels they carry out.

Each provider's code is imported only when it is enabled (python-telegram-bot and
httpx are about 35 MB of a process that never uses Telegram). What a provider
serves is listed once, in :data:`config.channels.PROVIDER_CHANNELS`; which providers
carry a channel, and in what order, the settings say (``Settings.providers_for``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from config.channels import lane_key
from config.settings import Settings
from router.model.channel import Channel, Lane
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
    """The enabled channels, the providers carrying each, and what those providers
    share, probe and send back."""

    lanes: dict[str, tuple[Lane, ...]] = field(default_factory=dict)
    """Channel -> the providers carrying it, best first."""
    adapters: dict[str, Channel] = field(default_factory=dict)
    """Lane key -> the adapter that sends on it."""
    shared: dict[str, Probe] = field(default_factory=dict)
    """A provider account behind several lanes, by provider name, with its probe."""
    endpoints: list[Endpoint] = field(default_factory=list)
    feeds: list[UpdateFeed] = field(default_factory=list)
    statuses: dict[str, StatusSource] = field(default_factory=dict)
    """Provider -> where to ask for the status of its requests."""
    _resources: list[_Closable] = field(default_factory=list)

    @classmethod
    def of(cls, channels: Mapping[str, Channel | Sequence[Channel]]) -> Providers:
        """Channels built elsewhere (tests, embedding): nothing shared, nothing inbound.
        A channel given several adapters is carried by each in turn; an adapter names
        its provider with a ``provider`` attribute (else the channel's name is used)."""
        built = cls()
        for name, given in channels.items():
            adapters = list(given) if isinstance(given, Sequence) else [given]
            for adapter in adapters:
                provider = str(getattr(adapter, "provider", name))
                built.add(name, provider, adapter, providers=len(adapters))
        return built

    def add(self, channel: str, provider: str, adapter: Channel, *, providers: int) -> None:
        """One more provider for ``channel`` (after those added before)."""
        key = lane_key(channel, provider, providers)
        self.lanes[channel] = (*self.lanes.get(channel, ()),
                               Lane(channel, provider, key, adapter.capabilities))
        self.adapters[key] = adapter

    @property
    def channels(self) -> dict[str, Channel]:
        """Channel -> the adapter of its first provider (for what needs one per channel)."""
        return {name: self.adapters[lanes[0].key] for name, lanes in self.lanes.items()}

    @property
    def dependencies(self) -> dict[str, list[str]]:
        """Lane -> the shared provider accounts it hangs on, with a health of their own."""
        return {lane.key: [lane.provider] for lanes in self.lanes.values() for lane in lanes
                if lane.provider in self.shared}

    @property
    def split(self) -> dict[str, list[str]]:
        """Channel -> its lanes, for channels carried by several providers."""
        return {name: [lane.key for lane in lanes] for name, lanes in self.lanes.items()
                if len(lanes) > 1}

    @property
    def probes(self) -> dict[str, Probe]:
        """One probe per thing that can fail on its own: a shared account covers its lanes."""
        covered = set(self.dependencies)
        probes: dict[str, Probe] = dict(self.shared)
        for key, adapter in self.adapters.items():
            if key not in covered:
                probes[key] = adapter.check
        return probes

    async def aclose(self) -> None:
        for adapter in self.adapters.values():
            await adapter.aclose()
        for resource in self._resources:
            await resource.aclose()


def build_providers(settings: Settings) -> Providers:
    """Open every enabled provider. Call inside a running event loop (aiohttp needs one)."""
    pool = min(settings.routing.concurrency, MAX_POOL)
    built = Providers()
    phone = {name: settings.providers_for(name) for name in ("whatsapp", "sms", "voice")}
    twilio = _twilio(built, settings, pool) if any("twilio" in p for p in phone.values()) \
        else None
    vonage = _vonage(built, settings, pool) if any("vonage" in p for p in phone.values()) \
        else None
    for channel, providers in phone.items():
        for provider in providers:
            opened = twilio if provider == "twilio" else vonage
            assert opened is not None
            built.add(channel, provider, opened[channel], providers=len(providers))
    if settings.telegram is not None:
        from channels.telegram.channel import TelegramChannel

        telegram = TelegramChannel(settings.telegram, pool_size=min(pool, TELEGRAM_POOL))
        built.add("telegram", "telegram", telegram, providers=1)
        secret = settings.webhooks.telegram_secret
        updates = telegram.updates(webhook_secret=secret.get_secret_value() if secret else None)
        built.feeds.append(updates)
        built.endpoints += updates.endpoints()
    if settings.email is not None:
        from channels.email.channel import EmailChannel

        built.add("email", "email", EmailChannel(settings.email), providers=1)
    return built


def _twilio(built: Providers, settings: Settings, pool: int) -> dict[str, Channel]:
    """The Twilio account and the adapters of the channels it carries."""
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
    built.statuses["twilio"] = TwilioStatuses(account)
    adapters: dict[str, Channel] = {}
    if phone.whatsapp is not None and phone.whatsapp.sender is not None:
        from channels.twilio.whatsapp import WhatsAppChannel

        adapters["whatsapp"] = WhatsAppChannel(
            account, phone.whatsapp.sender, content_sid=phone.whatsapp.content_sid
        )
    if phone.sms is not None and phone.sms.sender is not None:
        from channels.twilio.sms import SmsChannel

        adapters["sms"] = SmsChannel(account, phone.sms.sender)
    if phone.voice is not None and phone.voice.sender is not None:
        from channels.twilio.voice import VoiceChannel

        adapters["voice"] = VoiceChannel(
            account, phone.voice.sender, language=phone.voice.language, repeat=phone.voice.repeat,
        )
    return adapters


def _vonage(built: Providers, settings: Settings, pool: int) -> dict[str, Channel]:
    """The Vonage account and the adapters of the channels it carries."""
    from channels.vonage.account import VonageAccount
    from channels.vonage.inbound import VonageStatuses, VonageWebhooks
    from channels.vonage.sms import VonageSmsChannel
    from channels.vonage.voice import VonageVoiceChannel

    vonage = settings.vonage
    assert vonage is not None
    phone = settings.channels
    account = VonageAccount(
        vonage, pool_size=pool,
        sms_callback=settings.webhooks.url("/webhooks/vonage/sms/status"),
        voice_events=settings.webhooks.url("/webhooks/vonage/voice/event"),
    )
    built.shared["vonage"] = account.check
    built._resources.append(account)
    secret = vonage.signature_secret
    built.endpoints += VonageWebhooks(
        secret.get_secret_value() if secret else None, vonage.signature_method
    ).endpoints()
    adapters: dict[str, Channel] = {}
    if phone.sms is not None and phone.sms.vonage is not None:
        adapters["sms"] = VonageSmsChannel(account, phone.sms.vonage.sender)
    voice: VonageVoiceChannel | None = None
    if phone.voice is not None and phone.voice.vonage is not None:
        voice = VonageVoiceChannel(account, phone.voice.vonage.sender,
                                   language=phone.voice.language, repeat=phone.voice.repeat)
        adapters["voice"] = voice
    built.statuses["vonage"] = VonageStatuses(voice)
    return adapters
