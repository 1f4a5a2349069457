"""The reachability run, end to end: the real command against the sandbox peers.

Each exit status (0 redundant, 1 single domain or a channel down, 2 bad config,
3 unreachable) is reached for real: a channel is taken down by refusing its
connections, and a dead man's switch is a small local HTTP peer that records
every ping. The Prometheus textfile is read back with prometheus-client's own
parser.
"""

from __future__ import annotations

import asyncio
import configparser
import shlex
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cli_helpers import CliRun, assert_no_duplicates, peer_traffic, run_cli, write_config
from operator_helpers import invoke, offline_config
from prometheus_client.parser import text_string_to_metric_families
from typer.main import get_command

from router.cli import app
from router.rules.domains import failure_groups, independent_channels
from router.sandbox import Fault, Sandbox

ALICE = {"phone": "+33612345678", "telegram": 111111111, "email": "alice@example.com"}
CAROL = {"telegram": 333333333, "email": "carol@example.com"}
# A phone number alone: WhatsApp, SMS and voice, all on Twilio.
PAUL = {"phone": "+14155552671"}
TINA = {"telegram": 444444444}
DOMAINS = {
    "whatsapp": {"twilio", "meta"}, "sms": {"twilio", "carrier"},
    "voice": {"twilio", "carrier"}, "telegram": {"telegram"}, "email": {"smtp:mx"},
}


@dataclass
class Switch:
    """A healthchecks-style dead man's switch: records pings, answers ``status``."""

    url: str = ""
    status: int = 200
    pings: list[tuple[str, str, str]] = field(default_factory=list)
    """(method, path, body) of every request."""


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sandbox:
        yield sandbox
        assert_no_duplicates(sandbox)


@pytest.fixture
async def switch() -> AsyncIterator[Switch]:
    recorded = Switch()

    async def handle(request: web.Request) -> web.Response:
        recorded.pings.append((request.method, request.path, await request.text()))
        return web.Response(status=recorded.status, text="OK")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    recorded.url = f"http://127.0.0.1:{port}/ping/3f2b9c1e-uuid"
    yield recorded
    await runner.cleanup()


def metrics(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a textfile, parsed by prometheus-client: (name, labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    return samples[(name, tuple(sorted(labels.items())))]


async def reachability(config: Path, *args: str, columns: int | None = 200) -> CliRun:
    return await run_cli("reachability", "--config", str(config), *args, columns=columns)


def contacts_by_name(run: CliRun) -> dict[str, dict[str, Any]]:
    return {c["contact"]: c for c in run.json()["contacts"]}


# -- exit statuses -------------------------------------------------------------------------


async def test_everyone_redundant_exits_0(sb: Sandbox, switch: Switch, tmp_path: Path) -> None:
    config = write_config(sb, tmp_path, {"alice": ALICE, "carol": CAROL})
    textfile = tmp_path / "textfile" / "backchannel.prom"
    textfile.parent.mkdir()

    run = await reachability(config, "--json", "--prometheus", str(textfile),
                             "--ping-url", switch.url)  # fmt: skip

    assert run.status == 0, run
    assert run.stderr == "", run
    payload = run.json()
    assert payload["exit_status"] == 0 and payload["send_test"] is False
    assert payload["summary"] == {"contacts": 2, "reachable": 2, "redundant": 2,
                                  "single_domain": 0, "unreachable": 0, "channels_down": []}
    alice = contacts_by_name(run)["alice"]
    assert alice["reach"] == "redundant"
    assert alice["reachable"] == ["whatsapp", "telegram", "sms", "voice", "email"]
    assert alice["independent"] == ["whatsapp", "telegram", "email"]
    assert alice["failure_groups"] == [["whatsapp", "sms", "voice"], ["telegram"], ["email"]]
    # Probes only: nobody got a message.
    assert all(not sent for sent in sb.received().values()), sb.received()
    samples = metrics(textfile)
    for channel in ("whatsapp", "telegram", "sms", "voice", "email", "twilio"):
        assert value(samples, "backchannel_channel_up", channel=channel) == 1
    assert value(samples, "backchannel_contacts_reachable") == 2
    assert value(samples, "backchannel_contacts_redundant") == 2
    assert value(samples, "backchannel_contacts_unreachable") == 0
    assert value(samples, "backchannel_contact_independent_channels", contact="alice") == 3
    for probe in ("twilio", "telegram", "email"):
        assert value(samples, "backchannel_probe_success", probe=probe) == 1
        assert value(samples, "backchannel_probe_latency_seconds", probe=probe) > 0
    assert not list(textfile.parent.glob("*.tmp*")), "the textfile was not written atomically"
    # The bare URL on success, with counts (no names) as the body.
    assert [(method, path) for method, path, _ in switch.pings] == [("POST", "/ping/3f2b9c1e-uuid")]
    assert switch.pings[0][2].startswith("exit 0: 2 contacts, 2 redundant")
    # Recorded in the store.
    with sqlite3.connect(tmp_path / "store.db") as db:
        runs = db.execute("SELECT exit_status, contacts, redundant, send_test"
                          " FROM reachability_runs").fetchall()  # fmt: skip
        checks = db.execute("SELECT COUNT(*) FROM reachability_checks").fetchone()[0]
    assert runs == [(0, 2, 2, 0)]
    assert checks == 7  # alice on 5 channels, carol on 2


async def test_single_failure_domain_exits_1(sb: Sandbox, switch: Switch, tmp_path: Path) -> None:
    config = write_config(sb, tmp_path, {"alice": ALICE, "paul": PAUL})
    textfile = tmp_path / "backchannel.prom"

    table, as_json = await asyncio.gather(
        reachability(config, "--ping-url", switch.url, columns=None),
        # A switch that does not answer: said on stderr, without the URL's secret path.
        reachability(config, "--json", "--prometheus", str(textfile),
                     "--ping-url", "http://127.0.0.1:9/ping/secret-uuid"),
    )

    assert as_json.status == 1, as_json
    assert "ping to http://127.0.0.1:9/… failed: ClientConnectorError" in as_json.stderr
    assert "secret-uuid" not in as_json.stderr
    paul = contacts_by_name(as_json)["paul"]
    assert paul["reach"] == "single_domain"
    assert paul["reachable"] == ["whatsapp", "sms", "voice"]
    assert paul["failure_groups"] == [["whatsapp", "sms", "voice"]]
    assert len(paul["independent"]) == 1
    samples = metrics(textfile)
    assert value(samples, "backchannel_contacts_reachable") == 2
    assert value(samples, "backchannel_contacts_redundant") == 1
    assert value(samples, "backchannel_contacts_unreachable") == 0
    # The table, as cron mails it: 80 columns, no colour codes.
    assert table.status == 1, table
    assert "\x1b[" not in table.stdout
    assert max(len(line.rstrip()) for line in table.stdout.splitlines()) <= 80, table
    assert "channel health" in table.stdout and "contacts" in table.stdout
    paul_row = next(line for line in table.stdout.splitlines() if line.strip().startswith("paul"))
    assert "1 one domain" in paul_row and "whatsapp" in paul_row, table
    assert "2 contacts: 1 redundant, 1 on one failure domain (paul); exit 1" in table.stdout
    assert [path for _, path, _ in switch.pings] == ["/ping/3f2b9c1e-uuid/fail"]


async def test_a_channel_down_exits_1(sb: Sandbox, switch: Switch, tmp_path: Path) -> None:
    # Alice stays redundant without Telegram (WhatsApp and email), but Telegram is down.
    config = write_config(sb, tmp_path, {"alice": ALICE})
    textfile = tmp_path / "backchannel.prom"
    await sb.telegram.refuse()

    run = await reachability(config, "--json", "--prometheus", str(textfile),
                             "--ping-url", switch.url)  # fmt: skip

    assert run.status == 1, run
    payload = run.json()
    assert payload["summary"]["channels_down"] == ["telegram"]
    assert payload["summary"]["redundant"] == 1
    telegram = next(c for c in payload["channels"] if c["name"] == "telegram")
    assert telegram["up"] is False and telegram["probe"] == "transient"
    alice = contacts_by_name(run)["alice"]
    assert "telegram" not in alice["reachable"]
    assert alice["independent"] == ["whatsapp", "email"]
    samples = metrics(textfile)
    assert value(samples, "backchannel_channel_up", channel="telegram") == 0
    assert value(samples, "backchannel_channel_up", channel="email") == 1
    assert value(samples, "backchannel_probe_success", probe="telegram") == 0
    assert [path for _, path, _ in switch.pings] == ["/ping/3f2b9c1e-uuid/fail"]
    assert "channels down: telegram" in switch.pings[0][2]


async def test_someone_unreachable_exits_3_and_a_failed_ping_is_reported(
    sb: Sandbox, switch: Switch, tmp_path: Path
) -> None:
    config = write_config(sb, tmp_path, {"alice": ALICE, "paul": PAUL, "tina": TINA})
    textfile = tmp_path / "backchannel.prom"
    await sb.telegram.refuse()
    switch.status = 500

    run = await reachability(config, "--prometheus", str(textfile), "--ping-url", switch.url,
                             columns=None)  # fmt: skip

    # The switch failing does not change the run's status, but it is said on stderr,
    # without the secret part of the URL.
    assert run.status == 3, run
    assert "ping to http://127.0.0.1:" in run.stderr and "failed: HTTP 500" in run.stderr, run
    assert "3f2b9c1e" not in run.stderr
    assert [path for _, path, _ in switch.pings] == ["/ping/3f2b9c1e-uuid/fail"] * 2  # retried
    assert "UNREACHABLE" in run.stdout and "tina" in run.stdout
    assert "1 unreachable (tina)" in run.stdout
    samples = metrics(textfile)
    assert value(samples, "backchannel_contacts_unreachable") == 1
    assert value(samples, "backchannel_contacts_reachable") == 2
    assert value(samples, "backchannel_contacts_redundant") == 1
    assert value(samples, "backchannel_reachability_exit_status") == 3


async def test_bad_config_exits_2_and_pings_fail(
    sb: Sandbox, switch: Switch, tmp_path: Path
) -> None:
    config = write_config(sb, tmp_path, {"alice": ALICE}, overrides={"routing": {"bogus": 1}})

    bad = await reachability(config, "--ping-url", switch.url, columns=None)

    assert bad.status == 2, bad
    assert "routing.bogus: unknown key" in bad.stderr
    assert [path for _, path, _ in switch.pings] == ["/ping/3f2b9c1e-uuid/fail"]
    # Nothing was probed: bad input is found first.
    assert peer_traffic(sb) == {"twilio": 0, "vonage": 0, "telegram": 0, "smtp": 0}


def test_bad_arguments_exit_2_before_any_probe(tmp_path: Path) -> None:
    config = offline_config(tmp_path, {"alice": ALICE})
    missing_dir = tmp_path / "no-such-dir" / "backchannel.prom"
    unwritable = invoke(["reachability", "--prometheus", str(missing_dir), "--config", str(config)])
    scheme = invoke(["reachability", "--ping-url", "ftp://example.com/x", "--config", str(config)])
    channel = invoke(["reachability", "--send-test", "--skip", "fax", "--config", str(config)])
    assert unwritable.exit_code == 2 and "--prometheus: cannot write in" in unwritable.stderr
    assert scheme.exit_code == 2 and "--ping-url" in scheme.stderr
    assert channel.exit_code == 2 and "unknown channel 'fax'" in channel.stderr
    assert not (tmp_path / "store.db").exists()


# -- test messages -------------------------------------------------------------------------


async def test_send_test_sends_one_message_per_channel_and_records_it(
    sb: Sandbox, tmp_path: Path
) -> None:
    config = write_config(sb, tmp_path, {"alice": ALICE, "carol": CAROL, "paul": PAUL})
    # Paul's number cannot take SMS: his SMS test fails, for him only.
    sb.twilio.faults.fail("sms", Fault.reject_recipient(), address=PAUL["phone"])

    first = await reachability(config, "--send-test", "--skip", "voice", "--json")

    assert first.status == 1, first
    received = sb.received()
    assert sorted(received["whatsapp"]) == ["whatsapp:+14155552671", "whatsapp:+33612345678"]
    assert sorted(received["telegram"]) == ["111111111", "333333333"]
    assert sorted(received["email"]) == ["alice@example.com", "carol@example.com"]
    assert received["voice"] == []  # skipped: no 3 a.m. test call
    assert sb.twilio.sent("sms")[0].to == "+33612345678"
    assert all("reachability test" in s.text for s in sb.telegram.sent)
    assert all(m.subject == "backchannel reachability test" for m in sb.smtp.received)
    contacts = contacts_by_name(first)
    paul = {c["channel"]: c for c in contacts["paul"]["channels"]}
    assert paul["sms"]["test"]["outcome"] == "permanent" and not paul["sms"]["reachable"]
    assert paul["voice"]["test"] is None and paul["voice"]["reachable"]  # probe only
    assert paul["whatsapp"]["test"]["outcome"] == "accepted"
    assert paul["sms"]["last_success_at"] is None
    assert contacts["paul"]["reachable"] == ["whatsapp", "voice"]
    alice = {c["channel"]: c for c in contacts["alice"]["channels"]}
    tested_at = alice["telegram"]["last_success_at"]
    assert tested_at is not None and alice["telegram"]["acknowledged"] is None

    # The next run, without tests, still shows when each channel last worked.
    second = await reachability(config, "--json")
    again = {c["channel"]: c for c in contacts_by_name(second)["alice"]["channels"]}
    assert again["telegram"]["last_success_at"] == pytest.approx(tested_at)
    assert again["voice"]["last_success_at"] is None
    with sqlite3.connect(tmp_path / "store.db") as db:
        runs = db.execute("SELECT send_test FROM reachability_runs ORDER BY started_at").fetchall()
        failed = db.execute("SELECT contact, channel, outcome FROM reachability_checks"
                            " WHERE tested AND outcome != 'accepted'").fetchall()  # fmt: skip
    assert runs == [(1,), (0,)]
    assert failed == [("paul", "sms", "permanent")]


# -- rules ---------------------------------------------------------------------------------


def test_independent_channels_share_no_domain() -> None:
    assert independent_channels(["whatsapp", "sms", "voice"], DOMAINS) == ("whatsapp",)
    assert independent_channels(["sms", "telegram"], DOMAINS) == ("sms", "telegram")
    assert independent_channels(list(DOMAINS), DOMAINS) == ("whatsapp", "telegram", "email")
    assert independent_channels([], DOMAINS) == ()
    # Independent of each other, although each shares a domain with a third.
    linked = {"a": {"x"}, "b": {"x", "y"}, "c": {"y"}}
    assert independent_channels(["a", "b", "c"], linked) == ("a", "c")
    assert failure_groups(["a", "b", "c"], linked) == (("a", "b", "c"),)


def test_failure_groups_follow_shared_domains() -> None:
    assert failure_groups(list(DOMAINS), DOMAINS) == (
        ("whatsapp", "sms", "voice"), ("telegram",), ("email",)
    )
    assert failure_groups(["telegram"], DOMAINS) == (("telegram",),)


# -- the cron and systemd examples ---------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def reachability_options() -> set[str]:
    command = get_command(app).commands["reachability"]  # type: ignore[attr-defined]
    return {opt for param in command.params for opt in param.opts}


def check_command_line(words: list[str]) -> None:
    assert Path(words[0]).name == "backchannel" and words[1] == "reachability", words
    flags = {word for word in words[2:] if word.startswith("--")}
    assert flags <= reachability_options(), flags - reachability_options()


def test_the_crontab_runs_real_options() -> None:
    jobs = [line for line in (EXAMPLES / "crontab").read_text().splitlines()
            if line and not line.startswith("#") and "=" not in line.split()[0]]  # fmt: skip
    assert len(jobs) == 2
    for job in jobs:
        command = shlex.split(job)[5:]  # after the five time fields
        check_command_line([word for word in command if not word.startswith((">", "2>"))])
    assert "--send-test" in jobs[1] and "--skip voice" in jobs[1]


def test_the_systemd_units_are_well_formed() -> None:
    service = configparser.ConfigParser(interpolation=None, strict=True)
    service.read(EXAMPLES / "backchannel-reachability.service")
    assert service["Service"]["Type"] == "oneshot"
    check_command_line(shlex.split(service["Service"]["ExecStart"]))
    # An environment variable named BACKCHANNEL_* would be taken for a config override.
    assert "${REACHABILITY_PING_URL}" in service["Service"]["ExecStart"]
    timer = configparser.ConfigParser(interpolation=None, strict=True)
    timer.read(EXAMPLES / "backchannel-reachability.timer")
    assert timer["Timer"]["OnCalendar"] == "*:0/15"
    assert timer["Install"]["WantedBy"] == "timers.target"


async def test_a_phone_with_two_sms_providers_is_two_providers_one_carrier(
    sb: Sandbox, tmp_path: Path
) -> None:
    # SMS and voice through Twilio and Vonage: one failure domain still (exit 1), but a
    # Twilio outage no longer cuts the contact off, and the report says both.
    overrides = {"channels": {"whatsapp": None}}
    config = write_config(sb, tmp_path, {"sam": {"phone": "+14155552671"}},
                          overrides=overrides, vonage=True)
    await sb.twilio.refuse()
    run = await reachability(config, "--json")
    assert run.status == 1, run
    sam = contacts_by_name(run)["sam"]
    assert sam["reach"] == "single_domain"
    assert sam["reachable"] == ["sms", "voice"]  # through Vonage, with Twilio down
    assert sam["providers"] == ["twilio", "vonage"]
    assert sam["survives_provider_outage"] is True
    assert sam["redundancy"] == "two providers, one carrier"
    assert {c["channel"]: c["providers"] for c in sam["channels"]} == {
        "sms": ["twilio", "vonage"], "voice": ["twilio", "vonage"]}
    table = await reachability(config, columns=None)
    assert "sms via twilio+vonage" in table.stdout, table
    assert sb.vonage.sms == [] and sb.vonage.calls == {}  # probes send nothing
