"""Outside text, odd input and malformed requests get a clear answer (issue 13).

Each test runs the real ``backchannel`` command (or the real webhook server) against
the sandbox peers and checks what a user sees: the exit status, one clear line on
stderr and never a traceback, what the providers recorded, and what the store kept.
The template bounds are in test_templates.py, the 504 rows in test_contract.py,
opt-out keywords in test_twoway.py, malformed Telegram updates in test_webhooks.py,
and thirty more hostile inputs in test_hostile.py.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cli_helpers import (
    CliRun,
    assert_nothing_sent,
    config_data,
    dump_toml,
    run_cli,
    store_rows,
    write_config,
)
from twoway_helpers import CONTACTS, rig

from router import Message
from router.model.errors import BadInput
from router.model.text import LINE_BREAKS, terminal_safe
from router.sandbox import Fault, Sandbox

HOSTILE = "ok\x1b[2J\x1b]0;owned\x07\x1b]52;c;cm0gLXJmIH4K\x07\x9b31m\rFAKE \u202egnp.exe"
"""Screen clear, window title, OSC 52 clipboard write, 8-bit CSI, carriage return, and a
right-to-left override: what anyone who can text the number could send."""
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\r", "\u202e")


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sandbox:
        yield sandbox


def assert_clear_error(run: CliRun, status: int, *needles: str) -> None:
    assert run.status == status, run
    assert "Traceback" not in run.stderr, run
    for needle in needles:
        assert needle in run.stderr, run


def assert_terminal_safe(output: str) -> None:
    for char in RAW_CONTROLS:
        assert char not in output, f"{char!r} reached the terminal:\n{output!r}"


# 1. Header text: bad input for every channel, before anything is recorded ------------------


@pytest.mark.parametrize("char", [*LINE_BREAKS, "\x00", "\x1b", "\x7f", "\x9b", "\ud800"])
def test_a_subject_with_any_line_break_or_control_is_bad_input(char: str) -> None:
    with pytest.raises(BadInput, match="message: subject"):
        Message("disk full", subject=f"db1{char}Bcc: eve@example.com")
    assert Message("disk full", subject="db1\tdisk full").subject == "db1\tdisk full"


async def test_a_bad_subject_exits_2_records_nothing_and_spares_the_relay(
    sb: Sandbox, tmp_path: Path
) -> None:
    people = {f"p{index}": {"email": f"p{index}@example.com"} for index in range(8)}
    config = write_config(sb, tmp_path, people, overrides={
        "routing": {"order": ["email"]},
        "templates": {"outage": {"text": "{{ site }} is down", "subject": "{{ site }} down"}},
    })  # fmt: skip
    bad = await run_cli("broadcast", "--group", "ops", "disk full", "--subject",
                        "Disk\u2028full", "--config", str(config))  # fmt: skip
    assert_clear_error(bad, 2, "message: subject must be a single line", "U+2028")
    through_var = await run_cli("broadcast", "--group", "ops", "--template", "outage",
                                "--var", "site=Lyon\x85Bcc: eve", "--config", str(config))
    assert_clear_error(through_var, 2, "templates.outage.subject", "U+0085")
    assert_nothing_sent(sb)
    store = tmp_path / "store.db"
    assert not store.exists() or store_rows(store)["messages"] == []  # refused before it opened
    # The relay's breaker never saw a failure: the next broadcast reaches everyone.
    good = await run_cli("broadcast", "--group", "ops", "disk full", "--subject", "Disk full",
                         "--json", "--config", str(config))
    assert good.status == 0, good
    assert {r["channel"] for r in good.json()["results"]} == {"email"}
    assert sorted(sb.received()["email"]) == sorted(p["email"] for p in people.values())


# 1. A 504 may have been acted on: never again on that channel ---------------------------


async def test_a_gateway_timeout_goes_to_the_next_channel_without_a_retry(
    sb: Sandbox, tmp_path: Path
) -> None:
    config = write_config(sb, tmp_path, overrides={"routing": {"order": ["telegram", "sms"]}})
    sb.telegram.faults.fail("telegram", Fault.http(504, message="Gateway Timeout"))
    run = await run_cli("send", "--to", "alice", "db1 down", "--json", "--config", str(config))
    assert run.status == 0, run
    [result] = run.json()["results"]
    assert [(a["channel"], a["outcome"]) for a in result["attempts"]] == [
        ("telegram", "unknown"), ("sms", "accepted")]
    assert [rq.answer for rq in sb.telegram.requests] == [504]  # tried once, not three times


# 4. Outside text on a terminal: escaped everywhere, exact in --json ----------------------


async def test_a_hostile_reply_cannot_drive_the_terminal(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["sms", "telegram"]) as r:
        await r.router.send(Message("site down"), to="alice")
        sender = r.sandbox.twilio.sent("sms")[0].from_ or ""
        assert await r.sandbox.twilio.deliver_inbound("+33612345678", sender, HOSTILE) == 200
        config = write_config(r.sandbox, tmp_path / "cli", CONTACTS, store_path=str(r.store))
        table, as_json = await asyncio.gather(
            run_cli("inbox", "--config", str(config)),
            run_cli("inbox", "--json", "--config", str(config)),
        )
    assert table.status == 0, table
    assert_terminal_safe(table.stdout)
    assert "\\x1b]52;c;cm0gLXJmIH4K\\x07" in table.stdout  # shown, not obeyed
    assert "\\u202e" in table.stdout
    assert as_json.status == 0, as_json
    assert_terminal_safe(as_json.stdout)  # escaped as JSON, exactly the same string
    assert as_json.json()["inbound"][0]["text"] == HOSTILE


async def test_provider_words_are_escaped_in_history_status_and_logs(
    sb: Sandbox, tmp_path: Path
) -> None:
    config = write_config(sb, tmp_path, overrides={"routing": {"order": ["telegram", "sms"]}})
    sb.telegram.faults.fail("telegram", Fault.http(503, message=f"busy {HOSTILE}"))
    sent = await run_cli("--verbose", "send", "--to", "alice", "hi", "--config", str(config))
    assert sent.status == 0, sent
    probe = await run_cli("probe", "--config", str(config))  # a failed probe: Telegram down
    assert probe.status == 1, probe
    history, history_json, status = await asyncio.gather(
        run_cli("history", "--config", str(config)),
        run_cli("history", "--json", "--config", str(config)),
        run_cli("status", "--config", str(config)),
    )
    for run in (sent, probe, history, status):
        assert run.status in (0, 1), run
        assert "\\x1b" in run.stdout + run.stderr, run  # the provider's words are there...
        assert_terminal_safe(run.stdout)  # ...but cannot act
        assert_terminal_safe(run.stderr)
    details = [a["detail"] for a in history_json.json()["attempts"]]
    assert any(HOSTILE in detail for detail in details), details


async def test_names_in_errors_and_tables_are_escaped(sb: Sandbox, tmp_path: Path) -> None:
    # A contact book imported from elsewhere: its names are outside text too.
    name = "\x1b]0;owned\x07bob"
    bad = write_config(sb, tmp_path / "bad", {name: {"phone": "+33 6 12"}})
    good = write_config(sb, tmp_path / "good", {name: {"telegram": 5}})
    error, table = await asyncio.gather(
        run_cli("send", "--to", name, "hi", "--config", str(bad)),
        run_cli("broadcast", "--group", "ops", "hi", "--config", str(good)),
    )
    assert_clear_error(error, 2, "contacts.\\x1b]0;owned\\x07bob.phone")
    assert_terminal_safe(error.stderr)
    assert table.status == 0, table
    assert "\\x1b]0;owned\\x07bob" in table.stdout
    assert_terminal_safe(table.stdout)


def test_terminal_safe_keeps_ordinary_text() -> None:
    text = "Café ☕ 🚒 — שלום\n\tline two"
    assert terminal_safe(text) is text
    assert terminal_safe("a\nb", multiline=False) == "a\\nb"
    assert terminal_safe("\x1b\x9b\u2028\udcff") == "\\x1b\\x9b\\u2028\\udcff"


# 3. Config files and the environment: a clear error, never a traceback or a hang --------


async def test_config_file_encodings(sb: Sandbox, tmp_path: Path) -> None:
    text = dump_toml(config_data(sb))
    latin = tmp_path / "latin1.toml"
    latin.write_bytes("# café\n".encode("latin-1") + text.encode())
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    not_utf8, with_bom = await asyncio.gather(
        run_cli("audit", "--config", str(latin)), run_cli("audit", "--config", str(bom))
    )
    assert_clear_error(not_utf8, 2, "latin1.toml: not UTF-8", "byte 0xe9 at line 1, column 6")
    assert with_bom.status == 0, with_bom  # accepted: Windows editors write one


async def test_a_fifo_as_config_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    # Before, the command waited for a writer forever (run_cli gives up after 30 s).
    run = await run_cli("audit", "--config", str(fifo), limit=30)
    assert_clear_error(run, 2, "a FIFO, not a regular file")


async def test_list_and_table_overrides_from_the_environment(
    sb: Sandbox, tmp_path: Path
) -> None:
    config = write_config(sb, tmp_path)
    natural = {"BACKCHANNEL_ROUTING__ORDER": "telegram,email",
               "BACKCHANNEL_ESCALATION__ACK_WORDS": "OK",
               "BACKCHANNEL_LIMITS__SMS": '{"per_second": 2}',
               "BACKCHANNEL_GROUPS__OPS": '["alice", "carol"]'}  # fmt: skip
    good, bad = await asyncio.gather(
        run_cli("audit", "--json", "--config", str(config), env=natural),
        run_cli("audit", "--config", str(config),
                env={"BACKCHANNEL_LIMITS__SMS": "per_second=2",
                     "BACKCHANNEL_ROUTING__ORDER": '["telegram"'}),
    )
    assert good.status == 0, good
    payload = good.json()
    assert payload["enabled_channels"][:2] == ["telegram", "email"]
    assert [(g["group"], g["members"]) for g in payload["groups"]] == [("ops", 2)]
    assert_clear_error(bad, 2, "limits.sms: not valid JSON", "(from $BACKCHANNEL_LIMITS__SMS)",
                       "routing.order: not valid JSON", "(from $BACKCHANNEL_ROUTING__ORDER)")
    assert "per_second=2" not in bad.stderr  # the value may be a secret: never echoed


# 6. An empty or truncated config fails the CI gate --------------------------------------


async def test_audit_of_an_empty_or_truncated_config_fails(sb: Sandbox, tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    no_channel = tmp_path / "no-channel.toml"
    no_channel.write_text('[contacts.alice]\nphone = "+33612345678"\n')
    no_contact = tmp_path / "no-contact.toml"
    data = config_data(sb, {})
    data.pop("groups")
    no_contact.write_text(dump_toml(data))
    runs = await asyncio.gather(*(run_cli("audit", "--config", str(path))
                                  for path in (empty, no_channel, no_contact)))  # fmt: skip
    assert_clear_error(runs[0], 2, "no channel is enabled")
    assert_clear_error(runs[1], 2, "no channel is enabled")
    assert_clear_error(runs[2], 2, "no contact")


async def test_a_group_of_unknown_members_names_twenty_and_the_count(tmp_path: Path) -> None:
    config = tmp_path / "backchannel.toml"
    members = ", ".join(f'"m{index}"' for index in range(10_000))
    config.write_text(f'[contacts.alice]\ntelegram = 1\n[groups]\nops = ["alice", {members}]\n'
                      '[telegram]\nbot_token = "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"\n')
    run = await run_cli("audit", "--config", str(config))
    assert_clear_error(run, 2, "groups.ops: names 10000 unknown contacts: 'm0', 'm1'",
                       "'m19' and 9980 more")
    assert "'m20'" not in run.stderr


# 3. A damaged store: one line, exit 2 when nothing was sent -------------------------------


def damage(store: Path, table: str) -> None:
    """Overwrite the root page of one table, as a bad sector or a torn write would."""
    with sqlite3.connect(store) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    with store.open("r+b") as file:
        file.seek((root[0] - 1) * page_size)
        file.write(b"\xff" * page_size)


@pytest.mark.parametrize("table", ["deliveries", "attempts", "channel_health"])
async def test_a_damaged_store_is_one_clear_line(sb: Sandbox, tmp_path: Path, table: str) -> None:
    config = write_config(sb, tmp_path)
    assert (await run_cli("send", "--to", "alice", "first", "--config", str(config))).status == 0
    sent_before = sum(len(r) for r in sb.received().values())
    damage(tmp_path / "store.db", table)
    run = await run_cli("broadcast", "--group", "ops", "second", "--config", str(config))
    assert_clear_error(run, 2, "store.db is damaged", "Nothing was sent")
    # One line (a background refresh that met it first may say so too, on one line).
    assert all("is damaged" in line for line in run.stderr.strip().splitlines()), run
    assert sum(len(r) for r in sb.received().values()) == sent_before
