"""Several worker processes on one PostgreSQL: shared queue, a worker killed mid-run."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from config.sections import StoreSettings
from router import Message, Router
from router.ops.worker import Worker
from router.sandbox import Fault, Sandbox
from router.store import SqlStore, open_store


def contacts(count: int) -> dict[str, dict[str, object]]:
    return {f"c{i:04d}": {"sms": f"+336{30_000_000 + i:08d}", "email": f"c{i:04d}@example.com"}
            for i in range(count)}


def write_config(sandbox: Sandbox, tmp_path: Path, url: str, people: dict[str, Any],
                 **extra: dict[str, object]) -> Path:
    config = tmp_path / "backchannel.toml"
    text = sandbox.config_toml(contacts=people, overrides={
        "routing": {"order": ["sms", "email"], "concurrency": 16, "confirm_above": 100_000},
        "limits.sms": {"per_second": 100_000}, **extra,
    })
    # The store is PostgreSQL here: swap the sandbox's SQLite path for the URL.
    text = text.replace('[store]\npath = "backchannel.db"', f'[store]\nurl = "{url}"')
    config.write_text(text)
    return config


async def cli(*args: str, config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", *args, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def pending(store: SqlStore) -> int:
    return await store.queue_depth()


STALLED = ("c0000", "c0001", "c0002", "c0003")
"""The first contacts of the queue: the first worker claims them, and Twilio takes their
SMS and never answers, so the worker holds them in doubt when it is killed."""


async def test_three_workers_one_killed_every_contact_once(pg_url: str, tmp_path: Path) -> None:
    people = contacts(1500)
    async with Sandbox(latency=0.01) as sandbox:
        for name in STALLED:
            sandbox.twilio.faults.fail("sms", Fault.stall(), address=str(people[name]["sms"]))
        # A read timeout the kill always comes before: the stalled requests stay in doubt.
        config = write_config(sandbox, tmp_path, pg_url, people, twilio={"timeout": 300})
        producer = await cli("broadcast", "--group", "ops", "--queue", "--json",
                             "outage notice", config=config)
        out, err = await producer.communicate()
        assert producer.returncode == 0, err.decode()
        message_id = json.loads(out)["message_id"]
        assert not any(sandbox.received().values())  # queued: nothing sent yet

        store = open_store(StoreSettings(url=pg_url))  # type: ignore[arg-type]
        await store.open()
        try:
            # The first worker alone claims the head of the queue, the stalled contacts too.
            workers = [await cli("worker", "--lease", "2", config=config)]
            async with asyncio.timeout(60):
                while sum(r.answer == "stall" for r in sandbox.twilio.requests) < len(STALLED):
                    await asyncio.sleep(0.02)
            workers += [await cli("worker", "--lease", "2", config=config) for _ in range(2)]
            async with asyncio.timeout(60):
                while len(sandbox.twilio.sent("sms")) < 300:
                    await asyncio.sleep(0.02)
            workers[0].kill()  # SIGKILL, mid-run: its leases must expire, not strand work
            await workers[0].wait()
            killed_at = time.time()
            held = await leases_of_the_killed_worker(store, message_id)
            async with asyncio.timeout(120):
                while await pending(store) or await _unsettled(store, message_id):
                    await asyncio.sleep(0.2)
            stored = await store.load_message(message_id)
            attempts = await store.history(message_id=message_id, limit=100_000)
            after = await lease_epochs(store, message_id)
        finally:
            await store.close()
        for worker in workers[1:]:
            worker.send_signal(signal.SIGTERM)
            await worker.wait()
        received = sandbox.received()

    assert stored is not None and stored.state == "done"
    assert {d.status for d in stored.deliveries} == {"accepted"}
    assert len(stored.deliveries) == 1500
    # No contact got the message twice on one channel, by the peers' own records.
    for channel, recipients in received.items():
        twice = [who for who, n in Counter(recipients).items() if n > 1]
        assert not twice, f"{channel}: {twice[:5]}"
    # Every request a peer received matches an attempt row (same channel and address).
    recorded = Counter((a.channel, a.address) for a in attempts)
    for channel, recipients in received.items():
        for address, count in Counter(r.removeprefix("whatsapp:") for r in recipients).items():
            assert recorded[(channel, address)] >= count, (channel, address)

    # The killed worker held the stalled contacts, among others; every lease it held ran
    # out and another worker claimed the delivery again (a higher epoch) and finished it.
    assert set(STALLED) <= set(held), held
    for contact, (epoch, lease_until) in held.items():
        assert after[contact] > epoch, contact
        later = [a for a in attempts if a.contact == contact and a.started_at > killed_at]
        assert all(a.started_at > lease_until for a in later), contact  # only once expired
    # Each stalled SMS was in doubt when its worker died: the taker asked Twilio (found
    # it, accepted) or settled it as maybe sent and went on to email; never a second SMS.
    for contact in STALLED:
        mine = [a for a in attempts if a.contact == contact]
        sms = [a for a in mine if a.channel == "sms"]
        assert len(sms) == 1 and sms[0].state == "done", [a.detail for a in mine]
        assert sms[0].started_at < killed_at
        detail = sms[0].detail or ""
        if sms[0].verdict == "accepted":
            assert "found at the provider" in detail, detail
        else:
            assert sms[0].verdict == "unknown" and detail.startswith("in doubt"), detail
            assert [a.channel for a in mine if a.verdict == "accepted"] == ["email"]
        assert received["sms"].count(str(people[contact]["sms"])) == 1


async def leases_of_the_killed_worker(
    store: SqlStore, message_id: str
) -> dict[str, tuple[int, float]]:
    """Deliveries still leased to the worker that held the first stalled contact, with
    their lease epoch and expiry, as it left them."""
    rows = await store.run(lambda tx: tx.fetchall(
        "SELECT contact, lease_epoch, lease_until FROM deliveries WHERE message_id = ?"
        " AND done = 0 AND lease_owner = (SELECT lease_owner FROM deliveries"
        " WHERE message_id = ? AND contact = ?)", message_id, message_id, STALLED[0],
    ))
    return {str(contact): (int(epoch), float(until)) for contact, epoch, until in rows}


async def lease_epochs(store: SqlStore, message_id: str) -> dict[str, int]:
    rows = await store.run(lambda tx: tx.fetchall(
        "SELECT contact, lease_epoch FROM deliveries WHERE message_id = ?", message_id
    ))
    return {str(contact): int(epoch) for contact, epoch in rows}


async def _unsettled(store: SqlStore, message_id: str) -> bool:
    stored = await store.load_message(message_id)
    return stored is None or not all(d.done for d in stored.deliveries)


async def test_workers_share_one_rate_limit(pg_url: str, tmp_path: Path) -> None:
    """Three workers, a 12/s Telegram budget, a peer that refuses anything over it."""
    people = {f"t{i:03d}": {"telegram": 700_000 + i} for i in range(36)}
    async with Sandbox(telegram_flood_limit=(12, 1)) as sandbox:
        config = write_config(sandbox, tmp_path, pg_url, people,
                              **{"limits.telegram": {"per_second": 12}})
        from config import load_settings

        settings = load_settings(config)
        async with Router(settings) as producer:
            queued = await producer.broadcast(Message("flood test"), group="ops", queue=True)
        routers = [Router(settings) for _ in range(3)]
        stop = asyncio.Event()
        for router in routers:
            await router.start()
        runners = [Worker(router, concurrency=8) for router in routers]
        tasks = [asyncio.create_task(runner.run(stop)) for runner in runners]
        try:
            async with asyncio.timeout(60):
                while sum(runner.done for runner in runners) < len(people):
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            for router in routers:
                await router.aclose()
        assert queued.message_id
        assert sandbox.telegram.rate_limited_count == 0
        assert len({s.chat_id for s in sandbox.telegram.sent}) == len(people)
        assert sum(1 for runner in runners if runner.done) >= 2  # the work was shared
