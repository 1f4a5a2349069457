"""Config loading: error messages that name the field (never the value), normalisation
of addresses, environment overrides, and paths relative to the config file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from config.settings import (
    ConfigError,
    ConfigFileMissing,
    Settings,
    find_config,
    load_settings,
    settings_from_mapping,
)

TWILIO_TOKEN = "CANARYtwilio0000000000000000000f"
BOT_SECRET = "CANARYbotSecret_abcdefghijklmnop"
BOT_TOKEN = f"4242424242:{BOT_SECRET}"
SMTP_PASSWORD = "CANARYsmtp-password"
SECRETS = (TWILIO_TOKEN, BOT_TOKEN, BOT_SECRET, SMTP_PASSWORD, "CANARY")


@pytest.fixture(autouse=True)
def no_backchannel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: start every test without BACKCHANNEL_* variables."""
    for name in list(os.environ):
        if name.upper().startswith("BACKCHANNEL_"):
            monkeypatch.delenv(name)


def config(**changes: Any) -> dict[str, Any]:
    """A complete, valid config; each keyword replaces (or with None removes) a section."""
    data: dict[str, Any] = {
        "routing": {"order": ["whatsapp", "telegram", "sms", "voice", "email"]},
        "twilio": {"account_sid": "AC" + "a1" * 16, "auth_token": TWILIO_TOKEN},
        "telegram": {"bot_token": BOT_TOKEN},
        "email": {"host": "smtp.example.com", "username": "alerts",
                  "password": SMTP_PASSWORD, "sender": "alerts@example.com"},
        "channels": {"whatsapp": {"sender": "whatsapp:+14155238886"},
                     "sms": {"sender": "+15005550006"}, "voice": {"sender": "+15005550006"}},
        "contacts": {"alice": {"phone": "+33612345678", "telegram": 123456789,
                               "email": "alice@example.com"},
                     "bob": {"phone": "+14155552671"}},
        "groups": {"ops": ["alice", "bob"]},
    }  # fmt: skip
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def with_contact(**fields: Any) -> dict[str, Any]:
    return config(contacts={"alice": fields}, groups={"ops": ["alice"]})


def error_of(data: dict[str, Any], source: str = "backchannel.toml") -> str:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(data, source=source)
    return str(caught.value)


# -- valid configs ----------------------------------------------------------------------


def test_a_full_config_loads() -> None:
    settings = settings_from_mapping(config())
    assert settings.enabled_channels() == ["whatsapp", "telegram", "sms", "voice", "email"]
    assert settings.twilio is not None
    assert settings.twilio.auth_token.get_secret_value() == TWILIO_TOKEN
    # Secrets never show in the model's own repr.
    assert all(secret not in repr(settings) for secret in SECRETS)
    assert set(settings.secrets()) == {TWILIO_TOKEN, BOT_TOKEN, BOT_SECRET, SMTP_PASSWORD}


def test_only_configured_channels_are_enabled() -> None:
    data = config(twilio=None, channels={}, email=None)
    settings = settings_from_mapping(data)
    assert settings.enabled_channels() == ["telegram"]


# -- errors name the field, never the value ---------------------------------------------

ERROR_CASES: list[tuple[str, Callable[[], dict[str, Any]], tuple[str, ...]]] = [
    ("phone-too-short", lambda: with_contact(phone="+33 6 12"),
     ("contacts.alice.phone: is not a valid phone number",)),
    ("phone-national-format", lambda: with_contact(phone="06 12 34 56 78"),
     ("contacts.alice.phone: must be in international format",)),
    ("phone-not-a-string", lambda: with_contact(phone=33612345678),
     ("contacts.alice.phone: must be a phone number",)),
    ("sms-number-invalid", lambda: with_contact(sms="+1 555 0100", email="a@example.com"),
     ("contacts.alice.sms: is not a valid phone number",)),
    ("email-crlf", lambda: with_contact(email="alice@example.com\r\nBcc: eve@example.com"),
     ("contacts.alice.email: must not contain line breaks",)),
    ("email-lf", lambda: with_contact(email="alice@example.com\n"),
     ("contacts.alice.email: must not contain line breaks",)),
    ("email-invalid", lambda: with_contact(email="alice at example.com"),
     ("contacts.alice.email: is not a valid email address",)),
    ("telegram-username", lambda: with_contact(telegram="@alice"),
     ("contacts.alice.telegram: must be a numeric Telegram chat id",)),
    ("telegram-bool", lambda: with_contact(telegram=True),
     ("contacts.alice.telegram: must be a numeric Telegram chat id",)),
    ("contact-without-address", lambda: with_contact(),
     ("contacts.alice: has no address",)),
    ("contact-unknown-key", lambda: with_contact(phone="+33612345678", fax="+33140000000"),
     ("contacts.alice.fax: unknown key",)),
    ("contact-order-unknown-channel", lambda: with_contact(phone="+33612345678",
                                                           order=["sms", "pigeon"]),
     ("contacts.alice.order.1:",)),
    ("contact-order-repeats", lambda: with_contact(phone="+33612345678", order=["sms", "sms"]),
     ("contacts.alice.order: names a channel twice",)),
    ("group-unknown-member", lambda: config(groups={"ops": ["alice", "zed"]}),
     ("groups.ops[1]: names an unknown contact",)),
    ("group-repeats-a-contact", lambda: config(groups={"ops": ["alice", "bob", "alice"]}),
     ("groups.ops[2]: names a contact twice",)),
    ("group-empty", lambda: config(groups={"ops": []}), ("groups.ops: is empty",)),
    ("routing-unknown-channel", lambda: config(routing={"order": ["whatsapp", "fax"]}),
     ("routing.order.1:",)),
    ("routing-repeats", lambda: config(routing={"order": ["sms", "sms"]}),
     ("routing.order: names a channel twice",)),
    ("routing-empty", lambda: config(routing={"order": []}),
     ("routing.order: must name at least one channel",)),
    ("unknown-top-level-key", lambda: config(bogus=1), ("bogus: unknown key",)),
    ("unknown-section-key", lambda: config(twilio={"account_sid": "AC" + "0" * 32,
                                                   "auth_token": TWILIO_TOKEN, "region": "ie1"}),
     ("twilio.region: unknown key",)),
    ("unknown-channel-section", lambda: config(channels={"fax": {"sender": "+15005550006"}}),
     ("channels.fax: unknown key",)),
    ("twilio-token-missing", lambda: config(twilio={"account_sid": "AC" + "0" * 32}),
     ("twilio.auth_token: Field required",)),
    ("twilio-section-missing", lambda: config(twilio=None),
     ("twilio: section is required: channels.whatsapp is enabled",)),
    ("telegram-token-missing", lambda: config(telegram={"api_base": "http://127.0.0.1:1"}),
     ("telegram.bot_token: Field required",)),
    ("smtp-password-missing", lambda: config(email={"host": "smtp.example.com",
                                                    "username": "alerts",
                                                    "sender": "alerts@example.com"}),
     ("email: username and password must be given together",)),
    ("account-sid-shape", lambda: config(twilio={"account_sid": "AC123",
                                                 "auth_token": TWILIO_TOKEN}),
     ("twilio.account_sid:",)),
    ("whatsapp-sender-invalid", lambda: config(channels={"whatsapp": {"sender": "whatsapp:me"}}),
     ("channels.whatsapp.sender: must be in international format",)),
    ("sms-sender-invalid", lambda: config(channels={"sms": {"sender": "+1 555 0100"}}),
     ("channels.sms.sender: is not a valid phone number",)),
    # The secret itself is the bad value: the message must still not repeat it.
    ("bot-token-shape", lambda: config(telegram={"bot_token": f"bot-{BOT_SECRET}"}),
     ("telegram.bot_token: does not look like a bot token",)),
    ("token-of-wrong-type", lambda: config(twilio={"account_sid": "AC" + "0" * 32,
                                                   "auth_token": TWILIO_TOKEN,
                                                   "timeout": TWILIO_TOKEN}),
     ("twilio.timeout:",)),
    ("password-of-wrong-type", lambda: config(email={"host": "smtp.example.com",
                                                     "username": "alerts",
                                                     "password": SMTP_PASSWORD,
                                                     "port": SMTP_PASSWORD,
                                                     "sender": "alerts@example.com"}),
     ("email.port:",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutated", "expected"),
    [pytest.param(build, expected, id=name) for name, build, expected in ERROR_CASES],
)
def test_errors_name_the_field_and_not_the_secret(
    mutated: Callable[[], dict[str, Any]], expected: tuple[str, ...]
) -> None:
    message = error_of(mutated())
    assert message.startswith("backchannel.toml: "), message
    for words in expected:
        assert words in message, message
    assert [secret for secret in SECRETS if secret in message] == []


def test_every_problem_is_listed_one_per_line() -> None:
    data = config(
        bogus=True,
        twilio={"account_sid": "AC1", "auth_token": TWILIO_TOKEN},
        contacts={"alice": {"phone": "+1 555 0100", "telegram": "@alice"}},
        groups={"ops": ["alice"]},
    )
    lines = error_of(data, source="/etc/backchannel.toml").splitlines()
    assert lines[0] == "/etc/backchannel.toml: invalid configuration"
    fields = sorted(line.strip().partition(":")[0] for line in lines[1:])
    assert fields == [
        "bogus", "contacts.alice.phone", "contacts.alice.telegram", "twilio.account_sid"
    ]


def test_input_values_are_not_echoed() -> None:
    """pydantic's own text quotes the input; ours must not, whatever the field."""
    data = with_contact(phone="+33 CANARY", email="CANARY\r\n@example.com", telegram="CANARY")
    message = error_of(data)
    assert "CANARY" not in message
    assert "contacts.alice.phone" in message and "contacts.alice.telegram" in message


# -- normalisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    ["+33 6 12 34 56 78", "0033 6 12 34 56 78", "+33612345678", " +33 (0)6 12 34 56 78 ",
     "whatsapp:+33612345678", "+33.6.12.34.56.78"],
)  # fmt: skip
def test_phone_numbers_become_e164(written: str) -> None:
    settings = settings_from_mapping(with_contact(phone=written))
    contact = settings.contacts["alice"]
    assert contact.name == "alice"
    assert dict(contact.addresses) == {
        "whatsapp": "+33612345678", "sms": "+33612345678", "voice": "+33612345678"
    }


def test_per_channel_numbers_override_the_shorthand() -> None:
    settings = settings_from_mapping(
        with_contact(phone="+33612345678", voice="+44 20 7946 0958", whatsapp="0033623456789")
    )
    addresses = dict(settings.contacts["alice"].addresses)
    assert addresses == {
        "whatsapp": "+33623456789", "sms": "+33612345678", "voice": "+442079460958"
    }


@pytest.mark.parametrize(
    ("written", "normalised"),
    [("alice@example.com", "alice@example.com"), ("Alice@EXAMPLE.com", "Alice@example.com"),
     ("ops@Sub.Example.ORG", "ops@sub.example.org")],
)  # fmt: skip
def test_email_addresses_are_normalised(written: str, normalised: str) -> None:
    settings = settings_from_mapping(with_contact(email=written))
    assert settings.contacts["alice"].address("email") == normalised


@pytest.mark.parametrize(
    ("written", "normalised"),
    [("ops@corp.local", "ops@corp.local"), ("Ops@Relay.Corp.INTERNAL", "Ops@relay.corp.internal"),
     ("oncall@office.lan", "oncall@office.lan"), ("me@nas.home.arpa", "me@nas.home.arpa"),
     ("ops@corp.local.", "ops@corp.local")],
)  # fmt: skip
def test_email_on_internal_domains_is_accepted(written: str, normalised: str) -> None:
    """Companies run relays for .local, .internal, .lan and home.arpa mailboxes; the sender
    may be on one too."""
    data = with_contact(email=written)
    data["email"]["sender"] = written
    settings = settings_from_mapping(data)
    assert settings.contacts["alice"].address("email") == normalised
    assert settings.email is not None and settings.email.sender == normalised


@pytest.mark.parametrize("written", ["ops@local", "ops@corp.test", "ops@host.onion",
                                     "ops@@corp.local", "o ps@corp.local", "ops@-x.local"])
def test_other_special_use_or_broken_addresses_are_refused(written: str) -> None:
    assert "contacts.alice.email: is not a valid email address" in error_of(
        with_contact(email=written))


@pytest.mark.parametrize(("written", "chat"), [(123456789, 123456789), ("987654321", 987654321),
                                                (" -1001234567890 ", -1001234567890)])
def test_chat_ids_from_numbers_or_numeric_strings(written: object, chat: int) -> None:
    settings = settings_from_mapping(with_contact(telegram=written))
    assert dict(settings.contacts["alice"].addresses) == {"telegram": str(chat)}


def test_chat_id_from_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKCHANNEL_CONTACTS__ALICE__TELEGRAM", "-1001234567890")
    settings = settings_from_mapping(with_contact(phone="+33612345678"))
    assert settings.contacts["alice"].address("telegram") == "-1001234567890"
    assert settings.contacts["alice"].address("sms") == "+33612345678"


def test_bad_chat_id_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKCHANNEL_CONTACTS__ALICE__TELEGRAM", "@alice")
    message = error_of(with_contact(phone="+33612345678"))
    assert "contacts.alice.telegram: must be a numeric Telegram chat id" in message
    assert "BACKCHANNEL_CONTACTS__ALICE__TELEGRAM" in message
    assert "@alice" not in message


@pytest.mark.parametrize("sender", ["whatsapp:+14155238886", "+14155238886", "+1 415 523 8886"])
def test_whatsapp_sender_accepts_the_whatsapp_prefix(sender: str) -> None:
    settings = settings_from_mapping(config(channels={"whatsapp": {"sender": sender}}))
    assert settings.channels.whatsapp is not None
    assert settings.channels.whatsapp.sender == "+14155238886"


# -- the environment ----------------------------------------------------------------------


def test_env_overrides_a_file_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKCHANNEL_TWILIO__AUTH_TOKEN", "from-the-environment")
    monkeypatch.setenv("BACKCHANNEL_ROUTING__TRIES_PER_CHANNEL", "5")
    settings = settings_from_mapping(config())
    assert settings.twilio is not None
    assert settings.twilio.auth_token.get_secret_value() == "from-the-environment"
    assert settings.twilio.account_sid == "AC" + "a1" * 16  # the rest of the section stays
    assert settings.routing.tries_per_channel == 5
    assert "from-the-environment" in settings.secrets()


def test_env_can_supply_a_missing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKCHANNEL_EMAIL__PASSWORD", SMTP_PASSWORD)
    data = config()
    del data["email"]["password"]
    settings = settings_from_mapping(data)
    assert settings.email is not None and settings.email.password is not None
    assert settings.email.password.get_secret_value() == SMTP_PASSWORD


def test_unknown_key_from_env_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKCHANNEL_TWILIO__BOGUS", TWILIO_TOKEN)
    message = error_of(config())
    assert "twilio.bogus: unknown key" in message
    assert "BACKCHANNEL_TWILIO__BOGUS" in message
    assert TWILIO_TOKEN not in message


@pytest.mark.parametrize(
    "variable", ["BACKCHANNEL_BOGUS", "BACKCHANNEL_TWILIO_AUTH_TOKEN", "backchannel_telgram__x"]
)
def test_env_variable_naming_no_section_is_an_error(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """A misspelt override would otherwise be ignored, leaving the file's value in use."""
    monkeypatch.setenv(variable, TWILIO_TOKEN)
    message = error_of(config())
    assert variable in message and "unknown key" in message
    assert TWILIO_TOKEN not in message


def test_backchannel_config_is_not_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """$BACKCHANNEL_CONFIG says where the file is: it shares the prefix of the overrides,
    but is neither an unknown key nor a value that changes any setting."""
    without = settings_from_mapping(config())
    monkeypatch.setenv("BACKCHANNEL_CONFIG", "/somewhere/else.toml")
    assert settings_from_mapping(config()) == without
    assert find_config() == Path("/somewhere/else.toml")
    assert find_config("given.toml") == Path("given.toml")  # --config wins


def test_a_missing_file_says_where_its_path_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigFileMissing) as default:
        load_settings()
    assert (default.value.path, default.value.found_by) == (Path("backchannel.toml"), "default")
    monkeypatch.setenv("BACKCHANNEL_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigFileMissing) as named:
        load_settings()
    assert named.value.found_by == "environment"
    assert str(named.value) == f"{tmp_path / 'absent.toml'}: no such config file"
    with pytest.raises(ConfigFileMissing) as given:
        load_settings(tmp_path / "given.toml")
    assert given.value.found_by == "option"


def test_invalid_value_from_env_names_field_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKCHANNEL_TELEGRAM__BOT_TOKEN", "CANARY-not-a-token")
    message = error_of(config())
    assert "telegram.bot_token" in message and "BACKCHANNEL_TELEGRAM__BOT_TOKEN" in message
    assert "CANARY" not in message


def test_env_section_that_is_not_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKCHANNEL_TWILIO", '{"auth_token": "CANARY"')
    message = error_of(config())
    assert "twilio" in message and "CANARY" not in message


@pytest.mark.parametrize(
    ("written", "order"),
    [("telegram,email", ["telegram", "email"]), (" telegram , email ", ["telegram", "email"]),
     ('["telegram", "email"]', ["telegram", "email"]), ("sms", ["sms"])],
)
def test_list_overrides_written_the_natural_way(
    monkeypatch: pytest.MonkeyPatch, written: str, order: list[str]
) -> None:
    monkeypatch.setenv("BACKCHANNEL_ROUTING__ORDER", written)
    monkeypatch.setenv("BACKCHANNEL_ESCALATION__ACK_WORDS", "OK")
    monkeypatch.setenv("BACKCHANNEL_CONTACTS__ALICE__ORDER", "email,telegram")
    settings = settings_from_mapping(config())
    assert settings.routing.order == order
    assert settings.escalation.ack_words == ["OK"]
    assert settings.contacts["alice"].order == ("email", "telegram")


def test_table_overrides_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKCHANNEL_LIMITS__SMS", '{"per_second": 2}')
    monkeypatch.setenv("BACKCHANNEL_GROUPS", '{"oncall": ["bob"]}')
    settings = settings_from_mapping(config())
    assert settings.limit_for("sms").per_second == 2
    assert settings.groups["oncall"] == ["bob"]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [("BACKCHANNEL_LIMITS__SMS", "per_second=2", "limits.sms: not valid JSON"),
     ("BACKCHANNEL_ROUTING__ORDER", '["telegram"', "routing.order: not valid JSON"),
     ("BACKCHANNEL_ROUTING", "[1]", "routing: expected a JSON table"),
     ("BACKCHANNEL_TWILIO__AUTH_TOKEN", "CANARY\udcff", "twilio.auth_token: is not valid UTF-8")],
)
def test_unreadable_overrides_name_the_variable_not_the_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    message = error_of(config())
    assert says in message and f"(from ${name})" in message
    assert value not in message and "CANARY" not in message


def test_settings_built_directly_refuse_an_unreadable_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from config.environment import EnvironmentProblem

    monkeypatch.setenv("BACKCHANNEL_ROUTING__ORDER", "[telegram")
    with pytest.raises(EnvironmentProblem, match=r"routing\.order"):
        Settings(**config())


# -- files and paths ----------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL_TOML = """\
[telegram]
bot_token = "4242424242:abcdefghijklmnopqrstuvwxyz"
[contacts.alice]
telegram = 1
"""


def test_relative_store_path_resolves_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = _write(tmp_path / "etc" / "bc.toml", MINIMAL_TOML + '[store]\npath = "data/bc.db"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(os.path.relpath(file))
    assert settings.store.path == (tmp_path / "etc" / "data" / "bc.db").resolve()
    assert settings.store.path.is_absolute()


def test_default_store_sits_next_to_the_config(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path / "conf" / "backchannel.toml", MINIMAL_TOML))
    assert settings.store.path == (tmp_path / "conf" / "backchannel.db").resolve()


def test_absolute_store_path_is_kept(tmp_path: Path) -> None:
    store = tmp_path / "var" / "bc.db"
    file = _write(tmp_path / "conf" / "bc.toml", MINIMAL_TOML + f'[store]\npath = "{store}"\n')
    assert load_settings(file).store.path == store


CA_TOML = MINIMAL_TOML + (
    '[email]\nhost = "smtp.example.com"\nsender = "a@example.com"\nca_file = "certs/ca.pem"\n'
)


def test_relative_ca_file_resolves_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "conf" / "certs" / "ca.pem", "-----BEGIN CERTIFICATE-----\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(_write(tmp_path / "conf" / "bc.toml", CA_TOML))
    assert settings.email is not None
    assert settings.email.ca_file == (tmp_path / "conf" / "certs" / "ca.pem").resolve()


def test_missing_ca_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A certs/ca.pem next to the working directory does not count.
    _write(tmp_path / "certs" / "ca.pem", "-----BEGIN CERTIFICATE-----\n")
    monkeypatch.chdir(tmp_path)
    file = _write(tmp_path / "conf" / "bc.toml", CA_TOML)
    with pytest.raises(ConfigError) as caught:
        load_settings(file)
    message = str(caught.value)
    assert message.startswith(f"{file}: invalid configuration")
    assert "email.ca_file: no such file" in message
    assert str(tmp_path / "conf" / "certs" / "ca.pem") in message


def test_mapping_without_base_dir_keeps_relative_paths() -> None:
    settings = settings_from_mapping(config(store={"path": "data/bc.db"}))
    assert settings.store.path == Path("data/bc.db")


def test_config_file_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config() == Path("backchannel.toml")
    monkeypatch.setenv("BACKCHANNEL_CONFIG", "/from/env.toml")
    assert find_config() == Path("/from/env.toml")
    assert find_config("given.toml") == Path("given.toml")


def test_load_settings_follows_the_environment_then_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "cwd" / "backchannel.toml", MINIMAL_TOML.replace("= 1", "= 3"))
    env_file = _write(tmp_path / "env" / "b.toml", MINIMAL_TOML.replace("= 1", "= 2"))
    flag_file = _write(tmp_path / "flag" / "c.toml", MINIMAL_TOML)
    monkeypatch.chdir(tmp_path / "cwd")
    assert load_settings().contacts["alice"].address("telegram") == "3"
    monkeypatch.setenv("BACKCHANNEL_CONFIG", str(env_file))
    assert load_settings().contacts["alice"].address("telegram") == "2"
    assert load_settings(flag_file).contacts["alice"].address("telegram") == "1"


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="no such config file") as caught:
        load_settings(missing)
    assert str(missing) in str(caught.value)


def test_unreadable_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_settings(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_toml_syntax_error_names_the_line_without_the_content(tmp_path: Path) -> None:
    file = _write(
        tmp_path / "bc.toml",
        f'[twilio]\naccount_sid = "AC{"0" * 32}"\nauth_token = "{TWILIO_TOKEN}" oops\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(file)
    message = str(caught.value)
    assert str(file) in message and "not valid TOML" in message and "line 3" in message
    assert TWILIO_TOKEN not in message


def test_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    file = _write(tmp_path / "bc.toml", MINIMAL_TOML + '[groups]\nops = ["alice", "bob"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(file)
    assert str(caught.value) == (
        f"{file}: invalid configuration\n  groups.ops[1]: names an unknown contact ('bob')"
    )


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    file = tmp_path / "bc.toml"
    file.write_bytes(b"\xef\xbb\xbf" + MINIMAL_TOML.encode())
    assert list(load_settings(file).contacts) == ["alice"]


def test_a_file_that_is_not_utf8_names_the_line_and_column(tmp_path: Path) -> None:
    file = tmp_path / "bc.toml"
    file.write_bytes(MINIMAL_TOML.encode() + "# réseau de secours\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_settings(file)
    assert str(caught.value).startswith(f"{file}: not UTF-8 text: byte 0xe9 at line 5, column 4")


def test_toml_nested_too_deeply_is_a_config_error(tmp_path: Path) -> None:
    file = _write(tmp_path / "bc.toml", "a = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_settings(file)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_config_that_is_not_a_regular_file_is_refused_at_once(
    tmp_path: Path, kind: str
) -> None:
    if kind == "fifo":
        path = tmp_path / "bc.fifo"
        os.mkfifo(path)  # nobody writes to it: reading it would wait forever
    else:
        path = Path("/dev/zero")  # reading it would never end
    with pytest.raises(ConfigError, match="not a regular file"):
        load_settings(path)


def test_a_group_naming_many_unknown_contacts_names_twenty(tmp_path: Path) -> None:
    members = ", ".join(f'"x{i}"' for i in range(100))
    file = _write(tmp_path / "bc.toml", MINIMAL_TOML + f"[groups]\nops = [{members}]\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(file)
    line = str(caught.value).splitlines()[1]
    assert line == ("  groups.ops: names 100 unknown contacts: "
                    + ", ".join(f"'x{i}'" for i in range(20)) + " and 80 more")


def test_settings_are_frozen() -> None:
    settings = settings_from_mapping(config())
    with pytest.raises(ValueError, match="frozen"):
        settings.routing = settings.routing  # type: ignore[misc]
    assert isinstance(settings, Settings)
