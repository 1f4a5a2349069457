"""Incidents end to end: the real ``backchannel`` commands and ``backchannel serve``
processes against the sandbox peers, with real time.

The acceptance run: a group of 20 in which 3 have no working channel; two acknowledge
(a Telegram button, an SMS code); an update and the all-clear reach the 17 and not the 3;
no call after the resolve; the timeline lists it all in order. Then the promise: one
reminder, also across a killed and restarted server, and with two servers on one
PostgreSQL; none when the update comes in time.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cli_helpers import (
    CliRun,
    clean_env,
    free_port,
    peer_traffic,
    run_cli,
    until_serving,
    write_config,
)

from router.sandbox import Fault, Sandbox

TELEGRAM = {f"tg{i:02d}": {"telegram": 700_000 + i} for i in range(1, 9)}
PHONES = {f"ph{i:02d}": {"phone": f"+336{12_000_000 + i:08d}"} for i in range(1, 10)}
UNREACHABLE = {
    "lost_bot": {"telegram": 799_001},  # blocked the bot
    "lost_sms": {"sms": "+33699000001"},  # a number the carrier refuses
    "lost_mail": {"email": "gone@example.com"},  # the mailbox no longer exists
}
GROUP = {**TELEGRAM, **PHONES, **UNREACHABLE}
REACHABLE = sorted([*TELEGRAM, *PHONES])
ACK_WAIT = 4.0


def configure(sandbox: Sandbox, tmp_path: Path, port: int, contacts: Mapping[str, Any], *,
              url: str | None = None, **extra: Any) -> Path:
    overrides: dict[str, Any] = {
        "routing": {"order": ["telegram", "sms", "voice", "email"]},
        "webhooks": {"public_url": f"http://127.0.0.1:{port}", "port": port},
        "escalation": {"ack_wait": ACK_WAIT, "repeats": 2, "repeat_every": ACK_WAIT},
        "incidents": {"timezone": "UTC", "status_title": "Example status"},
        **extra,
    }
    if url is not None:
        overrides["store"] = {"url": url, "path": None}
    sandbox.twilio.inbound_url = f"http://127.0.0.1:{port}/webhooks/twilio/inbound"
    return write_config(sandbox, tmp_path, dict(contacts), overrides=overrides)


@asynccontextmanager
async def serving(config: Path, port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "serve", "--config", str(config), "--port",
        str(port), env=clean_env(), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    await until_serving(server, port)
    try:
        yield server
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
            await server.wait()


async def until(condition: Any, what: str, limit: float = 20.0) -> None:
    try:
        async with asyncio.timeout(limit):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def cli(*args: str, config: Path) -> CliRun:
    return await run_cli(*args, "--config", str(config))


def rows(store: Path, query: str, *params: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        return db.execute(query, params).fetchall()


def traffic(sandbox: Sandbox) -> dict[str, int]:
    return {"voice": len(sandbox.twilio.sent("voice")), "sms": len(sandbox.twilio.sent("sms")),
            "whatsapp": len(sandbox.twilio.sent("whatsapp")),
            "telegram": len(sandbox.telegram.sent), "email": len(sandbox.smtp.received)}


async def open_and_stop_waiting(config: Path, *args: str) -> str:
    """``incident open --until acknowledged``, as a crisis cell runs it: it waits with a
    live table until Ctrl-C, and the server carries on. Returns the incident's id."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "incident", "open", *args, "--until",
        "acknowledged", "--config", str(config), env=clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    seen = []
    async with asyncio.timeout(60):
        while "waiting until acknowledged" not in (line := (await process.stdout.readline())
                                                   .decode()):
            if not line:
                err = await process.stderr.read() if process.stderr else b""
                raise AssertionError(f"incident open exited: {seen} {err.decode()}")
            seen.append(line)
    process.send_signal(signal.SIGINT)
    _, err = await process.communicate()
    assert process.returncode == 130, err.decode()
    assert "the running backchannel serve carries on" in err.decode()
    opened = next(line for line in seen if line.startswith("incident inc-"))
    return opened.split()[1].rstrip(":")


@pytest.mark.slow
async def test_an_incident_from_the_first_alert_to_the_all_clear(tmp_path: Path) -> None:
    port = free_port()
    async with Sandbox() as sandbox:
        sandbox.telegram.faults.fail("telegram", Fault.reject_recipient(code=403),
                                     address="799001")
        sandbox.twilio.faults.fail("sms", Fault.reject_recipient(code=21211),
                                   address="+33699000001")
        sandbox.smtp.faults.fail("email", Fault.smtp(550, "no such mailbox"),
                                 address="gone@example.com")
        config = configure(sandbox, tmp_path, port, GROUP)
        async with serving(config, port):
            incident = await open_and_stop_waiting(
                config, "--title", "Payroll DB down", "--group", "ops", "--public-text",
                "We are investigating an outage of the payroll portal.",
                "Payroll DB primary down: failover starting. Acknowledge please.")

            # tg01 presses the Telegram button; ph01 replies with the code of its SMS.
            alert = next(m for m in sandbox.telegram.sent if m.chat_id == 700_001)
            keyboard: Any = alert.reply_markup
            await sandbox.telegram.push_callback_query(
                700_001, alert.message_id, str(keyboard["inline_keyboard"][0][0]
                                               ["callback_data"]))
            sms = next(m for m in sandbox.twilio.sent("sms") if m.to == "+33612000001")
            code = re.search(r"Reply (\d{4}) to acknowledge", sms.body)
            assert code is not None, sms.body
            assert await sandbox.twilio.deliver_inbound("+33612000001", sms.from_ or "",
                                                        code.group(1)) == 200
            store = tmp_path / "store.db"
            await until(lambda: len(rows(store, "SELECT 1 FROM inbound WHERE kind = 'ack'"))
                        == 2, "two acknowledgements")

            update = await cli("incident", "update", incident, "--json", "--public-text",
                               "Failover in progress; the portal is slow.",
                               "Failover started, ETA 15 min.", config=config)
            assert update.status == 0, update
            assert sorted(update.results()) == REACHABLE
            # Each on the channel they answered on, first.
            assert update.results()["tg01"]["channel"] == "telegram"
            assert update.results()["ph01"]["channel"] == "sms"

            done = await cli("incident", "resolve", incident, "--json", "--public-text",
                             "Resolved: the portal works again.", "All clear.", config=config)
            assert done.status == 0, done
            assert sorted(done.results()) == REACHABLE
            assert done.json()["escalations_stopped"] > 0
            after_resolve = traffic(sandbox)

            # Every wait pending at the resolve would have ended by now (each is at most
            # ACK_WAIT long, the repeats too), with the server escalating: not a word.
            await asyncio.sleep(ACK_WAIT + 1.5)
            assert traffic(sandbox) == after_resolve

            show = await cli("incident", "show", incident, "--json", config=config)
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://127.0.0.1:{port}/status") as answer:
                page = await answer.text()
    report = show.json()
    timeline = report["timeline"]
    assert [e["kind"] for e in timeline] == [
        "opened", "acknowledged", "acknowledged", "update", "resolved"]
    assert {(e["contact"], e["channel"]) for e in timeline[1:3]} == {
        ("tg01", "telegram"), ("ph01", "sms")}
    assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)
    assert [e["sent_to"] for e in report["timeline"] if "sent_to" in e] == [20, 17, 17]
    assert report["reached"] == 17 and report["acknowledged"] == 2
    assert sorted(report["never_reached"]) == sorted(UNREACHABLE)
    assert report["state"] == "resolved"
    assert "Resolved: the portal works again." in page
    assert "Payroll DB" not in page and "tg01" not in page


@pytest.mark.slow
async def test_a_late_promise_reminds_once_across_a_killed_server(tmp_path: Path) -> None:
    port = free_port()
    people = {"alice": {"telegram": 111_111_111}, "bob": {"telegram": 222_222_222}}
    async with Sandbox() as sandbox:
        config = configure(sandbox, tmp_path, port, people,
                           incidents={"owner": "alice", "timezone": "UTC"},
                           escalation={"ack_wait": 600, "repeats": 0})
        async with serving(config, port) as server:
            late = await cli("incident", "open", "--title", "Disk full", "-g", "ops",
                             "--next-update", "3s", "--json", "disk full on db-1", config=config)
            assert late.status == 0, late
            kept = await cli("incident", "open", "--title", "Queue stuck", "-g", "ops",
                             "--next-update", "3s", "--json", "queue stuck", config=config)
            assert kept.status == 0, kept
            server.kill()  # SIGKILL: nothing in memory survives
            await server.wait()
        in_time = await cli("incident", "update", kept.json()["incident_id"], "--json",
                            "queue drained", config=config)
        assert in_time.status == 0, in_time
        await asyncio.sleep(3.5)  # the first promise passes while no server runs
        async with serving(config, port):
            await until(lambda: reminders(sandbox), "the reminder")
            await asyncio.sleep(2.0)  # long enough for a second one, were there one
        sent = reminders(sandbox)
    assert len(sent) == 1
    assert late.json()["incident_id"] in sent[0]
    store = tmp_path / "store.db"
    assert rows(store, "SELECT e.incident_id FROM messages m JOIN incident_entries e"
                       " ON e.id = m.incident_entry WHERE e.kind = 'reminder'") == [
        (late.json()["incident_id"],)]


def reminders(sandbox: Sandbox) -> list[str]:
    """Reminders alice (the owner, on Telegram) received."""
    return [m.text for m in sandbox.telegram.sent
            if m.chat_id == 111_111_111 and m.text.startswith("Reminder")]


@pytest.mark.slow
async def test_two_servers_on_one_postgresql_remind_once(pg_url: str, tmp_path: Path) -> None:
    ports = free_port(), free_port()
    people = {"alice": {"telegram": 111_111_111}, "bob": {"telegram": 222_222_222}}
    async with Sandbox() as sandbox:
        config = configure(sandbox, tmp_path, ports[0], people, url=pg_url,
                           incidents={"owner": "alice", "timezone": "UTC"},
                           escalation={"ack_wait": 600, "repeats": 0})
        async with serving(config, ports[0]), serving(config, ports[1]):
            late = await cli("incident", "open", "--title", "Disk full", "-g", "ops",
                             "--next-update", "2s", "--json", "disk full", config=config)
            assert late.status == 0, late
            await until(lambda: reminders(sandbox), "the reminder")
            await asyncio.sleep(2.0)
        assert len(reminders(sandbox)) == 1
        listed = await cli("incident", "list", "--json", config=config)
    [incident] = listed.json()["incidents"]
    assert incident["overdue"] is True  # reminded, and still late until an update comes


async def test_bad_input_exits_2_and_sends_nothing(tmp_path: Path) -> None:
    port = free_port()
    people = {"alice": {"telegram": 111_111_111}, "bob": {"telegram": 222_222_222}}
    async with Sandbox() as sandbox:
        config = configure(sandbox, tmp_path, port, people)
        opened = await cli("incident", "open", "--title", "t", "-g", "ops", "--json", "x",
                           config=config)
        incident = opened.json()["incident_id"]
        closed = await cli("incident", "resolve", incident, "--json", "done", config=config)
        assert (opened.status, closed.status) == (0, 0)
        before = traffic(sandbox)
        cases = [
            (("incident", "update", "inc-nope99", "x"), "no incident 'inc-nope99'"),
            (("incident", "show", "inc-nope99"), "no incident 'inc-nope99'"),
            (("incident", "resolve", incident, "again"), "resolved already"),
            (("incident", "update", incident, "more"), "takes no more updates"),
            (("incident", "open", "--title", "t", "-g", "ops", "--next-update", "soon", "x"),
             "--next-update"),
            (("incident", "open", "--title", "t", "-g", "ops", "--next-update", "30m", "x"),
             "needs an owner"),
            (("incident", "open", "--title", "t", "-g", "ops", "--template", "nope"),
             "unknown template 'nope'"),
        ]  # more bad input, through the Python API: test_incidents.py
        for args, problem in cases:
            run = await cli(*args, config=config)
            assert run.status == 2, run
            assert problem in run.stderr, run
            assert "Traceback" not in run.stderr
        assert traffic(sandbox) == before
        listed = await cli("incident", "list", "--json", config=config)
    assert len(listed.json()["incidents"]) == 1


async def test_a_dry_run_opens_nothing_and_shows_what_would_be_published(
    tmp_path: Path,
) -> None:
    port = free_port()
    people = {"alice": {"telegram": 111_111_111}, "bob": {"telegram": 222_222_222}}
    async with Sandbox() as sandbox:
        config = configure(sandbox, tmp_path, port, people, templates={"outage": {
            "text": "{{ title }}: {{ site }} is down", "public": "{{ site }} is unavailable."}})
        run = await cli("incident", "open", "--title", "Lyon DC down", "-g", "ops",
                        "--template", "outage", "--var", "site=Lyon", "--dry-run",
                        config=config)
        listed = await cli("incident", "list", "--json", config=config)
        assert traffic(sandbox) == dict.fromkeys(traffic(sandbox), 0)
    assert run.status == 0, run
    assert "public status page: Lyon is unavailable." in run.stdout
    assert "Lyon DC down: Lyon is down" in run.stdout
    assert listed.json()["incidents"] == []


async def test_status_page_export_writes_the_page_and_the_feed(tmp_path: Path) -> None:
    import feedparser

    port = free_port()
    people = {"alice": {"telegram": 111_111_111}}
    async with Sandbox() as sandbox:
        config = configure(sandbox, tmp_path, port, people)
        opened = await cli("incident", "open", "--title", "t", "-g", "ops", "--public",
                           "Investigating.", "internal words", config=config)
        assert opened.status == 0, opened
        before = peer_traffic(sandbox)
        run = await cli("status-page", "export", str(tmp_path / "site"), config=config)
        assert peer_traffic(sandbox) == before  # the store only: no provider is asked
        (tmp_path / "file").write_text("not a directory")
        refused = await cli("status-page", "export", str(tmp_path / "file"), config=config)
    assert run.status == 0, run
    feed = feedparser.parse((tmp_path / "site" / "feed.atom").read_text())
    assert feed.bozo == 0 and [e.content[0].value for e in feed.entries] == ["Investigating."]
    assert "Investigating." in (tmp_path / "site" / "index.html").read_text()
    assert refused.status == 2 and "cannot write" in refused.stderr, refused


def test_json_of_each_step_names_the_incident() -> None:
    # The contract: {"incident_id", "message_id", "results"} (more keys may follow).
    from router.incidents import IncidentResult
    from router.model.results import BroadcastResult
    from router.store.incidents import EntryRecord

    entry = EntryRecord("e1", "inc-abc234", "update", 1_800_000_000.0, "x")
    payload = IncidentResult("inc-abc234", entry, BroadcastResult("msg_1")).to_json()
    assert list(payload)[:3] == ["incident_id", "message_id", "results"]
    assert json.loads(json.dumps(payload))["incident_id"] == "inc-abc234"
