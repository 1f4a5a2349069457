"""The durable outbox: idempotency, attaching, expiry, resume and reconciliation."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from scripted import FakeClock, ScriptedChannel

from config import settings_from_mapping
from config.sections import StoreSettings
from router import BadInput, Message, Outcome, Router, Status, Verdict
from router.sandbox import Fault, Sandbox
from router.sending.ownership import new_owner
from router.store import AttemptStart, DeliverySeed, MessageRecord, SqliteStore, open_store

DEAD_OWNER = "some-other-host:4242:deadbeef"  # heartbeat long gone: orphaned


def scripted_router(store: dict[str, Any], *channels: ScriptedChannel,
                    clock: FakeClock | None = None,
                    **routing: Any) -> Router:
    config = {
        "routing": {"order": [c.name for c in channels], "retry_backoff": 0.1, **routing},
        "store": store,
        "contacts": {
            "ann": {"phone": "+33612345678", "email": "ann@example.com"},
            "bob": {"phone": "+33698765432", "email": "bob@example.com"},
        },
        "groups": {"ops": ["ann", "bob"]},
    }
    return Router(settings_from_mapping(config), channels={c.name: c for c in channels},
                  clock=clock or FakeClock())


async def test_a_repeated_key_returns_the_first_result_and_sends_nothing(
    store_section: dict[str, Any],
) -> None:
    sms = ScriptedChannel("sms")
    async with scripted_router(store_section, sms) as router:
        first = await router.broadcast(Message("outage"), group="ops", idempotency_key="inc-42")
        again = await router.broadcast(Message("outage"), group="ops", idempotency_key="inc-42")
        single = await router.send(Message("outage"), to="ann", idempotency_key="inc-43")
        single_again = await router.send(Message("outage"), to="ann", idempotency_key="inc-43")
    assert again.message_id == first.message_id
    assert [(r.contact, r.status, r.channel) for r in again] == [
        (r.contact, r.status, r.channel) for r in first
    ]
    assert [a.attempt_id for r in again for a in r.attempts] == [
        a.attempt_id for r in first for a in r.attempts
    ]
    assert single_again.message_id == single.message_id
    assert len(sms.sent) == 3  # two for the broadcast, one for the send


async def test_a_key_reused_for_other_words_or_people_is_refused(
    store_section: dict[str, Any],
) -> None:
    sms = ScriptedChannel("sms")
    async with scripted_router(store_section, sms) as router:
        await router.broadcast(Message("outage"), group="ops", idempotency_key="k")
        with pytest.raises(BadInput, match="idempotency key"):
            await router.broadcast(Message("all clear"), group="ops", idempotency_key="k")
        with pytest.raises(BadInput, match="idempotency key"):
            await router.send(Message("outage"), to="ann", idempotency_key="k")
    assert len(sms.sent) == 2


async def test_an_expired_message_is_not_sent_late(store_section: dict[str, Any]) -> None:
    clock = FakeClock()
    slow = Outcome.transient("HTTP 429", retry_after=20)
    sms = ScriptedChannel("sms").will(slow, slow, slow)
    email = ScriptedChannel("email")
    async with scripted_router(store_section, sms, email, clock=clock) as router:
        result = await router.send(Message("the site is down"), to="ann", expires_after=30)
        statuses = await router.store.run(
            lambda tx: tx.fetchall("SELECT status FROM deliveries")
        )
    assert result.status is Status.EXPIRED
    assert len(sms.sent) == 2  # the third try would have come after the deadline
    assert email.sent == []
    assert statuses == [("expired",)]


async def test_a_message_left_by_a_dead_process_is_resumed_without_resending(
    store_section: dict[str, Any],
) -> None:
    """The dead process got an answer for ann on sms, and crashed mid-request for bob."""
    store = open_store(StoreSettings(**store_section))
    await store.open()
    body = json.dumps(Message("outage").to_json(), sort_keys=True)
    record = MessageRecord("msg_dead", body, '{"group": "ops"}', "fp", 1_700_000_000.0)
    addresses = {"ann": {"sms": "+33612345678", "email": "ann@example.com"},
                 "bob": {"sms": "+33698765432", "email": "bob@example.com"}}
    await store.claim_message(
        record,
        [DeliverySeed(name, json.dumps({"addresses": a, "order": None}))
         for name, a in addresses.items()],
        owner=DEAD_OWNER, owner_is_alive=lambda owner, beat: True,
    )
    for name in ("ann", "bob"):
        await store.begin_attempt(AttemptStart(
            f"att_{name}", "msg_dead", name, "sms", addresses[name]["sms"], "first",
            1_700_000_000.0,
        ))
    await store.finish_attempt("att_ann", Outcome.accepted("SM1"), 1_700_000_001.0,
                               delivery_status="accepted", delivery_channel="sms")
    await store.heartbeat(["msg_dead"], owner=DEAD_OWNER, at=1_700_000_001.0)
    await store.close()

    sms, email = ScriptedChannel("sms"), ScriptedChannel("email")
    async with scripted_router(store_section, sms, email) as router:
        [resumed] = await router.resume()
        assert await router.resume() == []  # nothing left
    by_contact = {r.contact: r for r in resumed}
    assert by_contact["ann"].status is Status.ACCEPTED and by_contact["ann"].channel == "sms"
    bob = by_contact["bob"]
    # bob's sms attempt may have gone out: never again on sms; the route went on to email.
    assert sms.sent == []
    assert [(a.channel, a.outcome.verdict) for a in bob.attempts] == [
        ("sms", Verdict.UNKNOWN), ("email", Verdict.ACCEPTED)
    ]
    assert "in doubt" in bob.attempts[0].outcome.detail


async def test_a_long_running_router_picks_up_orphaned_work(store_section: dict[str, Any]) -> None:
    store = open_store(StoreSettings(**store_section))
    await store.open()
    body = json.dumps(Message("outage").to_json(), sort_keys=True)
    record = MessageRecord("msg_orphan", body, '{"to": "ann"}', "fp", 1_700_000_000.0)
    contact = json.dumps({"addresses": {"email": "ann@example.com"}, "order": None})
    await store.claim_message(record, [DeliverySeed("ann", contact)], owner=DEAD_OWNER,
                              owner_is_alive=lambda owner, beat: True)
    await store.close()
    email = ScriptedChannel("email")
    router = scripted_router(store_section, email)
    router.long_running = True
    async with router:
        await email.wait_sent()  # the orphan is picked up: nothing else would send it
    assert [address for address, _, _ in email.sent] == ["ann@example.com"]


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox() as peers:
        yield peers


def sandbox_config(sandbox: Sandbox, tmp_path: Path, **extra: dict[str, Any]) -> Path:
    path = tmp_path / "backchannel.toml"
    path.write_text(sandbox.config_toml(
        store_path=str(tmp_path / "bc.db"),
        overrides={"limits.sms": {"per_second": 100}, **extra},
    ))
    return path


async def cli(*args: str, config: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", *args, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_two_concurrent_runs_with_one_key_send_one_broadcast(
    tmp_path: Path,
) -> None:
    async with Sandbox(latency=0.8) as sandbox:
        config = sandbox_config(sandbox, tmp_path, routing={"concurrency": 1})
        first = asyncio.create_task(cli("broadcast", "--group", "ops", "--json",
                                        "--idempotency-key", "inc-7", "outage", config=config))
        async with asyncio.timeout(30):
            while not any(sandbox.received().values()):  # the first run has started sending
                await asyncio.sleep(0.05)
        second = await cli("-v", "broadcast", "--group", "ops", "--json", "--idempotency-key",
                           "inc-7", "outage", config=config)
        first_status, first_out, _ = await first
        received = sandbox.received()
        status, _, err = await cli("broadcast", "--group", "ops", "--idempotency-key", "inc-7",
                                   "something else", config=config)
        assert status == 2 and "idempotency key" in err
    assert (first_status, second[0]) == (0, 0), second[2]
    assert "being sent by another process" in second[2]  # it attached, and waited
    one, two = json.loads(first_out), json.loads(second[1])
    assert one["message_id"] == two["message_id"]
    assert [(r["contact"], r["status"], r["channel"]) for r in one["results"]] == [
        (r["contact"], r["status"], r["channel"]) for r in two["results"]
    ]
    sent = Counter(address for addresses in received.values() for address in addresses)
    assert len(sent) == 4 and set(sent.values()) == {1}  # four contacts, once each


async def test_an_in_doubt_twilio_attempt_is_found_by_reconciliation(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """SMS stalls (Twilio got it, the answer never comes); the process is killed mid-wait."""
    config = sandbox_config(
        sandbox, tmp_path, routing={"order": ["sms", "email"]}, twilio={"timeout": 30},
    )
    sandbox.twilio.faults.fail("sms", Fault.stall())
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "send", "--to", "alice", "--config", str(config),
        "outage", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(60):
        while not sandbox.twilio.sent("sms"):  # Twilio has it; the answer will never come
            await asyncio.sleep(0.02)
    process.kill()
    await process.wait()
    sandbox.twilio.faults.clear()

    status, out, err = await cli("resume", "--json", config=config)
    assert status == 0, err
    [result] = json.loads(out)["resumed"][0]["results"]
    assert result["status"] == "accepted" and result["channel"] == "sms"
    [attempt] = result["attempts"]
    assert attempt["provider_id"] == sandbox.twilio.sent("sms")[0].sid
    assert "found at the provider" in attempt["detail"]
    assert len(sandbox.twilio.sent("sms")) == 1 and sandbox.smtp.received == []


async def test_history_shows_every_attempt_with_addresses_masked(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    config = sandbox_config(sandbox, tmp_path, routing={"retry_backoff": 0.01})
    sandbox.twilio.faults.fail("whatsapp", Fault.http(503))
    status, _, _ = await cli("send", "--to", "alice", "outage", config=config)
    assert status == 0
    status, out, _ = await cli("history", "--contact", "alice", "--json", config=config)
    assert status == 0
    attempts = json.loads(out)["attempts"]
    assert [a["channel"] for a in attempts][-1] == "whatsapp"  # newest first
    assert attempts[0]["channel"] == "telegram" and attempts[0]["outcome"] == "accepted"
    assert all("+33612345678" not in a["address"] for a in attempts)
    assert all(a["message_id"] == attempts[0]["message_id"] for a in attempts)
    status, out, _ = await cli("history", config=config)
    assert status == 0 and "+33612345678" not in out and "alice" in out
    status, _, err = await cli("history", "--contact", "nobody", config=config)
    assert status == 2 and "unknown contact" in err


async def test_expires_after_is_parsed_and_checked(sandbox: Sandbox, tmp_path: Path) -> None:
    config = sandbox_config(sandbox, tmp_path)
    status, _, err = await cli("send", "--to", "alice", "--expires-after", "soon", "x",
                               config=config)
    assert status == 2 and "--expires-after" in err
    status, out, _ = await cli("send", "--to", "alice", "--expires-after", "15m", "--json", "x",
                               config=config)
    assert status == 0 and json.loads(out)["results"][0]["status"] == "accepted"
    assert not sandbox.twilio.requests or all(r.answer != "stall" for r in sandbox.twilio.requests)
    assert new_owner() != new_owner()


async def test_an_earlier_message_is_not_taken_for_a_lost_one(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A call made for an earlier alert must not count as proof that a lost request went
    through: the lost one stays in doubt and the route goes on to email."""
    config = sandbox_config(sandbox, tmp_path, routing={"order": ["voice", "email"]})
    status, _, _ = await cli("send", "--to", "bob", "disk full on db1", config=config)
    assert status == 0 and len(sandbox.twilio.sent("voice")) == 1
    # A second alert whose call request was recorded, then the process died before it
    # reached Twilio (as if killed between the durable 'sending' row and the request).
    store = SqliteStore(tmp_path / "bc.db")
    await store.open()
    contact = json.dumps({"addresses": {"voice": "+14155552671", "email": "bob@example.com"},
                          "order": ["voice", "email"]})
    body = json.dumps({"text": "db1 is down", "subject": None, "by_channel": {}, "until":
                       "accepted"}, sort_keys=True)
    now = time.time()
    await store.claim_message(MessageRecord("msg_lost", body, '{"to": "bob"}', "fp", now),
                              [DeliverySeed("bob", contact)], owner=DEAD_OWNER,
                              owner_is_alive=lambda owner, beat: True)
    await store.begin_attempt(AttemptStart("att_lost", "msg_lost", "bob", "voice",
                                           "+14155552671", "first", now))
    await store.heartbeat(["msg_lost"], owner=DEAD_OWNER, at=now - 3600)
    await store.close()

    status, out, err = await cli("resume", "--json", config=config)
    assert status == 0, err
    [result] = json.loads(out)["resumed"][0]["results"]
    assert [(a["channel"], a["outcome"]) for a in result["attempts"]] == [
        ("voice", "unknown"), ("email", "accepted")
    ]
    assert "cannot say which request it was" in result["attempts"][0]["detail"]
    assert len(sandbox.twilio.sent("voice")) == 1
