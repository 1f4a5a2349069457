"""Ownership that holds (issue 12), each case as an operator's worst day would bring it.

Real processes (the installed CLI), real signals, the sandbox peers' own records of
what they received, and the store on both backends:

1. a broadcast paused (SIGSTOP) past its lease, taken over by ``resume``, then woken
   (SIGCONT): it sends nothing more; a worker paused the same way, the same;
2. a broadcast killed as PID 1 in a PID namespace, resumed by a ``resume`` that is PID 1
   in another;
3. a full disk: exit 2 within seconds, a clear line, no hang; the writer survives
   SQLite's own rollback;
4. reconciliation never credits one message's request to another;
5. a crash between the two writes of a receipt, or of an acknowledgement, leaves
   neither, and the provider's retry then applies both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from scripted import ScriptedChannel

from config import settings_from_mapping
from config.sections import StoreSettings
from router import Message, Router
from router.model.inbound import ReceiptEvent, ReceiptState, TextReceived
from router.model.outcome import Capabilities
from router.sandbox import Sandbox
from router.store import SqlStore, open_store
from router.store._writer import GroupCommitWriter

LEASE = 2.0
PEOPLE = 12


def people(count: int = PEOPLE) -> dict[str, dict[str, object]]:
    return {f"p{i:02d}": {"sms": f"+336{40_000_000 + i:08d}", "email": f"p{i:02d}@example.com"}
            for i in range(count)}


def write_config(sandbox: Sandbox, tmp_path: Path, store: dict[str, Any], *,
                 count: int = PEOPLE, rate: float = 3.0) -> Path:
    """SMS first at ``rate`` a second (slow enough to pause mid-run), email behind it."""
    config = tmp_path / "backchannel.toml"
    config.write_text(sandbox.config_toml(
        contacts=people(count), store_path=str(tmp_path / "bc.db"),
        overrides={
            "routing": {"order": ["sms", "email"], "concurrency": 4, "confirm_above": 1000},
            "limits.sms": {"per_second": rate, "burst": 1},
            "store": {**store, "lease": LEASE},
        },
    ))
    return config


class Cli:
    """One ``backchannel`` process, its output collected as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.out: list[str] = []
        self.err: list[str] = []
        assert process.stdout is not None and process.stderr is not None
        self._readers = [asyncio.ensure_future(self._read(process.stdout, self.out)),
                         asyncio.ensure_future(self._read(process.stderr, self.err))]

    @classmethod
    async def start(cls, *args: str, config: Path, prefix: tuple[str, ...] = ()) -> Cli:
        process = await asyncio.create_subprocess_exec(
            *prefix, sys.executable, "-m", "router.cli", *args, "--config", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    @staticmethod
    async def _read(stream: asyncio.StreamReader, into: list[str]) -> None:
        async for line in stream:
            into.append(line.decode(errors="replace"))

    async def finish(self, limit: float = 120.0) -> int:
        async with asyncio.timeout(limit):
            status = await self.process.wait()
            await asyncio.gather(*self._readers)
        return status

    def signal(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(number)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)


async def pause_between_writes(process: Cli, store_section: dict[str, Any],
                               tmp_path: Path) -> None:
    """SIGSTOP, at a moment when the process is not in the middle of a SQLite write.

    A process paused inside a write transaction holds the file's write lock until it
    wakes: every other process waits, then fails with a clear 'locked' error (that is
    SQLite; PostgreSQL ends such a session after 10 s, and the process wakes to a lost
    connection). The cases here are about what the paused process does when it wakes,
    so its pause must not land there.
    """
    for _ in range(50):
        process.signal(signal.SIGSTOP)
        if "url" in store_section:
            if not await _in_a_transaction(str(store_section["url"])):
                return
            process.signal(signal.SIGCONT)
            await asyncio.sleep(0.02)
            continue
        probe = sqlite3.connect(tmp_path / "bc.db", timeout=0.2, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            process.signal(signal.SIGCONT)
            await asyncio.sleep(0.02)
        finally:
            probe.close()
    raise AssertionError("never found the process outside a write")


async def _in_a_transaction(url: str) -> bool:
    """Whether any other session of this database is inside a transaction (the paused
    process is the only other client)."""
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        found = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction',"
            " 'idle in transaction (aborted)')"
        )
    finally:
        await connection.close()
    return bool(found)


async def wait_for(condition: Callable[[], object], what: str, limit: float = 60.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.05)
    assert condition(), what


async def until_true(check: Callable[[], Any], what: str, limit: float = 60.0) -> None:
    """Wait on an async check (a store read)."""
    async with asyncio.timeout(limit):
        while not await check():
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def store_of(section: dict[str, Any], tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = open_store(StoreSettings(**({"path": tmp_path / "bc.db"} | section)))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def the_message(store: SqlStore) -> tuple[str, str | None, float | None]:
    rows = await store.run(lambda tx: tx.fetchall(
        "SELECT id, owner, heartbeat_at FROM messages ORDER BY created_at"
    ))
    [(message_id, owner, beat)] = rows
    return str(message_id), owner, beat


def sms_by_phone(sandbox: Sandbox) -> Counter[str]:
    return Counter(m.to for m in sandbox.twilio.sent("sms"))


async def statuses(store: SqlStore) -> Counter[str]:
    rows = await store.run(lambda tx: tx.fetchall("SELECT status FROM deliveries"))
    return Counter(str(row[0]) for row in rows)


# 1. Pauses ----------------------------------------------------------------------------


async def test_a_paused_broadcast_sends_nothing_after_its_work_is_taken_over(
    store_section: dict[str, Any], tmp_path: Path,
) -> None:
    async with Sandbox(latency=0.0) as sandbox, store_of(store_section, tmp_path) as store:
        config = write_config(sandbox, tmp_path, store_section)
        first = await Cli.start("broadcast", "--group", "ops", "--json", "outage", config=config)
        await wait_for(lambda: len(sandbox.twilio.sent("sms")) >= 3, "the first SMS")
        await pause_between_writes(first, store_section, tmp_path)  # Ctrl-Z, a lid, a VM
        sent_when_paused = len(sandbox.twilio.sent("sms"))

        async def stale() -> bool:
            _, _, beat = await the_message(store)
            return beat is not None and time.time() - beat > LEASE

        await until_true(stale, "the paused owner's heartbeat to go stale")
        resume = await Cli.start("resume", "--json", config=config)
        assert await resume.finish() == 0, resume.stderr
        assert sent_when_paused < PEOPLE  # there was work left to take over

        first.signal(signal.SIGCONT)
        status = await first.finish()
        per_phone = sms_by_phone(sandbox)
        assert max(per_phone.values()) == 1, per_phone  # nobody got the SMS twice
        assert await statuses(store) == Counter({"accepted": PEOPLE})
        # It stood down, and reports what the store says: the taker reached everyone.
        assert status == 0, first.stderr
        assert json.loads(first.stdout)["taken_over"] is True
        assert "another took" in first.stderr


async def test_a_paused_worker_sends_nothing_after_its_leases_are_taken_over(
    store_section: dict[str, Any], tmp_path: Path,
) -> None:
    async with Sandbox(latency=0.0) as sandbox, store_of(store_section, tmp_path) as store:
        config = write_config(sandbox, tmp_path, store_section)
        queued = await Cli.start("broadcast", "--group", "ops", "--queue", "--json", "outage",
                                 config=config)
        assert await queued.finish() == 0, queued.stderr
        worker_a = await Cli.start("worker", "--lease", str(LEASE), "--concurrency", "4",
                                   config=config)
        await wait_for(lambda: len(sandbox.twilio.sent("sms")) >= 3, "A's first SMS")
        await pause_between_writes(worker_a, store_section, tmp_path)

        async def leases_of_a_expired() -> bool:
            rows = await store.run(lambda tx: tx.fetchall(
                "SELECT lease_until FROM deliveries WHERE lease_owner IS NOT NULL"
            ))
            return bool(rows) and all(float(row[0]) < time.time() for row in rows)

        await until_true(leases_of_a_expired, "A's leases to run out")
        worker_b = await Cli.start("worker", "--lease", str(LEASE), config=config)

        async def drained() -> bool:
            return "pending" not in await statuses(store) and await store.queue_depth() == 0

        await until_true(drained, "worker B to finish the queue")
        worker_a.signal(signal.SIGCONT)
        # A wakes up holding deliveries B took over: it must say it leaves them alone.
        await wait_for(lambda: "took the lease over" in worker_a.stderr, "A to stand down")
        for worker in (worker_a, worker_b):
            worker.signal(signal.SIGTERM)
            assert await worker.finish() == 0, worker.stderr
        per_phone = sms_by_phone(sandbox)
        assert max(per_phone.values()) == 1, per_phone
        assert await statuses(store) == Counter({"accepted": PEOPLE})
        epochs = await store.run(lambda tx: tx.fetchall("SELECT MAX(lease_epoch) FROM deliveries"))
        assert int(epochs[0][0]) >= 2  # B really took leases over from A


# 2. Containers: everyone is PID 1 -------------------------------------------------------

UNSHARE = shutil.which("unshare")


@pytest.mark.skipif(os.geteuid() != 0 or UNSHARE is None,
                    reason="needs root and util-linux's unshare for a PID namespace (CI has both)")
async def test_a_broadcast_killed_as_pid_1_is_resumed_by_a_resume_that_is_pid_1(
    tmp_path: Path,
) -> None:
    namespace = (str(UNSHARE), "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL")
    count = 40
    async with Sandbox(latency=0.0) as sandbox:
        config = write_config(sandbox, tmp_path, {}, count=count, rate=10.0)
        async with store_of({}, tmp_path) as store:
            victim = await Cli.start("broadcast", "--group", "ops", "outage", config=config,
                                     prefix=namespace)
            await wait_for(lambda: len(sandbox.twilio.sent("sms")) >= 5, "the first SMS")
            _, owner, _ = await the_message(store)
            assert owner is not None and owner.split(":")[3] == "1", owner  # PID 1 inside
            victim.signal(signal.SIGKILL)  # unshare passes it on to its PID 1
            await victim.finish()

            async def orphaned() -> bool:
                _, _, beat = await the_message(store)
                return beat is not None and time.time() - beat > LEASE

            await until_true(orphaned, "the dead PID 1's heartbeat to go stale")
            resume = await Cli.start("resume", "--json", config=config, prefix=namespace)
            assert await resume.finish() == 0, resume.stderr
            [resumed] = json.loads(resume.stdout)["resumed"]
            assert resumed["results"], "the resume did the work"
            assert await statuses(store) == Counter({"accepted": count})
        assert max(sms_by_phone(sandbox).values()) == 1


# 3. A full disk -------------------------------------------------------------------------

MOUNT = shutil.which("mount")


@pytest.mark.skipif(os.geteuid() != 0 or UNSHARE is None or MOUNT is None,
                    reason="needs root to mount a small tmpfs in a mount namespace (CI is root)")
async def test_a_full_disk_gives_exit_2_at_once_and_sends_nothing(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    async with Sandbox(latency=0.0) as sandbox:
        config = write_config(sandbox, tmp_path, {"path": str(disk / "bc.db")}, count=3)
        backchannel = f"{sys.executable} -m router.cli"
        script = (
            f"mount -t tmpfs -o size=512k tmpfs {disk} && "
            f"{backchannel} history --config {config} >/dev/null && "  # the store exists
            f"(dd if=/dev/zero of={disk}/filler bs=4k 2>/dev/null || true) && "
            f"exec {backchannel} send --to p00 'disk full test' --config {config}"
        )
        process = await asyncio.create_subprocess_exec(
            str(UNSHARE), "--mount", "sh", "-c", script,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        # A bound against a hang (the bug was 'forever'), not a measure of speed.
        out, err = await asyncio.wait_for(process.communicate(), 60)
        text = err.decode()
        assert process.returncode == 2, (out.decode(), text)
        assert "is full" in text and str(disk / "bc.db") in text
        assert "Traceback" not in text
        assert sandbox.twilio.sent("sms") == []


async def test_the_writer_survives_sqlites_own_rollback(tmp_path: Path) -> None:
    """SQLite rolls back by itself on SQLITE_FULL; the writer's own ROLLBACK then fails.
    Every caller must still be answered, and the next operation must work."""
    writer = GroupCommitWriter(lambda: sqlite3.connect(
        tmp_path / "w.db", isolation_level=None, check_same_thread=False))
    await writer.start()

    def full_disk(db: sqlite3.Connection) -> None:
        db.execute("ROLLBACK")  # what SQLite does on its own before reporting the error
        raise sqlite3.OperationalError("database or disk is full")

    def fine(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT 41 + 1").fetchone()[0])

    try:
        results = await asyncio.wait_for(asyncio.gather(
            writer.run(full_disk), writer.run(fine), return_exceptions=True), 10)
        assert isinstance(results[0], sqlite3.OperationalError)
        assert await asyncio.wait_for(writer.run(fine), 10) == 42
    finally:
        await writer.stop()


# 4. Reconciliation never credits one request to another -------------------------------


async def test_a_lost_sms_is_not_credited_with_another_alerts_sms(tmp_path: Path) -> None:
    """Alert A's SMS stalled at the provider (it exists there); all-clear B was recorded
    and its process died before the request left. Resume must not say B reached the
    person: the provider has a message with other words."""
    async with Sandbox(latency=0.0) as sandbox:
        config = write_config(sandbox, tmp_path, {}, count=1, rate=100.0)
        phone = str(people(1)["p00"]["sms"])
        from router.sandbox import Fault

        sandbox.twilio.faults.fail("sms", Fault.stall(), times=1, address=phone)
        settings = settings_from_mapping(_toml(config) | {"twilio": _toml(config)["twilio"] | {
            "timeout": 0.5}})
        async with Router(settings) as router:
            alert = await router.send(Message("datacenter on fire"), to="p00")
        assert alert.attempts[0].outcome.verdict.value == "unknown"
        assert len(sandbox.twilio.sent("sms")) == 1  # A's SMS is at the provider
        await _record_lost_attempt(tmp_path / "bc.db", "all clear", phone)
        resume = await Cli.start("resume", "--json", config=config)
        assert await resume.finish() == 0, resume.stderr
        [result] = json.loads(resume.stdout)["resumed"][0]["results"]
        first = result["attempts"][0]
        assert (first["channel"], first["outcome"]) == ("sms", "unknown")
        assert "not found" in first["detail"]
        assert result["channel"] == "email"  # the all-clear reached them, by email
        assert len(sandbox.twilio.sent("sms")) == 1


async def test_two_requests_in_doubt_to_one_number_are_never_matched(tmp_path: Path) -> None:
    """Same words twice, both in doubt, one SMS at the provider: whose is it? Nobody's."""
    async with Sandbox(latency=0.0) as sandbox:
        config = write_config(sandbox, tmp_path, {}, count=1, rate=100.0)
        phone = str(people(1)["p00"]["sms"])
        from router.sandbox import Fault

        sandbox.twilio.faults.fail("sms", Fault.stall(), times=1, address=phone)
        settings = settings_from_mapping(_toml(config) | {"twilio": _toml(config)["twilio"] | {
            "timeout": 0.5}, "routing": _toml(config)["routing"] | {"order": ["sms"]}})
        async with Router(settings) as router:
            await router.send(Message("all clear"), to="p00")
        await _record_lost_attempt(tmp_path / "bc.db", "all clear", phone)
        resume = await Cli.start("resume", "--json", config=config)
        assert await resume.finish() == 0, resume.stderr
        [result] = json.loads(resume.stdout)["resumed"][0]["results"]
        assert result["attempts"][0]["outcome"] == "unknown"
        assert "a guess" in result["attempts"][0]["detail"]


def _toml(config: Path) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(config.read_text())


async def _record_lost_attempt(path: Path, text: str, phone: str) -> None:
    """A message recorded and its SMS attempt begun by a process that then died."""
    from router.store import AttemptStart, DeliverySeed, MessageRecord, SqliteStore

    store = SqliteStore(path)
    await store.open()
    contact = json.dumps({"addresses": {"sms": phone, "email": "p00@example.com"},
                          "order": ["sms", "email"]})
    body = json.dumps({"text": text, "subject": None, "by_channel": {}, "until": "accepted"},
                      sort_keys=True)
    now = time.time()
    await store.claim_message(MessageRecord("msg_b", body, '{"to": "p00"}', "fp-b", now),
                              [DeliverySeed("p00", contact)], owner="gone:x:y:4242:dead",
                              owner_is_alive=lambda owner, beat: True)
    await store.begin_attempt(AttemptStart("att_b", "msg_b", "p00", "sms", phone, "first", now))
    await store.heartbeat(["msg_b"], owner="gone:x:y:4242:dead", at=now - 3600)
    await store.close()


# 5. One transaction per inbound event -------------------------------------------------

CRASH = {
    "sqlite": ["CREATE TRIGGER crash_between BEFORE UPDATE ON deliveries"
               " BEGIN SELECT RAISE(ABORT, 'injected crash'); END"],
    "postgres": ["CREATE FUNCTION crash() RETURNS trigger AS $$ BEGIN"
                 " RAISE EXCEPTION 'injected crash'; END $$ LANGUAGE plpgsql",
                 "CREATE TRIGGER crash_between BEFORE UPDATE ON deliveries"
                 " FOR EACH ROW EXECUTE FUNCTION crash()"],
}
HEAL = {"sqlite": ["DROP TRIGGER crash_between"], "postgres": ["DROP TRIGGER crash_between"
                                                              " ON deliveries"]}


async def _statements(store: SqlStore, statements: list[str]) -> None:
    for statement in statements:
        await store.run(lambda tx, s=statement: tx.execute(s))  # type: ignore[misc]


def _router(store_section: dict[str, Any], sms: ScriptedChannel) -> Router:
    settings = settings_from_mapping({
        "routing": {"order": ["sms"]}, "store": store_section,
        "contacts": {"ann": {"sms": "+33612345678"}},
    })
    return Router(settings, channels={"sms": sms})


async def test_a_crash_between_a_receipts_two_writes_leaves_neither(
    store_section: dict[str, Any],
) -> None:
    sms = ScriptedChannel("sms")
    sms.capabilities = Capabilities(max_length=None, failure_domains=frozenset({"sms"}),
                                    reports_delivery=True)
    async with _router(store_section, sms) as router:
        store: Any = router.store
        dialect = store.dialect
        result = await router.send(Message("disk full"), to="ann", until="delivered")
        provider_id = result.attempts[0].outcome.provider_id
        assert provider_id is not None
        receipt = ReceiptEvent(provider_id, ReceiptState.DELIVERED, dedupe_key="token-1")
        await _statements(store, CRASH[dialect])
        with pytest.raises(Exception, match="injected crash"):
            await router.inbound.apply(receipt)
        [row] = await store.run(lambda tx: tx.fetchall(
            "SELECT a.receipt, d.status, d.done FROM attempts a JOIN deliveries d"
            " ON d.message_id = a.message_id AND d.contact = a.contact"))
        assert (row[0], row[1], bool(row[2])) == (None, "accepted", False)  # neither half
        await _statements(store, HEAL[dialect])
        await router.inbound.apply(receipt)  # the provider retries its webhook
        [row] = await store.run(lambda tx: tx.fetchall(
            "SELECT a.receipt, d.status, d.done FROM attempts a JOIN deliveries d"
            " ON d.message_id = a.message_id AND d.contact = a.contact"))
        assert (row[0], row[1], bool(row[2])) == ("delivered", "delivered", True)


async def test_a_crash_between_a_replys_two_writes_leaves_neither(
    store_section: dict[str, Any],
) -> None:
    sms = ScriptedChannel("sms")
    async with _router(store_section, sms) as router:
        store: Any = router.store
        dialect = store.dialect
        await router.send(Message("site down"), to="ann", until="acknowledged")
        [(_, code)] = await store.waiting_for_ack("ann")
        reply = TextReceived("sms", "+33612345678", f"on it {code}", "SMreply1",
                             dedupe_key="token-2")
        await _statements(store, CRASH[dialect])
        with pytest.raises(Exception, match="injected crash"):
            await router.inbound.apply(reply)
        assert await store.inbox() == []  # the reply was not recorded without its effect
        assert await store.waiting_for_ack("ann") != []
        await _statements(store, HEAL[dialect])
        answered = await router.inbound.apply(reply)  # the provider retries its webhook
        assert answered is not None and answered.acknowledged
        assert [e.kind for e in await store.inbox()] == ["ack"]
        assert await store.waiting_for_ack("ann") == []


async def test_a_status_callback_naming_a_lost_call_settles_it(tmp_path: Path) -> None:
    """A call's answer never came (read timeout): in doubt, and a call cannot be matched by
    content. Twilio's status callback names the attempt in its URL, and settles it."""
    from twoway_helpers import rig

    from router.sandbox import Fault

    async with rig(tmp_path, order=["voice", "telegram"],
                   extra={"twilio": {"timeout": 0.5}}) as r:
        r.sandbox.twilio.faults.fail("voice", Fault.stall(), times=1)
        result = await r.router.send(Message("datacenter on fire"), to="alice")
        voice = result.attempts[0]
        assert (voice.channel, voice.outcome.verdict.value) == ("voice", "unknown")
        assert result.channel == "telegram"  # maybe sent: never called again; next channel
        [call] = r.sandbox.twilio.sent("voice")
        await r.until(lambda: r.attempts("alice")[0]["provider_id"] == call.sid,
                      "the status callback to name the attempt")
        [settled, _] = r.attempts("alice")
        assert (settled["id"], settled["verdict"]) == (voice.attempt_id, "accepted")
        assert len(r.sandbox.twilio.sent("voice")) == 1
