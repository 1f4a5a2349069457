"""The sections of the config file other than contacts, templates and two-way settings.

Each section is a frozen model that rejects unknown keys; credentials are ``SecretStr``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from config.channels import CHANNEL_NAMES, ChannelName, PhoneProvider
from config.contacts import Email, normalise_phone

DEFAULT_ORDER: list[ChannelName] = list(CHANNEL_NAMES)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoutingSettings(_Section):
    order: list[ChannelName] = Field(default_factory=lambda: list(DEFAULT_ORDER))
    concurrency: int = Field(default=64, ge=1, le=10_000)
    """Contacts handled at once by a broadcast."""
    tries_per_channel: int = Field(default=3, ge=1, le=20)
    """Requests per channel while failures are transient (certainly not sent)."""
    retry_backoff: float = Field(default=0.5, ge=0)
    """First wait between transient retries, in seconds; doubles each time."""
    max_retry_after: float = Field(default=30.0, ge=0)
    """A provider asking us to wait longer than this makes the router fail over instead."""
    on_unknown: Literal["next", "stop"] = "next"
    """After an attempt that may have been sent: try the next channel, or stop there."""
    confirm_above: int = Field(default=50, ge=0)
    """A CLI broadcast to more contacts than this asks first (``--yes`` skips the question)."""

    @field_validator("order")
    @classmethod
    def _no_repeats(cls, order: list[ChannelName]) -> list[ChannelName]:
        if len(set(order)) != len(order):
            raise ValueError("names a channel twice")
        if not order:
            raise ValueError("must name at least one channel")
        return order


class TwilioSettings(_Section):
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr
    api_base: AnyHttpUrl = AnyHttpUrl("https://api.twilio.com")
    timeout: float = Field(default=15.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)


SignatureMethod = Literal["md5hash", "md5", "sha1", "sha256", "sha512"]


class VonageSettings(_Section):
    """One Vonage account: SMS (API key and secret) and voice (an application's key)."""

    api_key: str = Field(pattern=r"^[0-9A-Za-z]{8}$")
    api_secret: SecretStr
    signature_secret: SecretStr | None = None
    """Verifies Vonage's signed webhooks (SMS receipts and replies, voice events)."""
    signature_method: SignatureMethod | None = None
    """As set in Vonage's dashboard for signed SMS webhooks; required with signature_secret."""
    application_id: str | None = Field(
        default=None, pattern=r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$"
    )
    """The voice application (a UUID)."""
    private_key: Path | None = None
    """The voice application's private key (PEM), relative to the config file."""
    api_base: AnyHttpUrl = AnyHttpUrl("https://rest.nexmo.com")
    voice_api_base: AnyHttpUrl = AnyHttpUrl("https://api.nexmo.com")
    low_balance: float = Field(default=5.0, ge=0)
    """Below this (in the account's currency) ``status`` warns; at zero the account is down."""
    timeout: float = Field(default=15.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _pairs(self) -> VonageSettings:
        if (self.signature_secret is None) != (self.signature_method is None):
            raise ValueError("signature_secret and signature_method must be given together")
        if (self.application_id is None) != (self.private_key is None):
            raise ValueError("application_id and private_key must be given together")
        return self


class TelegramSettings(_Section):
    bot_token: SecretStr
    api_base: AnyHttpUrl = AnyHttpUrl("https://api.telegram.org")
    timeout: float = Field(default=15.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)

    @field_validator("bot_token")
    @classmethod
    def _token_shape(cls, token: SecretStr) -> SecretStr:
        bot_id, _, secret = token.get_secret_value().partition(":")
        if not bot_id.isdigit() or len(secret) < 20:
            raise ValueError("does not look like a bot token from @BotFather (digits:secret)")
        return token


class EmailSettings(_Section):
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    sender: Email
    starttls: bool = True
    use_tls: bool = False
    """Implicit TLS from the first byte (port 465), instead of STARTTLS."""
    ca_file: Path | None = None
    """Extra CA certificate to trust, for a relay with a private certificate."""
    timeout: float = Field(default=15.0, gt=0)
    sessions: int = Field(default=4, ge=1, le=64)
    """Persistent SMTP sessions kept open; one session is capped by round trips."""

    @model_validator(mode="after")
    def _credentials_pair(self) -> EmailSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password must be given together")
        return self

    @property
    def tls_mode(self) -> Literal["implicit", "starttls", "none"]:
        if self.use_tls:
            return "implicit"
        return "starttls" if self.starttls else "none"


class VonageNumber(_Section):
    """``[channels.voice.vonage]``: the Vonage number calls come from."""

    sender: str

    @field_validator("sender", mode="before")
    @classmethod
    def _sender_is_a_number(cls, value: object) -> str:
        return normalise_phone(value)


class VonageSmsSender(_Section):
    """``[channels.sms.vonage]``: a Vonage number, or an alphanumeric sender id where the
    destination country allows one (up to 11 letters and digits)."""

    sender: str

    @field_validator("sender", mode="before")
    @classmethod
    def _number_or_sender_id(cls, value: object) -> str:
        if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9 ]{1,11}", value.strip()) and (
            re.search(r"[A-Za-z]", value)
        ):
            return value.strip()
        return normalise_phone(value)


class PhoneChannelSettings(_Section):
    sender: str | None = None
    """The Twilio number (or ``whatsapp:`` sender) messages come from; needed when Twilio
    carries the channel."""
    providers: list[PhoneProvider] | None = None
    """The providers carrying the channel, best first; default: every configured one,
    Twilio first."""

    @field_validator("sender", mode="before")
    @classmethod
    def _sender_is_a_number(cls, value: object) -> str | None:
        return None if value is None else normalise_phone(value)

    @field_validator("providers")
    @classmethod
    def _no_repeats(cls, providers: list[PhoneProvider] | None) -> list[PhoneProvider] | None:
        if providers is not None and len(set(providers)) != len(providers):
            raise ValueError("names a provider twice")
        if providers is not None and not providers:
            raise ValueError("must name at least one provider")
        return providers

    @property
    def vonage_sender(self) -> str | None:
        """The Vonage sender, where Vonage may carry this channel."""
        return None


class WhatsAppSettings(PhoneChannelSettings):
    content_sid: str | None = Field(default=None, pattern=r"^HX[0-9a-fA-F]{32}$")
    """Approved template whose variable ``1`` carries the text; needed outside the 24 h window."""


class SmsSettings(PhoneChannelSettings):
    vonage: VonageSmsSender | None = None

    @property
    def vonage_sender(self) -> str | None:
        return None if self.vonage is None else self.vonage.sender


class VoiceSettings(PhoneChannelSettings):
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")
    """Language of the spoken text, such as ``fr-FR``."""
    repeat: int = Field(default=2, ge=1, le=5)
    """Times the text is read out: people miss the start of a call."""
    vonage: VonageNumber | None = None

    @property
    def vonage_sender(self) -> str | None:
        return None if self.vonage is None else self.vonage.sender


class ChannelsSettings(_Section):
    whatsapp: WhatsAppSettings | None = None
    sms: SmsSettings | None = None
    voice: VoiceSettings | None = None


class HealthSettings(_Section):
    """When a channel is taken out of the route, and how it comes back."""

    failure_threshold: int = Field(default=3, ge=1)
    """Consecutive channel-scope failures that open the breaker."""
    error_rate: float = Field(default=0.5, gt=0, le=1)
    """Or this share of failures over ``error_window`` seconds..."""
    error_window: float = Field(default=60.0, gt=0)
    min_requests: int = Field(default=10, ge=1)
    """...once at least this many requests were made in the window."""
    cooldown: float = Field(default=5.0, gt=0)
    """First wait before a trial; doubles while the channel keeps failing."""
    max_cooldown: float = Field(default=300.0, gt=0)
    jitter: float = Field(default=0.25, ge=0, lt=1)
    """Trials come up to this share of the cool-down early, so processes do not align."""
    trial_timeout: float = Field(default=60.0, gt=0)
    """A trial that has not answered by then no longer blocks a new one."""
    probe_interval: float = Field(default=60.0, gt=0)
    """Seconds between probe rounds in long-lived routers."""
    background_probes: bool = False
    """Probe in the background inside ``async with router`` (the server always does)."""
    refresh_interval: float = Field(default=2.0, gt=0)
    """How often a running router reads the state other processes wrote."""

    @model_validator(mode="after")
    def _cooldowns_ordered(self) -> HealthSettings:
        if self.max_cooldown < self.cooldown:
            raise ValueError("max_cooldown must be at least cooldown")
        return self


class LimitSettings(_Section):
    """A provider's rate limit for one channel; ``[limits.<channel>]``."""

    per_second: float | None = Field(default=None, gt=0)
    per_recipient_per_second: float | None = Field(default=None, gt=0)
    burst: int = Field(default=1, ge=1)


class ChannelLimitSettings(LimitSettings):
    """``[limits.<channel>]`` applies to every provider of the channel (for SMS and voice,
    Twilio's as it always did); ``[limits.<channel>.<provider>]`` to one provider only."""

    twilio: LimitSettings | None = None
    vonage: LimitSettings | None = None


# Published provider limits: Telegram about 30 messages/s per bot and 1/s per chat;
# a Twilio long code about 1 message/s and 1 call/s (raise them with a Messaging
# Service or short code); WhatsApp senders start at 80 messages/s; Vonage's SMS API
# takes 30 requests/s per API key, and its Voice API about 3 new calls/s.
DEFAULT_LIMITS: dict[str, LimitSettings] = {
    "whatsapp": LimitSettings(per_second=80),
    "telegram": LimitSettings(per_second=30, per_recipient_per_second=1),
    "sms": LimitSettings(per_second=1),
    "voice": LimitSettings(per_second=1),
    "sms.vonage": LimitSettings(per_second=30),
    "voice.vonage": LimitSettings(per_second=3),
}


class StoreSettings(_Section):
    path: Path = Path("backchannel.db")
    """SQLite, the embedded default: one machine."""
    url: SecretStr | None = None
    """``postgresql://user:password@host/db``: several instances share it (a secret: the
    password may be in it)."""
    lease: float = Field(default=15.0, ge=1.0, le=3600.0)
    """Seconds without a heartbeat after which a message's owner counts as gone and its
    work may be taken over; the owner itself stops sending after two thirds of it."""

    @field_validator("url")
    @classmethod
    def _postgres(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("must be a postgresql:// URL")
        return url


class DirectorySettings(_Section):
    """``[directory]``: contact files read after ``[contacts]``, CSV with a header naming
    a contact's fields (and ``groups``). Paths are relative to the config file. Loading the
    settings never opens them: :class:`config.directory.Directory` does, when the book is
    needed."""

    files: tuple[Path, ...] = ()

    @field_validator("files")
    @classmethod
    def _no_repeats(cls, files: tuple[Path, ...]) -> tuple[Path, ...]:
        if len(set(files)) != len(files):
            raise ValueError("names a file twice")
        if any(not str(file).strip() or file == Path() for file in files):
            raise ValueError("names an empty path")
        return files
