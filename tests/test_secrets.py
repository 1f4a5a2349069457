"""Canary credentials never show up in anything backchannel prints, logs or stores.

The sandbox and the config carry recognisable canary credentials; the real
command runs successful and failing sends and broadcasts with ``-v`` (which
logs httpx request lines, whose URL holds the bot token) and ``--json``, and
with bad configs and environment overrides. No canary may appear on stdout,
stderr or in any column of the store; phone numbers, chat ids and mailboxes
appear masked in the verbose log.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    CliRun,
    assert_no_duplicates,
    config_data,
    dump_toml,
    run_cli,
    store_rows,
    write_config,
)

from config.settings import settings_from_mapping
from router.sandbox import Fault, Sandbox

TWILIO_TOKEN = "TWILIOCANARYc0ffee0123456789abcde"
BOT_SECRET = "TGCANARYsecretHalf_0123456789-abcdef"
BOT_TOKEN = f"987654321:{BOT_SECRET}"
SMTP_PASSWORD = "SMTPCANARY-pa55w0rd-9f8e7d"
# Wrong values a config or the environment may hold: just as secret.
WRONG_BOT_SECRET = "WRONGTGCANARY_aaaaaaaaaaaaaaaaaaaaaa"
WRONG_BOT_TOKEN = f"555555555:{WRONG_BOT_SECRET}"
WRONG_TWILIO_TOKEN = "WRONGTWILIOCANARY0000000000000000"
WRONG_SMTP_PASSWORD = "WRONGSMTPCANARY-hunter2"
ENV_BAD_TOKEN = "ENVCANARY-this-is-not-a-bot-token"
MARKER = "CANARY"
"""Every canary contains it; the messages and contacts in these tests do not."""

Contacts = dict[str, dict[str, object]]

BOB_PHONE = "+14155552671"
UMA_PHONE = "+447911123456"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox(
        auth_token=TWILIO_TOKEN, bot_token=BOT_TOKEN, smtp_auth=("demo", SMTP_PASSWORD)
    ) as sandbox:
        yield sandbox


def secret_forms(sb: Sandbox) -> list[str]:
    """Each canary, plus the encodings it travels in (Basic auth, SMTP AUTH)."""
    sid = sb.twilio.account_sid
    forms = [MARKER, BOT_SECRET, WRONG_BOT_SECRET]
    for token in (TWILIO_TOKEN, WRONG_TWILIO_TOKEN):
        forms += [token, _b64(f"{sid}:{token}")]
    for password in (SMTP_PASSWORD, WRONG_SMTP_PASSWORD):
        forms += [password, _b64(password), _b64(f"\0demo\0{password}")]
    return forms


def leaks(text: str, forms: Iterable[str]) -> list[str]:
    return [form for form in forms if form in text]


def assert_no_leak(runs: Iterable[CliRun], forms: list[str]) -> None:
    for run in runs:
        assert leaks(run.stdout, forms) == [], run
        assert leaks(run.stderr, forms) == [], run


def assert_store_clean(path: Path, forms: list[str]) -> None:
    rows = store_rows(path)
    assert rows["attempts"], f"no attempts recorded in {path}"
    for table, table_rows in rows.items():
        for row in table_rows:
            assert leaks(repr(row), forms) == [], (table, row)


async def test_canaries_never_leak_from_sends_and_broadcasts(
    sb: Sandbox, tmp_path: Path
) -> None:
    # A: WhatsApp fails for Alice, Telegram takes it (httpx logs the bot URL).
    alice: Contacts = {"alice": {"phone": "+33612345678", "telegram": 111111111,
                       "email": "alice@example.com"}}  # fmt: skip
    sb.twilio.faults.fail("whatsapp", Fault.http(503), address="+33612345678")
    # B: a broadcast where Bob falls back to SMS, Vic's Telegram request is dropped
    # (may have been sent) so email takes it, and Zed is refused everywhere.
    crew: Contacts = {
        "bob": {"phone": BOB_PHONE, "email": "bob@example.com"},
        "vic": {"telegram": 777777777, "email": "vic@example.com"},
        "zed": {"telegram": 999999999, "email": "zed@example.com"},
    }
    sb.twilio.faults.fail("whatsapp", Fault.http(503), address=BOB_PHONE)
    sb.telegram.faults.fail("telegram", Fault.drop(), address="777777777")
    sb.telegram.faults.fail("telegram", Fault.reject_recipient(), address="999999999")
    sb.smtp.faults.fail("email", Fault.smtp(550), address="zed@example.com")
    # C: the config's bot token is wrong (Telegram answers 401); email takes it.
    tina: Contacts = {"tina": {"telegram": 121212121, "email": "tina@example.com"}}
    # D: wrong Twilio token and SMTP password from the environment: nothing works.
    uma: Contacts = {"uma": {"phone": UMA_PHONE, "email": "uma@example.com"},
           "wes": {"email": "wes@example.com"}}  # fmt: skip

    configs = {
        "a": write_config(sb, tmp_path / "a", alice),
        "b": write_config(sb, tmp_path / "b", crew),
        "c": write_config(sb, tmp_path / "c", tina,
                          overrides={"telegram": {"bot_token": WRONG_BOT_TOKEN}}),
        "d": write_config(sb, tmp_path / "d", uma),
    }  # fmt: skip
    wrong_env = {
        "BACKCHANNEL_TWILIO__AUTH_TOKEN": WRONG_TWILIO_TOKEN,
        "BACKCHANNEL_EMAIL__PASSWORD": WRONG_SMTP_PASSWORD,
    }
    a, b, c, d = await asyncio.gather(
        run_cli("-v", "send", "--to", "alice", "disk full", "--json", "-c", str(configs["a"])),
        run_cli("-v", "broadcast", "--group", "ops", "power cut", "-c", str(configs["b"])),
        run_cli("-v", "send", "--to", "tina", "db down", "--json", "-c", str(configs["c"])),
        run_cli("-v", "broadcast", "-g", "ops", "fire drill", "--json", "-c", str(configs["d"]),
                env=wrong_env),
    )  # fmt: skip

    # The scenarios happened as intended...
    assert a.status == 0, a
    assert a.results()["alice"]["channel"] == "telegram", a
    assert "httpx" in a.stderr and "sendMessage" in a.stderr, a  # the URL is logged, redacted
    assert b.status == 1, b
    assert any("bob" in line and "sms" in line for line in b.stdout.splitlines()), b
    assert any("zed" in line and "failed" in line for line in b.stdout.splitlines()), b
    assert c.status == 0, c
    [tina_attempt, email_attempt] = c.results()["tina"]["attempts"]
    assert (tina_attempt["outcome"], tina_attempt["scope"]) == ("permanent", "channel"), c
    assert email_attempt["outcome"] == "accepted", c
    assert d.status == 1, d
    assert {r["status"] for r in d.json()["results"]} == {"failed"}, d
    assert 401 in {r.answer for r in sb.twilio.requests}
    assert 401 in {r.answer for r in sb.telegram.requests}
    assert any(e.command == "AUTH" and e.reply.startswith("535") for e in sb.smtp.log)

    # ...and no canary, nor an encoding of one, is in any output or store.
    forms = secret_forms(sb)
    assert_no_leak((a, b, c, d), forms)
    for name in configs:
        assert_store_clean(tmp_path / name / "store.db", forms)

    # The verbose log names people by masked addresses only.
    log = a.stderr + b.stderr + c.stderr + d.stderr
    for full in ("+33612345678", "33612345678", BOB_PHONE, UMA_PHONE, "111111111",
                 "777777777", "999999999", "alice@example.com", "zed@example.com",
                 "uma@example.com", "wes@example.com", "tina@example.com"):  # fmt: skip
        assert full not in log, (full, log)
    assert "+336•••••678" in a.stderr, a
    for masked in ("z•••@example.com", "+141•••••671"):
        assert masked in b.stderr, (masked, b)
    assert_no_duplicates(sb)


def _syntax_error_on_canary_line(sb: Sandbox) -> str:
    text = dump_toml(config_data(sb))
    line = f'auth_token = "{TWILIO_TOKEN}"'
    assert line in text
    return text.replace(line, f'auth_token = "{TWILIO_TOKEN}" "{SMTP_PASSWORD}"')


async def test_canaries_never_leak_from_config_errors(sb: Sandbox, tmp_path: Path) -> None:
    cases: dict[str, tuple[str, Mapping[str, str], tuple[str, ...]]] = {
        # Canaries next to invalid fields, as the invalid values themselves, and under
        # misspelt keys (in the file and from the environment).
        "invalid-fields": (
            dump_toml(config_data(sb, overrides={
                "twilio": {"account_sid": "AC-not-an-account", "timeout": TWILIO_TOKEN},
                "telegram": {"bot_token": f"no-colon-{BOT_SECRET}", "api_base": "not a url"},
                "email": {"port": SMTP_PASSWORD, "password": None,
                          "passwd": SMTP_PASSWORD},
                "contacts": {"alice": {"phone": "+1 555"}},
            })),
            {"BACKCHANNEL_TWILIO__AUTH_TOKN": WRONG_TWILIO_TOKEN},
            ("twilio.account_sid", "twilio.timeout", "telegram.bot_token", "telegram.api_base",
             "email.port", "email.passwd: unknown key", "contacts.alice.phone",
             "twilio.auth_tokn: unknown key"),
        ),
        "syntax-error-on-canary-line": (_syntax_error_on_canary_line(sb), {}, ("line",)),
        # Invalid values from the environment: a bad token, a secret where a number
        # belongs, a whole section that is not JSON.
        "env-invalid-values": (
            dump_toml(config_data(sb)),
            {"BACKCHANNEL_TELEGRAM__BOT_TOKEN": ENV_BAD_TOKEN,
             "BACKCHANNEL_TWILIO__CONNECT_TIMEOUT": WRONG_TWILIO_TOKEN,
             "BACKCHANNEL_EMAIL": f'{{"password": "{WRONG_SMTP_PASSWORD}"'},
            ("telegram.bot_token", "$BACKCHANNEL_TELEGRAM__BOT_TOKEN", "twilio.connect_timeout",
             "email:", "$BACKCHANNEL_EMAIL"),
        ),
        "env-misspelt-section": (
            dump_toml(config_data(sb)),
            {"BACKCHANNEL_TELEGRAM_BOT_TOKEN": WRONG_BOT_TOKEN},
            ("BACKCHANNEL_TELEGRAM_BOT_TOKEN",),
        ),
    }  # fmt: skip
    gate = asyncio.Semaphore(4)

    async def attempt(name: str, text: str, env: Mapping[str, str]) -> CliRun:
        directory = tmp_path / name
        directory.mkdir()
        config = directory / "backchannel.toml"
        config.write_text(text)
        async with gate:
            return await run_cli(
                "-v", "send", "--to", "alice", "hello", "--json", "-c", str(config), env=env
            )

    runs = dict(
        zip(
            cases,
            await asyncio.gather(*(attempt(n, text, env) for n, (text, env, _) in cases.items())),
            strict=True,
        )
    )

    forms = [*secret_forms(sb), ENV_BAD_TOKEN, WRONG_BOT_TOKEN]
    for name, run in runs.items():
        assert run.status == 2, (name, run)
        for field in cases[name][2]:
            assert field in run.stderr, (name, field, run)
        assert "Traceback" not in run.stderr, (name, run)
    assert_no_leak(runs.values(), forms)
    assert sb.twilio.requests == [] and sb.telegram.requests == [] and sb.smtp.log == []


def test_the_canaries_are_valid_where_they_must_be(monkeypatch: pytest.MonkeyPatch) -> None:
    """The secret-scan above only means something if the canaries are accepted as config."""
    for name in list(os.environ):
        if name.upper().startswith("BACKCHANNEL_"):
            monkeypatch.delenv(name)
    data: dict[str, Any] = {
        "twilio": {"account_sid": "AC" + "0" * 32, "auth_token": TWILIO_TOKEN},
        "telegram": {"bot_token": BOT_TOKEN},
        "email": {"host": "localhost", "sender": "a@example.com", "username": "demo",
                  "password": SMTP_PASSWORD},
    }  # fmt: skip
    settings = settings_from_mapping(data)
    assert set(settings.secrets()) >= {TWILIO_TOKEN, BOT_TOKEN, BOT_SECRET, SMTP_PASSWORD}
    wrong = settings_from_mapping(
        {**data, "telegram": {"bot_token": WRONG_BOT_TOKEN}}
    )
    assert WRONG_BOT_SECRET in wrong.secrets()
