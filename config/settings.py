"""Deployment settings: a TOML file, overridable key by key from the environment.

``BACKCHANNEL_<SECTION>__<KEY>`` overrides ``[section] key``; unknown keys are
errors, credentials are ``SecretStr``, and a :class:`ConfigError` names the file
and the field but never the value.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from config.channels import PHONE_CHANNELS, PROVIDER_CHANNELS, ChannelName
from config.contacts import ContactBook
from config.sections import (
    DEFAULT_LIMITS,
    DEFAULT_ORDER,
    ChannelsSettings,
    EmailSettings,
    HealthSettings,
    LimitSettings,
    RoutingSettings,
    StoreSettings,
    TelegramSettings,
    TwilioSettings,
)
from config.templates import TemplateEntry, TemplateName
from config.twoway import EscalationSettings, WebhookSettings

CONFIG_ENV = "BACKCHANNEL_CONFIG"
ENV_PREFIX = "BACKCHANNEL_"
DEFAULT_CONFIG_NAME = "backchannel.toml"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and fields, never values."""


class Settings(BaseSettings):
    """Everything a deployment configures. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    twilio: TwilioSettings | None = None
    telegram: TelegramSettings | None = None
    email: EmailSettings | None = None
    channels: ChannelsSettings = Field(default_factory=ChannelsSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    limits: dict[ChannelName, LimitSettings] = Field(default_factory=dict)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    contacts: ContactBook = Field(default_factory=dict)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    templates: dict[TemplateName, TemplateEntry] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, so a secret can live outside it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        twilio_users = [n for n in PROVIDER_CHANNELS["twilio"] if getattr(self.channels, n)]
        if twilio_users and self.twilio is None:
            raise _FieldError(
                "twilio", f"section is required: channels.{twilio_users[0]} is enabled"
            )
        for group, members in self.groups.items():
            if not members:
                raise _FieldError(f"groups.{group}", "is empty")
            seen: set[str] = set()
            for index, member in enumerate(members):
                if member not in self.contacts:
                    raise _FieldError(f"groups.{group}[{index}]", "names an unknown contact")
                if member in seen:
                    # One delivery per contact and message: a repeat cannot be sent.
                    raise _FieldError(f"groups.{group}[{index}]", "names a contact twice")
                seen.add(member)
        return self

    def enabled_channels(self) -> list[ChannelName]:
        """Enabled channels in the deployment's ranking, then any enabled but unranked."""
        enabled: set[ChannelName] = {
            name for name in PHONE_CHANNELS if getattr(self.channels, name) is not None
        }
        if self.telegram is not None:
            enabled.add("telegram")
        if self.email is not None:
            enabled.add("email")
        ranked = [name for name in self.routing.order if name in enabled]
        return ranked + [name for name in DEFAULT_ORDER if name in enabled and name not in ranked]

    def limit_for(self, channel: str) -> LimitSettings:
        """The configured limit, key by key over the provider's published default."""
        default = DEFAULT_LIMITS.get(channel, LimitSettings())
        configured = next((v for k, v in self.limits.items() if k == channel), None)
        if configured is None:
            return default
        return default.model_copy(update=configured.model_dump(exclude_unset=True))

    def secrets(self) -> list[str]:
        """Every credential value, for redaction from logs, errors and reports."""
        found: list[str] = []
        if self.twilio is not None:
            found.append(self.twilio.auth_token.get_secret_value())
        if self.telegram is not None:
            token = self.telegram.bot_token.get_secret_value()
            found += [token, token.partition(":")[2]]
        if self.email is not None and self.email.password is not None:
            found.append(self.email.password.get_secret_value())
        if self.webhooks.telegram_secret is not None:
            found.append(self.webhooks.telegram_secret.get_secret_value())
        if self.store.url is not None:
            password = urlsplit(self.store.url.get_secret_value()).password
            if password:
                found.append(password)
        return [secret for secret in found if len(secret) >= 4]


class _FieldError(ValueError):
    """A cross-field problem that still names one field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


def find_config(path: str | os.PathLike[str] | None = None) -> Path:
    """``--config PATH``, else ``$BACKCHANNEL_CONFIG``, else ``./backchannel.toml``."""
    if path is not None:
        return Path(path)
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    return Path(DEFAULT_CONFIG_NAME)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read, validate and resolve the config file; raise :class:`ConfigError` on any problem."""
    file = find_config(path)
    try:
        with file.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    return settings_from_mapping(data, source=str(file), base_dir=file.resolve().parent)


def settings_from_mapping(
    data: dict[str, Any], *, source: str = "<config>", base_dir: Path | None = None
) -> Settings:
    """Validate an already parsed config; relative paths resolve against ``base_dir``."""
    misspelt = _unknown_env_sections()
    if misspelt:
        # pydantic-settings silently skips these: a misspelt override would leave the
        # file's value (an old token) in use without a word.
        raise ConfigError(
            "environment: invalid configuration\n"
            + "\n".join(
                f"  {name}: unknown key (overrides are BACKCHANNEL_<SECTION>__<KEY>)"
                for name in misspelt
            )
        )
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from None
    except _FieldError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if base_dir is not None:
        settings = _resolve_paths(settings, base_dir)
    email = settings.email
    if email is not None and email.ca_file is not None and not email.ca_file.is_file():
        # Found out later, the TLS library's error names no file.
        raise ConfigError(
            f"{source}: invalid configuration\n  email.ca_file: no such file: {email.ca_file}"
        )
    return settings


def _unknown_env_sections() -> list[str]:
    """``BACKCHANNEL_*`` variables that name no section (nested keys pydantic checks)."""
    found = []
    for name in os.environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_ENV:
            continue
        section = upper.removeprefix(ENV_PREFIX).split("__", 1)[0].lower()
        if section not in Settings.model_fields:
            found.append(name)
    return sorted(found)


def _env_variable(location: tuple[str | int, ...]) -> str | None:
    """The environment variable that set this field, or a table holding it, if any."""
    present = {name.upper(): name for name in os.environ}
    parts = [str(part).upper() for part in location]
    for end in range(len(parts), 0, -1):
        name = ENV_PREFIX + "__".join(parts[:end])
        if name in present:
            return present[name]
    return None


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem, naming the field; pydantic's own text would echo the input."""
    lines = [f"{source}: invalid configuration"]
    for error in exc.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        if variable := _env_variable(error["loc"]):
            # The environment wins over the file: say where the bad value came from.
            message += f" (from ${variable})"
        lines.append(f"  {location}: {message}" if location else f"  {message}")
    return "\n".join(lines)


def _resolve_paths(settings: Settings, base_dir: Path) -> Settings:
    # cron, the CLI and a server started from anywhere must share one store file.
    store = settings.store
    if not store.path.is_absolute():
        store = store.model_copy(update={"path": base_dir / store.path})
    email = settings.email
    if email is not None and email.ca_file is not None and not email.ca_file.is_absolute():
        email = email.model_copy(update={"ca_file": base_dir / email.ca_file})
    return settings.model_copy(update={"store": store, "email": email})
