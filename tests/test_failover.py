"""Health end to end: breakers against the sandbox peers, and health shared between processes."""

from __future__ import annotations

import asyncio
import json
import sys
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from scripted import FakeClock

from config import settings_from_mapping
from router import Message, Router, Status
from router.model.health import State
from router.sandbox import Fault, Sandbox

CONCURRENCY = 16
FAST_LIMITS = {
    "telegram": {"per_second": 100_000, "per_recipient_per_second": 1000},
    "sms": {"per_second": 100_000},
    "whatsapp": {"per_second": 100_000},
    "voice": {"per_second": 100_000},
}


def many_contacts(count: int) -> dict[str, dict[str, object]]:
    return {
        f"c{i:03d}": {"phone": f"+336{10_000_000 + i:08d}", "telegram": 500_000 + i}
        for i in range(count)
    }


def router_settings(sandbox: Sandbox, tmp_path: Path, contacts: Mapping[str, Any],
                    **sections: dict[str, Any]) -> dict[str, Any]:
    config = tomllib.loads(sandbox.config_toml(contacts=contacts))
    config["store"] = {"path": str(tmp_path / "bc.db")}
    config["routing"] |= {"concurrency": CONCURRENCY}
    config["limits"] = FAST_LIMITS
    for name, values in sections.items():
        config[name] = config.get(name, {}) | values
    return config


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox() as peers:
        yield peers


def whatsapp_requests(sandbox: Sandbox) -> int:
    return sum(
        1 for r in sandbox.twilio.requests if r.channel == "whatsapp" and r.method == "POST"
    )


def assert_nothing_twice(sandbox: Sandbox) -> None:
    for channel, recipients in sandbox.received().items():
        twice = [who for who, n in Counter(recipients).items() if n > 1]
        assert not twice, f"{channel} sent twice to {twice}"


async def test_a_dead_channel_costs_one_wave_then_recovers(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    contacts = many_contacts(200)
    config = router_settings(
        sandbox, tmp_path, contacts,
        health={"failure_threshold": 3, "cooldown": 30, "max_cooldown": 60},
    )
    clock = FakeClock()
    sandbox.twilio.faults.fail("whatsapp", Fault.http(503))
    async with Router(settings_from_mapping(config), clock=clock) as router:
        result = await router.broadcast(Message("outage"), group="ops")
        assert result.reached_all
        assert {r.channel for r in result} == {"telegram"}
        wasted = whatsapp_requests(sandbox)
        # Once the breaker opens no new request starts: the first wave, plus at most the
        # retries that fired before it had seen its threshold of failures (fake time
        # makes the retry pause instant; with the real 0.5 s backoff there are none).
        threshold = config["health"]["failure_threshold"]
        assert threshold <= wasted <= CONCURRENCY + threshold - 1
        assert router.health.breaker("whatsapp").state is State.DOWN
        skipped = sum(1 for r in result if any(s.channel == "whatsapp" for s in r.skipped))
        assert skipped >= 200 - CONCURRENCY

        # The provider is back. Within the maximum cool-down, one trial closes the breaker.
        await sandbox.clear()
        clock.advance(60)
        first = await router.send(Message("all clear"), to="c000")
        assert first.channel == "whatsapp"
        assert router.health.breaker("whatsapp").state is State.UP
        again = await router.broadcast(Message("all clear"), to=["c001", "c002", "c003"])
        assert {r.channel for r in again} == {"whatsapp"}
    assert_nothing_twice(sandbox)


async def test_recipient_failures_do_not_take_a_channel_down(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    contacts = many_contacts(30)
    config = router_settings(sandbox, tmp_path, contacts, health={"failure_threshold": 2})
    sandbox.twilio.faults.fail("whatsapp", Fault.reject_recipient(code=21211))
    async with Router(settings_from_mapping(config), clock=FakeClock()) as router:
        result = await router.broadcast(Message("hello"), group="ops")
        assert router.health.breaker("whatsapp").state is State.UP
    assert result.reached_all
    # Every contact was tried on WhatsApp: a bad number says nothing about the channel.
    assert whatsapp_requests(sandbox) == 30


async def test_a_twilio_outage_takes_three_channels_down_together(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    contacts = {"ann": {"phone": "+33612345678", "email": "ann@example.com"}}
    config = router_settings(sandbox, tmp_path, contacts)
    async with Router(settings_from_mapping(config), clock=FakeClock()) as router:
        await sandbox.twilio.refuse()
        outcomes = await router.probe()
        assert not outcomes["twilio"].ok
        before = len(sandbox.twilio.requests)
        result = await router.send(Message("hello"), to="ann")
    assert result.channel == "email"
    assert [s.channel for s in result.skipped] == ["whatsapp", "sms", "voice"]
    assert {s.reason for s in result.skipped} == {"twilio is down"}
    assert len(sandbox.twilio.requests) == before


async def test_every_channel_down_still_tries_a_last_resort(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    contacts = {"ann": {"telegram": 42, "email": "ann@example.com"}}
    config = router_settings(sandbox, tmp_path, contacts)
    clock = FakeClock()
    async with Router(settings_from_mapping(config), clock=clock) as router:
        await sandbox.telegram.refuse()
        await router.probe()
        clock.advance(1)
        await sandbox.smtp.refuse()
        await router.probe()
        await sandbox.clear()
        result = await router.send(Message("hello"), to="ann")
    assert result.status is Status.ACCEPTED
    assert result.channel == "telegram"  # down longest
    assert any("last resort" in note for note in result.notes)


async def test_a_429_pauses_the_channel_and_nothing_is_lost_or_doubled(
    tmp_path: Path,
) -> None:
    contacts = many_contacts(24)
    async with Sandbox(telegram_flood_limit=(8, 1)) as sandbox:
        config = router_settings(
            sandbox, tmp_path, contacts,
            routing={"order": ["telegram", "sms"], "tries_per_channel": 6},
            limits={"telegram": {"per_second": 40, "per_recipient_per_second": 1}},
        )
        async with Router(settings_from_mapping(config)) as router:
            result = await router.broadcast(Message("flood"), group="ops")
        assert result.reached_all
        assert sandbox.telegram.rate_limited_count > 0
        retried = [r for r in result if len(r.attempts) > 1]
        assert retried, "the peer's 429s should have made the router wait and retry"
        for r in retried:
            assert r.attempts[0].outcome.retry_after is not None
        assert_nothing_twice(sandbox)
        telegram_chats = Counter(str(s.chat_id) for s in sandbox.telegram.sent)
        by_sms = sum(1 for r in result if r.channel == "sms")
        assert len(telegram_chats) + by_sms == len(contacts)


async def run_cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_probe_in_one_process_steers_a_broadcast_in_another(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    contacts = {
        "ann": {"telegram": 41, "email": "ann@example.com"},
        "bea": {"telegram": 42, "email": "bea@example.com"},
    }
    config_path = tmp_path / "backchannel.toml"
    config_path.write_text(
        sandbox.config_toml(contacts=contacts, store_path="bc.db")
        + "\n[health]\ncooldown = 120\nmax_cooldown = 300\n"
    )
    await sandbox.telegram.refuse()
    status, out, _ = await run_cli("probe", "--json", "--config", str(config_path), cwd=tmp_path)
    assert status == 1
    telegram = next(c for c in json.loads(out)["channels"] if c["name"] == "telegram")
    assert telegram["state"] == "down"

    await sandbox.clear()  # Telegram works again, but this process was told it is down.
    status, out, _ = await run_cli(
        "broadcast", "--group", "ops", "--json", "--config", str(config_path), "hello",
        cwd=tmp_path,
    )
    assert status == 0
    results = json.loads(out)["results"]
    assert {r["channel"] for r in results} == {"email"}
    assert not [r for r in sandbox.telegram.requests if r.path.endswith("/sendMessage")]

    status, out, _ = await run_cli("status", "--json", "--config", str(config_path), cwd=tmp_path)
    assert status == 0
    rows = {c["name"]: c for c in json.loads(out)["channels"]}
    assert rows["telegram"]["state"] == "down"
    assert "cannot reach Telegram" in rows["telegram"]["last_error"]
    assert rows["email"]["state"] == "up"
