"""End-to-end: the real ``backchannel`` command against the sandbox peers.

Every test checks what the command printed and exited with, and what the
providers themselves recorded: in particular that no recipient got one message
twice on one channel. Bad input (design.md section 10) must exit 2, name the
field, file or line on stderr, and reach no provider at all.
"""

from __future__ import annotations

import asyncio
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    CliRun,
    assert_no_duplicates,
    duplicates,
    peer_traffic,
    run_cli,
    write_config,
)

from router.sandbox import Fault, Sandbox

ALICE_PHONE = "+33612345678"
ALICE_CHAT = 111111111
BOB_PHONE = "+14155552671"
DAVE_PHONE = "+447911123456"
PHONE_SENDER = "+15005550006"


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sandbox:
        yield sandbox
        # Whatever else a test checks: no provider got one message twice for one person.
        assert duplicates(sandbox) == {}, sandbox.received()


def attempts(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(a["channel"], a["outcome"]) for a in result["attempts"]]


def twilio_posts(sb: Sandbox, channel: str) -> list[int | str]:
    """Answers the Twilio peer gave to create requests on one channel, in order."""
    return [
        r.answer
        for r in sb.twilio.requests
        if r.method == "POST" and r.channel == channel
    ]


def store_deliveries(path: Path) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT contact, status, channel FROM deliveries").fetchall()
    return {contact: (status, channel) for contact, status, channel in rows}


# -- fallback, end to end ---------------------------------------------------------------


async def test_whatsapp_failing_falls_back_to_telegram(sb: Sandbox, tmp_path: Path) -> None:
    config = write_config(sb, tmp_path)
    sb.twilio.faults.fail("whatsapp", Fault.http(503))
    text = "db1 is down: failover started"

    run = await run_cli("send", "--to", "alice", text, "--json", "--config", str(config))

    assert run.status == 0, run
    assert run.stderr == "", run
    payload = run.json()
    assert payload["message_id"].startswith("msg_")
    [result] = payload["results"]
    assert result["contact"] == "alice"
    assert result["status"] == "accepted"
    assert result["channel"] == "telegram"
    # Transient 503: retried on WhatsApp (tries_per_channel = 2), then Telegram.
    assert attempts(result) == [
        ("whatsapp", "transient"), ("whatsapp", "transient"), ("telegram", "accepted")
    ]
    assert "503" in result["attempts"][0]["detail"]
    assert [a["kind"] for a in result["attempts"]] == ["first", "retry", "first"]
    # The providers agree: two refused WhatsApp requests, one Telegram message.
    assert twilio_posts(sb, "whatsapp") == [503, 503]
    assert [(s.chat_id, s.text) for s in sb.telegram.sent] == [(ALICE_CHAT, text)]
    assert sb.received() == {
        "whatsapp": [], "sms": [], "voice": [], "telegram": [str(ALICE_CHAT)], "email": []
    }
    assert store_deliveries(tmp_path / "store.db") == {"alice": ("accepted", "telegram")}
    assert_no_duplicates(sb)


async def test_whatsapp_and_telegram_down_sends_sms(sb: Sandbox, tmp_path: Path) -> None:
    config = write_config(sb, tmp_path)
    sb.twilio.faults.fail("whatsapp", Fault.http(500))
    await sb.telegram.refuse()
    text = "Backup failed twice; on-call please check"

    run = await run_cli("send", "--to", "alice", text, "--config", str(config))

    # The human-readable table and summary.
    assert run.status == 0, run
    lines = run.stdout.splitlines()
    row = next(line for line in lines if "alice" in line)
    assert "accepted" in row and "sms" in row, run
    assert "whatsapp ✗×2" in row and "telegram ✗×2" in row and "sms ✓" in row, run
    assert "1/1 contacts reached (1 by sms)" in run.stdout, run
    [sms] = sb.twilio.sent("sms")
    assert (sms.to, sms.from_, sms.body) == (ALICE_PHONE, PHONE_SENDER, text)
    assert twilio_posts(sb, "whatsapp") == [500, 500]
    assert sb.telegram.sent == []
    assert sb.received() == {
        "whatsapp": [], "sms": [ALICE_PHONE], "voice": [], "telegram": [], "email": []
    }
    assert store_deliveries(tmp_path / "store.db") == {"alice": ("accepted", "sms")}
    assert_no_duplicates(sb)


async def test_all_messaging_down_calls_and_speaks_the_text_literally(
    sb: Sandbox, tmp_path: Path
) -> None:
    config = write_config(sb, tmp_path)
    sb.twilio.faults.fail("whatsapp", Fault.http(503))
    sb.twilio.faults.fail("sms", Fault.http(503))
    await sb.telegram.refuse()
    # Markup, an ampersand and both kinds of quote: spoken as written, never obeyed.
    text = """Disk <Hangup/> full & "db1" isn't answering <Play>x</Play> 5 < 7"""

    run = await run_cli("send", "--to", "alice", text, "--json", "--config", str(config))

    assert run.status == 0, run
    [result] = run.json()["results"]
    assert (result["status"], result["channel"]) == ("accepted", "voice")
    assert [channel for channel, _ in attempts(result)] == [
        "whatsapp", "whatsapp", "telegram", "telegram", "sms", "sms", "voice"
    ]
    [call] = sb.twilio.calls.values()
    assert (call.to, call.from_) == (ALICE_PHONE, PHONE_SENDER)
    assert result["attempts"][-1]["provider_id"] == call.sid
    twiml = call.twiml
    assert twiml is not None
    # Escaped in the XML...
    assert "&lt;Hangup/&gt;" in twiml and "&lt;Play&gt;" in twiml and "&amp;" in twiml
    assert "<Hangup" not in twiml and "<Play" not in twiml and " & " not in twiml
    # ...and exactly the text once parsed: one <Say>, no element smuggled in.
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    says = list(root.iter("Say"))
    assert len(says) == 1 and list(says[0]) == []
    assert says[0].text == text
    assert [element.tag for element in root.iter()] == ["Response", "Say"]
    assert sb.received()["voice"] == [ALICE_PHONE]
    assert sb.received()["sms"] == [] and sb.received()["whatsapp"] == []
    assert_no_duplicates(sb)


async def test_email_carries_subject_and_body(sb: Sandbox, tmp_path: Path) -> None:
    contacts = {"erin": {"email": "erin@example.com"}}
    config = write_config(sb, tmp_path, contacts)
    subject = "Disk full on db1 — action needed"
    body = "The disk on db1 is 98% full.\nCleanup job failed: « quota exceeded ».\n"

    run = await run_cli(
        "send", "--to", "erin", body, "--subject", subject, "--json", "--config", str(config)
    )

    assert run.status == 0, run
    [result] = run.json()["results"]
    assert (result["status"], result["channel"]) == ("accepted", "email")
    [mail] = sb.smtp.received
    assert mail.rcpt_tos == ("erin@example.com",)
    assert mail.mail_from == "alerts@example.com"
    assert mail.subject == subject
    assert mail.text.replace("\r\n", "\n").rstrip("\n") == body.rstrip("\n")
    # The Message-ID carries the attempt id (design.md section 8).
    assert mail.message_id is not None
    assert result["attempts"][0]["attempt_id"] in mail.message_id
    assert sb.twilio.requests == [] and sb.telegram.requests == []
    assert_no_duplicates(sb)


async def test_text_too_long_for_all_but_email_goes_by_email(
    sb: Sandbox, tmp_path: Path
) -> None:
    config = write_config(sb, tmp_path)
    text = "log excerpt: " + "0123456789" * 500  # 5,013 characters: over 4,096 and 1,600

    run = await run_cli(
        "send", "--to", "alice", text, "-s", "Long report", "--json", "--config", str(config)
    )

    assert run.status == 0, run
    [result] = run.json()["results"]
    assert (result["status"], result["channel"]) == ("accepted", "email")
    assert attempts(result) == [("email", "accepted")]
    assert any("too long" in note for note in result["notes"]), result
    [mail] = sb.smtp.received
    assert mail.subject == "Long report"
    assert text in mail.text.replace("\r\n", "").replace("\n", "")
    # Nothing was even attempted where the text does not fit.
    assert sb.twilio.requests == [] and sb.telegram.requests == []
    assert_no_duplicates(sb)


async def test_broadcast_over_mixed_channels(sb: Sandbox, tmp_path: Path) -> None:
    contacts: dict[str, dict[str, object]] = {
        "alice": {"phone": ALICE_PHONE, "telegram": ALICE_CHAT, "email": "alice@example.com"},
        "bob": {"phone": BOB_PHONE, "email": "bob@example.com"},
        "carol": {"telegram": 333333333, "email": "carol@example.com"},
        "dave": {"phone": DAVE_PHONE, "telegram": 444444444, "order": ["sms", "telegram"]},
        "erin": {"email": "erin@example.com"},
    }
    config = write_config(
        sb, tmp_path, contacts, overrides={"groups": {"oncall": list(contacts)}}
    )
    # Alice's number is not on WhatsApp (permanent, this recipient only): Bob's still is.
    sb.twilio.faults.fail("whatsapp", Fault.reject_recipient(code=63024), address=ALICE_PHONE)
    text = "Maintenance tonight 22:00-23:00 UTC"

    run = await run_cli(
        "broadcast", "--group", "oncall", text, "--subject", "Maintenance", "--json",
        "--config", str(config),
    )  # fmt: skip

    assert run.status == 0, run
    payload = run.json()
    results = {r["contact"]: r for r in payload["results"]}
    assert [r["contact"] for r in payload["results"]] == list(contacts)
    assert {name: (r["status"], r["channel"]) for name, r in results.items()} == {
        "alice": ("accepted", "telegram"),
        "bob": ("accepted", "whatsapp"),
        "carol": ("accepted", "telegram"),
        "dave": ("accepted", "sms"),
        "erin": ("accepted", "email"),
    }
    assert attempts(results["alice"]) == [("whatsapp", "permanent"), ("telegram", "accepted")]
    assert results["alice"]["attempts"][0]["scope"] == "recipient"
    assert all(len(results[name]["attempts"]) == 1 for name in ("bob", "carol", "dave", "erin"))
    received = sb.received()
    assert received["whatsapp"] == [f"whatsapp:{BOB_PHONE}"]
    assert sorted(received["telegram"]) == ["111111111", "333333333"]
    assert received["sms"] == [DAVE_PHONE]
    assert received["voice"] == []
    assert received["email"] == ["erin@example.com"]
    assert {s.text for s in sb.telegram.sent} == {text}
    assert [m.subject for m in sb.smtp.received] == ["Maintenance"]
    assert store_deliveries(tmp_path / "store.db") == {
        name: ("accepted", channel)
        for name, channel in (("alice", "telegram"), ("bob", "whatsapp"), ("carol", "telegram"),
                              ("dave", "sms"), ("erin", "email"))
    }  # fmt: skip
    assert_no_duplicates(sb)


async def test_unreachable_contact_exits_1(sb: Sandbox, tmp_path: Path) -> None:
    contacts = {
        "alice": {"phone": ALICE_PHONE, "telegram": ALICE_CHAT},
        "zed": {"telegram": 999999999, "email": "zed@example.com"},
    }
    broadcast_config = write_config(sb, tmp_path / "broadcast", contacts)
    send_config = write_config(sb, tmp_path / "send", contacts)
    # Everything Zed can be reached on is down; Alice's WhatsApp still works.
    await sb.telegram.refuse()
    await sb.smtp.refuse()

    broadcast, send = await asyncio.gather(
        run_cli("broadcast", "-g", "ops", "Power cut in DC2", "--json",
                "--config", str(broadcast_config)),
        run_cli("send", "-t", "zed", "Power cut in DC2", "--config", str(send_config)),
    )  # fmt: skip

    assert broadcast.status == 1, broadcast
    payload = broadcast.json()
    assert [r["contact"] for r in payload["results"]] == ["alice", "zed"]
    alice, zed = payload["results"]
    assert (alice["status"], alice["channel"]) == ("accepted", "whatsapp")
    assert (zed["status"], zed["channel"]) == ("failed", None)
    assert {outcome for _, outcome in attempts(zed)} == {"transient"}
    assert {channel for channel, _ in attempts(zed)} == {"telegram", "email"}

    assert send.status == 1, send
    row = next(line for line in send.stdout.splitlines() if "zed" in line)
    assert "failed" in row, send
    assert "0/1 contacts reached" in send.stdout, send

    assert sb.received() == {
        "whatsapp": [f"whatsapp:{ALICE_PHONE}"], "sms": [], "voice": [], "telegram": [], "email": []
    }
    assert store_deliveries(tmp_path / "send" / "store.db") == {"zed": ("failed", None)}
    assert_no_duplicates(sb)


async def test_maybe_sent_is_never_resent_on_the_same_channel(
    sb: Sandbox, tmp_path: Path
) -> None:
    """A stalled WhatsApp request may have been sent: never again on WhatsApp; then go on
    to Telegram (default), or stop with status unknown and exit 1 (on_unknown = "stop")."""
    fast_read = {"twilio": {"timeout": 0.5}}
    go_on = write_config(sb, tmp_path / "next", overrides=fast_read)
    stop = write_config(
        sb, tmp_path / "stop", overrides={**fast_read, "routing": {"on_unknown": "stop"}}
    )
    sb.twilio.faults.fail("whatsapp", Fault.stall())

    went_on, stopped = await asyncio.gather(
        run_cli("send", "--to", "alice", "first", "--json", "--config", str(go_on)),
        run_cli("send", "--to", "dave", "second", "--json", "--config", str(stop)),
    )

    assert went_on.status == 0, went_on
    [alice] = went_on.json()["results"]
    assert attempts(alice) == [("whatsapp", "unknown"), ("telegram", "accepted")]
    assert stopped.status == 1, stopped
    [dave] = stopped.json()["results"]
    assert (dave["status"], dave["channel"]) == ("unknown", None)
    assert attempts(dave) == [("whatsapp", "unknown")]
    received = sb.received()
    assert sorted(received["whatsapp"]) == [f"whatsapp:{ALICE_PHONE}", f"whatsapp:{DAVE_PHONE}"]
    assert received["telegram"] == [str(ALICE_CHAT)]
    assert twilio_posts(sb, "whatsapp") == ["stall", "stall"]
    assert_no_duplicates(sb)


# -- configuration sources --------------------------------------------------------------


async def test_env_overrides_the_file_auth_token(sb: Sandbox, tmp_path: Path) -> None:
    contacts = {"pat": {"phone": BOB_PHONE}}
    wrong = {"twilio": {"auth_token": "f" * 32}}
    with_env = write_config(sb, tmp_path / "env", contacts, overrides=wrong)
    without = write_config(sb, tmp_path / "file", contacts, overrides=wrong)

    fixed, control = await asyncio.gather(
        run_cli("send", "--to", "pat", "hello", "--json", "--config", str(with_env),
                env={"BACKCHANNEL_TWILIO__AUTH_TOKEN": sb.twilio.auth_token}),
        run_cli("send", "--to", "pat", "hello", "--json", "--config", str(without)),
    )  # fmt: skip

    assert fixed.status == 0, fixed
    [result] = fixed.json()["results"]
    assert (result["status"], result["channel"]) == ("accepted", "whatsapp")
    # Without the variable the file's wrong token is used, and Twilio refuses it.
    assert control.status == 1, control
    [refused] = control.json()["results"]
    assert refused["status"] == "failed"
    assert {(a["outcome"], a["scope"]) for a in refused["attempts"]} == {("permanent", "channel")}
    assert 401 in [r.answer for r in sb.twilio.requests]
    assert sb.received()["whatsapp"] == [f"whatsapp:{BOB_PHONE}"]
    assert_no_duplicates(sb)


async def test_config_precedence_and_relative_store(sb: Sandbox, tmp_path: Path) -> None:
    """--config beats $BACKCHANNEL_CONFIG beats ./backchannel.toml; the store path is
    relative to the config file, not to the working directory."""
    def place(where: str, chat: int, name: str) -> Path:
        return write_config(
            sb, tmp_path / where, {"pat": {"telegram": chat}},
            store_path=f"state/{where}.db", name=name,
        )  # fmt: skip

    flag = place("flag", 1001, "chosen.toml")
    env = place("env", 1002, "from-env.toml")
    place("cwd", 1003, "backchannel.toml")
    cwd = tmp_path / "cwd"

    def send(*extra: str, **variables: str) -> Awaitable[CliRun]:
        return run_cli("send", "--to", "pat", "hi", "--json", *extra, cwd=cwd, env=variables)

    by_flag, by_env, by_cwd = await asyncio.gather(
        send("--config", str(flag), BACKCHANNEL_CONFIG=str(env)),
        send(BACKCHANNEL_CONFIG=str(env)),
        send(),
    )

    for run, chat in ((by_flag, 1001), (by_env, 1002), (by_cwd, 1003)):
        assert run.status == 0, run
        [result] = run.json()["results"]
        assert result["attempts"][-1]["provider_id"].startswith(f"{chat}/"), run
    assert sorted(s.chat_id for s in sb.telegram.sent) == [1001, 1002, 1003]
    for where in ("flag", "env", "cwd"):
        store = tmp_path / where / "state" / f"{where}.db"
        assert store_deliveries(store) == {"pat": ("accepted", "telegram")}
    assert sorted(p.name for p in (cwd / "state").iterdir() if p.suffix == ".db") == ["cwd.db"]
    assert_no_duplicates(sb)


# -- bad input: exit 2, the field named, nothing sent -----------------------------------


@dataclass(frozen=True)
class Bad:
    """One bad invocation and the words stderr must contain."""

    id: str
    expect: tuple[str, ...]
    args: tuple[str, ...] = ("send", "--to", "alice", "hello")
    overrides: Mapping[str, Any] = field(default_factory=dict)
    contacts: Mapping[str, Mapping[str, object]] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    edit: Callable[[str], str] | None = None
    """Rewrites the config file's text (for what the data model cannot express)."""
    with_config: bool = True
    """Append ``--config FILE``; otherwise ``{dir}`` in args is the case's directory."""
    vonage: bool = False
    """Vonage carries SMS and voice too."""


def _syntax_error(text: str) -> str:
    lines = text.splitlines()
    assert lines[2].startswith("tries_per_channel")
    lines[2] = "tries_per_channel = 2 oops"  # line 3
    return "\n".join(lines) + "\n"


# Problems with single fields are reported together, one line each (test_config.py checks
# each one alone): one run per kind of check keeps the suite fast.
CONFIG_CASES = [
    Bad("missing-credentials",
        ("twilio.auth_token: Field required", "telegram.bot_token: Field required",
         "email: username and password must be given together"),
        overrides={"twilio": {"auth_token": None}, "telegram": {"bot_token": None},
                   "email": {"password": None}}),
    Bad("invalid-fields-and-unknown-keys",
        ("contacts.alice.phone: is not a valid phone number",
         "contacts.bob.email: must not contain line breaks",
         "contacts.carol.telegram: must be a numeric Telegram chat id",
         "contacts.dave.order.1:", "routing.order.1:",
         "bogus: unknown key", "channels.sms.colour: unknown key",
         "twilio.bogus: unknown key (from $BACKCHANNEL_TWILIO__BOGUS)"),
        contacts={
            "alice": {"phone": "+33 6 12 34", "telegram": ALICE_CHAT},
            # CR/LF written as TOML escapes: the parsed value holds real line breaks.
            "bob": {"email": "bob@example.com\r\nBcc: eve@example.com"},
            "carol": {"telegram": "@carol"},
            "dave": {"phone": DAVE_PHONE, "order": ["sms", "fax"]},
        },
        overrides={"routing": {"order": ["whatsapp", "pigeon", "email"]}, "bogus": 1,
                   "channels": {"sms": {"colour": "red"}}},
        env={"BACKCHANNEL_TWILIO__BOGUS": "1"}),
    Bad("twilio-section-missing", ("twilio: section is required: channels.whatsapp",),
        overrides={"twilio": None}),
    # One underscore instead of two: pydantic-settings alone would ignore it silently.
    Bad("misspelt-env-section", ("BACKCHANNEL_TWILIO_AUTH_TOKEN", "unknown key"),
        env={"BACKCHANNEL_TWILIO_AUTH_TOKEN": "0" * 32}),
    Bad("group-unknown-member", ("groups.ops[1]: names an unknown contact",),
        overrides={"groups": {"ops": ["alice", "zed"]}}),
    # Before the fix the store refused the second delivery row: a traceback, exit 1.
    Bad("group-repeats-a-contact", ("groups.ops[2]: names a contact twice",),
        overrides={"groups": {"ops": ["alice", "bob", "alice"]}}),
    # Found when the channels or the store open: a traceback and exit 1 before the fix.
    Bad("ca-file-missing", ("email.ca_file: no such file", "missing-ca.pem"),
        overrides={"email": {"ca_file": "missing-ca.pem"}}),
    Bad("store-cannot-open", ("store.path: cannot open",), overrides={"store": {"path": "."}}),
]  # fmt: skip

INPUT_CASES = [
    Bad("empty-message", ("message", "empty"), args=("send", "--to", "alice", "")),
    Bad("blank-message", ("message", "empty"), args=("broadcast", "--group", "ops", "  \n ")),
    Bad("subject-with-crlf", ("subject", "single line"),
        args=("send", "--to", "alice", "hi", "--subject", "Alert\r\nBcc: eve@example.com")),
    # Dave has no email: every channel he has caps the length.
    Bad("too-long-everywhere", ("message", "too long", "dave"),
        args=("send", "--to", "dave", "x" * 5000)),
    Bad("too-long-for-one-group-member", ("message", "too long", "dave"),
        args=("broadcast", "--group", "ops", "x" * 5000)),
    Bad("unknown-contact", ("to", "unknown contact", "zed"), args=("send", "--to", "zed", "hi")),
    Bad("unknown-group", ("group", "unknown group", "nope"),
        args=("broadcast", "--group", "nope", "hi")),
    Bad("missing-to", ("--to",), args=("send", "hello")),
    # Names from the command line are data, not console markup.
    Bad("markup-in-contact", ("[/x]", "unknown contact"), args=("send", "--to", "[/x]", "hi")),
    Bad("missing-text", ("Missing argument", "'text'"), args=("broadcast", "--group", "ops")),
]

FILE_CASES = [
    Bad("no-such-file", ("{dir}/missing.toml", "no such config file"),
        args=("send", "--to", "alice", "hi", "--config", "{dir}/missing.toml"),
        with_config=False),
    Bad("env-names-missing-file",
        ("{dir}/absent.toml", "no such config file", "(named by $BACKCHANNEL_CONFIG)"),
        args=("send", "--to", "alice", "hi"), env={"BACKCHANNEL_CONFIG": "{dir}/absent.toml"},
        with_config=False),
    Bad("no-default-file", ("backchannel.toml", "no such config file", "--config PATH",
                            "$BACKCHANNEL_CONFIG", "`backchannel sandbox -w backchannel.toml`"),
        args=("broadcast", "--group", "ops", "hi"), with_config=False),
    # Long paths stay on one line, and brackets in them are not console markup.
    Bad("markup-in-path", ("{dir}/[red]x/none.toml", "no such config file"),
        args=("send", "--to", "a", "hi", "--config", "{dir}/[red]x/none.toml"),
        with_config=False),
    Bad("toml-syntax-error", ("backchannel.toml", "not valid TOML", "line 3"),
        edit=_syntax_error),
]


def _prepare(case: Bad, peers: Sandbox, directory: Path) -> tuple[list[str], dict[str, str]]:
    """Write the case's config; return its command line and environment."""
    config = write_config(peers, directory, case.contacts, overrides=case.overrides,
                          vonage=case.vonage)
    if case.edit is not None:
        config.write_text(case.edit(config.read_text()))
    args = [arg.replace("{dir}", str(directory)) for arg in case.args]
    if case.with_config:
        args += ["--config", str(config)]
    else:
        config.unlink()
    env = {k: v.replace("{dir}", str(directory)) for k, v in case.env.items()}
    return args, env


async def _check_bad(case: Bad, directory: Path, gate: asyncio.Semaphore) -> list[str]:
    """Run one bad invocation against its own peers; return what went wrong."""
    run: CliRun
    async with Sandbox() as peers:
        args, env = _prepare(case, peers, directory)
        async with gate:
            run = await run_cli(*args, cwd=directory, env=env, columns=None)
        traffic = peer_traffic(peers)
    problems = []
    if run.status != 2:
        problems.append(f"exit status {run.status}, not 2")
    for needle in case.expect:
        if needle.replace("{dir}", str(directory)) not in run.stderr:
            problems.append(f"stderr does not mention {needle!r}")
    if "Traceback" in run.stderr:
        problems.append("a traceback on stderr")
    secrets = (peers.twilio.auth_token, peers.vonage.api_secret, peers.vonage.signature_secret,
               peers.telegram.bot_token.partition(":")[2])
    if any(secret in run.stderr for secret in secrets):
        problems.append("a secret on stderr")
    if run.stdout.strip():
        problems.append("something on stdout")
    if any(traffic.values()):
        problems.append(f"the peers were contacted: {traffic}")
    return [f"[{case.id}] {problem}\n{run}" for problem in problems]


async def _check_all(cases: list[Bad], tmp_path: Path) -> None:
    gate = asyncio.Semaphore(4)
    found = await asyncio.gather(*(_check_bad(c, tmp_path / c.id, gate) for c in cases))
    problems = [problem for case_problems in found for problem in case_problems]
    assert not problems, "\n\n".join(problems)


async def test_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    await _check_all(CONFIG_CASES, tmp_path)


VONAGE_CASES = [
    Bad("vonage-sender-without-credentials",
        ("vonage: section is required: channels.sms.vonage is enabled",),
        overrides={"vonage": None}, vonage=True),
    Bad("unknown-provider", ("channels.sms.providers.1:", "'twilio' or 'vonage'"),
        overrides={"channels": {"sms": {"providers": ["twilio", "plivo"]}}}, vonage=True),
    Bad("provider-not-carrying-the-channel",
        ("channels.whatsapp.providers[0]: vonage does not carry whatsapp",),
        overrides={"channels": {"whatsapp": {"providers": ["vonage"]}}}, vonage=True),
    Bad("vonage-named-but-no-sender", ("channels.sms.vonage: section is required",),
        overrides={"channels": {"sms": {"providers": ["vonage"], "vonage": None}}},
        vonage=True),
    Bad("private-key-missing", ("vonage.private_key: no such file", "missing.key"),
        overrides={"vonage": {"private_key": "missing.key"}}, vonage=True),
    Bad("private-key-not-a-key",
        ("vonage.private_key:", "is not an unencrypted PEM private key"),
        overrides={"vonage": {"private_key": "backchannel.toml"}}, vonage=True),
    Bad("signature-method-unknown",
        ("vonage.signature_method:", "$BACKCHANNEL_VONAGE__SIGNATURE_METHOD"),
        env={"BACKCHANNEL_VONAGE__SIGNATURE_METHOD": "sha3"}, vonage=True),
    Bad("signature-secret-alone", ("signature_secret and signature_method",),
        overrides={"vonage": {"signature_method": None}}, vonage=True),
]  # fmt: skip


async def test_bad_vonage_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    await _check_all(VONAGE_CASES, tmp_path)


async def test_bad_message_contact_group_or_arguments_exit_2(tmp_path: Path) -> None:
    await _check_all(INPUT_CASES, tmp_path)


async def test_missing_or_broken_config_file_exits_2(tmp_path: Path) -> None:
    await _check_all(FILE_CASES, tmp_path)


async def test_contact_names_in_the_table_are_not_markup(sb: Sandbox, tmp_path: Path) -> None:
    config = write_config(sb, tmp_path, {"[red]bo": {"telegram": 6}, "[/x]": {"telegram": 5}})
    run = await run_cli("broadcast", "--group", "ops", "hello", "--config", str(config))
    assert sorted(sb.received()["telegram"]) == ["5", "6"]
    assert run.status == 0, run
    assert "[red]bo" in run.stdout and "[/x]" in run.stdout, run
