"""Deployment settings: a TOML file, overridable key by key from the environment.

``BACKCHANNEL_<SECTION>__<KEY>`` overrides ``[section] key``; unknown keys are
errors, credentials are ``SecretStr``, and a :class:`ConfigError` names the file
and the field but never the value.
"""

from __future__ import annotations

import codecs
import os
import stat
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from config.board import BoardSettings
from config.channels import PHONE_CHANNELS, PROVIDER_CHANNELS, ChannelName, providers_of
from config.contacts import ContactBook
from config.environment import (
    CONFIG_ENV,
    ENV_PREFIX,
    REPORTED_ELSEWHERE,
    EnvironmentSource,
    read_overrides,
    variable_for,
)
from config.incidents import IncidentSettings
from config.sections import (
    DEFAULT_LIMITS,
    DEFAULT_ORDER,
    ChannelLimitSettings,
    ChannelsSettings,
    DirectorySettings,
    EmailSettings,
    HealthSettings,
    LimitSettings,
    PhoneChannelSettings,
    RoutingSettings,
    StoreSettings,
    TelegramSettings,
    TwilioSettings,
    VonageSettings,
)
from config.templates import TemplateEntry, TemplateName
from config.twoway import EscalationSettings, WebhookSettings

__all__ = ["CONFIG_ENV", "ENV_PREFIX", "ConfigError", "ConfigFileMissing", "Settings",
           "load_settings", "settings_from_mapping"]  # fmt: skip
DEFAULT_CONFIG_NAME = "backchannel.toml"
UNKNOWN_MEMBERS_SHOWN = 20


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and fields, never values."""


class ConfigFileMissing(ConfigError):
    """No file at the config path; ``found_by`` says where the path came from (``option``,
    ``environment``: ``$BACKCHANNEL_CONFIG``, or ``default``: ``./backchannel.toml``), so
    that the CLI can say how to give one."""

    def __init__(self, path: Path, found_by: str) -> None:
        super().__init__(f"{path}: no such config file")
        self.path = path
        self.found_by = found_by


class Settings(BaseSettings):
    """Everything a deployment configures. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    twilio: TwilioSettings | None = None
    vonage: VonageSettings | None = None
    telegram: TelegramSettings | None = None
    email: EmailSettings | None = None
    channels: ChannelsSettings = Field(default_factory=ChannelsSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    limits: dict[ChannelName, ChannelLimitSettings] = Field(default_factory=dict)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    board: BoardSettings | None = None
    contacts: ContactBook = Field(default_factory=dict)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    directory: DirectorySettings = Field(default_factory=DirectorySettings)
    templates: dict[TemplateName, TemplateEntry] = Field(default_factory=dict)
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, so a secret can live outside it; read our
        # way (lists as a,b), not pydantic-settings' (JSON only, or a traceback).
        return (EnvironmentSource(settings_cls), init_settings)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for name in PHONE_CHANNELS:
            section: PhoneChannelSettings | None = getattr(self.channels, name)
            if section is not None:
                self._check_providers(name, section)
        for group, members in self.groups.items():
            if not members and not self.directory.files:
                # With contact files, only reading them tells (Directory.validate).
                raise _FieldError(f"groups.{group}", "is empty")
            unknown = [(i, member) for i, member in enumerate(members)
                       if member not in self.contacts]  # fmt: skip
            if len(unknown) == 1:
                index, member = unknown[0]
                raise _FieldError(f"groups.{group}[{index}]",
                                  f"names an unknown contact ({member!r})")  # fmt: skip
            if unknown:
                # A book that failed to load, or the wrong file: name enough to recognise.
                shown = ", ".join(repr(m) for _, m in unknown[:UNKNOWN_MEMBERS_SHOWN])
                more = len(unknown) - UNKNOWN_MEMBERS_SHOWN
                raise _FieldError(
                    f"groups.{group}",
                    f"names {len(unknown)} unknown contacts: {shown}"
                    + (f" and {more} more" if more > 0 else ""),
                )
            seen: set[str] = set()
            for index, member in enumerate(members):
                if member in seen:
                    # One delivery per contact and message: a repeat cannot be sent.
                    raise _FieldError(f"groups.{group}[{index}]", "names a contact twice")
                seen.add(member)
        owner = self.incidents.owner
        # A contact of the contact files is found when it is needed: loading the settings
        # never reads them.
        if owner is not None and owner not in self.contacts and not self.directory.files:
            raise _FieldError("incidents.owner", "names an unknown contact")
        return self

    def _check_providers(self, name: str, section: PhoneChannelSettings) -> None:
        """Each provider a phone channel names has its sender and its credentials."""
        where = f"channels.{name}"
        chosen = self.providers_for(name)
        if not chosen:
            raise _FieldError(f"{where}.sender", "is required (the Twilio number)")
        for index, provider in enumerate(chosen):
            if name not in PROVIDER_CHANNELS.get(provider, ()):
                raise _FieldError(f"{where}.providers[{index}]",
                                  f"{provider} does not carry {name}")
            if provider == "twilio":
                if section.sender is None:
                    raise _FieldError(f"{where}.sender", "is required: Twilio carries the channel")
                if self.twilio is None:
                    raise _FieldError("twilio", f"section is required: {where} is enabled")
            elif provider == "vonage":
                if section.vonage_sender is None:
                    raise _FieldError(f"{where}.vonage",
                                      "section is required: Vonage carries the channel")
                if self.vonage is None:
                    raise _FieldError("vonage", f"section is required: {where}.vonage is enabled")
                if name == "voice" and self.vonage.private_key is None:
                    raise _FieldError("vonage.application_id", "and vonage.private_key are"
                                      " required: Vonage carries the voice channel")

    def providers_for(self, channel: str) -> list[str]:
        """The providers carrying a channel, best first: ``providers`` if given, else every
        one configured for it in the default ranking (Twilio, then Vonage)."""
        if channel == "telegram":
            return ["telegram"] if self.telegram is not None else []
        if channel == "email":
            return ["email"] if self.email is not None else []
        section: PhoneChannelSettings | None = getattr(self.channels, channel, None)
        if section is None:
            return []
        if section.providers is not None:
            return list(section.providers)
        configured = {"twilio": section.sender is not None,
                      "vonage": section.vonage_sender is not None}
        return [name for name in providers_of(channel) if configured.get(name)]

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

    def limit_for(self, channel: str, provider: str | None = None) -> LimitSettings:
        """The configured limit, key by key over the provider's published default:
        ``[limits.<channel>]`` for every provider of the channel, then
        ``[limits.<channel>.<provider>]`` for that one."""
        name = channel if provider in (None, "twilio") else f"{channel}.{provider}"
        limit = DEFAULT_LIMITS.get(name, DEFAULT_LIMITS.get(channel, LimitSettings()))
        configured = next((v for k, v in self.limits.items() if k == channel), None)
        if configured is None:
            return limit
        layers = [configured.model_dump(exclude_unset=True, exclude={"twilio", "vonage"})]
        own = getattr(configured, provider, None) if provider in ("twilio", "vonage") else None
        if own is not None:
            layers.append(own.model_dump(exclude_unset=True))
        for layer in layers:
            limit = limit.model_copy(update=layer)
        return LimitSettings(**limit.model_dump())

    def secrets(self) -> list[str]:
        """Every credential value, for redaction from logs, errors and reports."""
        found: list[str] = []
        if self.twilio is not None:
            found.append(self.twilio.auth_token.get_secret_value())
        if self.vonage is not None:
            found.append(self.vonage.api_secret.get_secret_value())
            if self.vonage.signature_secret is not None:
                found.append(self.vonage.signature_secret.get_secret_value())
        if self.telegram is not None:
            token = self.telegram.bot_token.get_secret_value()
            found += [token, token.partition(":")[2]]
        if self.email is not None and self.email.password is not None:
            found.append(self.email.password.get_secret_value())
        if self.webhooks.telegram_secret is not None:
            found.append(self.webhooks.telegram_secret.get_secret_value())
        if self.board is not None:
            found += self.board.secrets()
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
    return _find_config(path)[0]


def _find_config(path: str | os.PathLike[str] | None) -> tuple[Path, str]:
    if path is not None:
        return Path(path), "option"
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env), "environment"
    return Path(DEFAULT_CONFIG_NAME), "default"


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read, validate and resolve the config file; raise :class:`ConfigError` on any problem
    (:class:`ConfigFileMissing` when there is no file)."""
    file, found_by = _find_config(path)
    try:
        text = _read_text(file)
    except FileNotFoundError:
        raise ConfigFileMissing(file, found_by) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{file}: not valid TOML: arrays or tables nested too deeply") from None
    return settings_from_mapping(data, source=str(file), base_dir=file.resolve().parent)


def _read_text(file: Path) -> str:
    """The file's text: a regular file (a FIFO or a device would block or never end),
    UTF-8 as TOML requires, with a byte order mark accepted (Windows editors write one)."""
    try:
        # Non-blocking: opening a FIFO for reading would wait for a writer.
        descriptor = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise  # load_settings says where the path came from
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a file")  # fmt: skip
        raise ConfigError(
            f"{file}: cannot read: {kind}, not a regular file (give the path of a TOML "
            "file; secrets can come from BACKCHANNEL_* variables)"
        )
    with os.fdopen(descriptor, "rb") as handle:
        try:
            raw = handle.read()
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[line_start:exc.start].decode("utf-8", "replace")) + 1
        raise ConfigError(
            f"{file}: not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line}, column "
            f"{column} (TOML files are UTF-8: save it as UTF-8, e.g. iconv -f latin1 -t utf-8)"
        ) from None


def settings_from_mapping(
    data: dict[str, Any], *, source: str = "<config>", base_dir: Path | None = None
) -> Settings:
    """Validate an already parsed config; relative paths resolve against ``base_dir``."""
    unreadable = [f"  {problem}" for problem in read_overrides(Settings, os.environ).problems]
    # The variables that cannot be read are left out of the build and listed with every
    # other problem.
    reporting = REPORTED_ELSEWHERE.set(True)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        described = describe_validation_error(exc, source)
        raise ConfigError("\n".join([described, *unreadable])) from None
    except _FieldError as exc:
        raise ConfigError("\n".join([f"{source}: {exc}", *unreadable])) from None
    finally:
        REPORTED_ELSEWHERE.reset(reporting)
    if unreadable:
        raise ConfigError("\n".join(["environment: invalid configuration", *unreadable]))
    if base_dir is not None:
        settings = _resolve_paths(settings, base_dir)
    email = settings.email
    if email is not None and email.ca_file is not None and not email.ca_file.is_file():
        # Found out later, the TLS library's error names no file.
        raise ConfigError(
            f"{source}: invalid configuration\n  email.ca_file: no such file: {email.ca_file}"
        )
    if settings.vonage is not None and settings.vonage.private_key is not None:
        problem = private_key_problem(settings.vonage.private_key)
        if problem is not None:
            raise ConfigError(f"{source}: invalid configuration\n  vonage.private_key: {problem}")
    return settings


def private_key_problem(path: Path) -> str | None:
    """Why a Vonage application key file cannot sign calls, or None. Never quotes it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return f"no such file: {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    # Imported here: only a deployment with Vonage voice pays for loading cryptography.
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        return f"{path} is not an unencrypted PEM private key"
    if not isinstance(key, RSAPrivateKey):
        return f"{path} is not an RSA private key (Vonage signs with RS256)"
    return None


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem, naming the field; pydantic's own text would echo the input."""
    lines = [f"{source}: invalid configuration"]
    for error in exc.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        if variable := variable_for(error["loc"]):
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
    vonage = settings.vonage
    if vonage is not None and vonage.private_key is not None and (
        not vonage.private_key.is_absolute()
    ):
        vonage = vonage.model_copy(update={"private_key": base_dir / vonage.private_key})
    directory = settings.directory.model_copy(
        update={"files": tuple(base_dir / file for file in settings.directory.files)}
    )
    return settings.model_copy(
        update={"store": store, "email": email, "vonage": vonage, "directory": directory}
    )
