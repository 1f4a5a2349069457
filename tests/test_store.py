"""The store's behaviour, identical on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from config.sections import StoreSettings
from router.model.health import Breaker, State
from router.model.inbound import ReceiptState
from router.model.outcome import Outcome
from router.store import (
    AttemptStart,
    DeliverySeed,
    KeyConflict,
    MessageRecord,
    SqliteStore,
    SqlStore,
    open_store,
)
from router.store.base import Fence, InboundEvent
from router.store.incidents import EntryRecord, IncidentBook, IncidentClosed, IncidentRecord

NOW = 1_700_000_000.0
ALIVE = lambda owner, beat: True  # noqa: E731
DEAD = lambda owner, beat: False  # noqa: E731


@pytest.fixture
async def store(store_section: dict[str, Any]) -> AsyncIterator[SqlStore]:
    opened = open_store(StoreSettings(**store_section))
    await opened.open()
    yield opened
    await opened.close()


def record(message_id: str, key: str | None = None, fingerprint: str = "fp",
           goal: str = "accepted") -> MessageRecord:
    body = json.dumps({"text": "outage", "subject": None, "by_channel": {}})
    return MessageRecord(message_id, body, '{"group": "ops"}', fingerprint, NOW, key, None, goal)


def seeds(*names: str, code: str | None = None) -> list[DeliverySeed]:
    return [DeliverySeed(n, json.dumps({"addresses": {"sms": "+33612345678"}, "order": None}),
                         code) for n in names]


async def test_a_claim_records_the_message_and_its_deliveries(store: SqlStore) -> None:
    claim = await store.claim_message(record("m1"), seeds("ann", "bob"), owner="me",
                                      owner_is_alive=ALIVE)
    assert (claim.message_id, claim.action) == ("m1", "new")
    stored = await store.load_message("m1")
    assert stored is not None
    assert [(d.contact, d.status, d.done) for d in stored.deliveries] == [
        ("ann", "pending", False), ("bob", "pending", False)
    ]
    assert (stored.state, stored.owner) == ("pending", "me")


async def test_idempotency_keys(store: SqlStore) -> None:
    await store.claim_message(record("m1", "k"), seeds("ann"), owner="a", owner_is_alive=ALIVE)
    attach = await store.claim_message(record("m2", "k"), seeds("ann"), owner="b",
                                       owner_is_alive=ALIVE)
    assert (attach.message_id, attach.action) == ("m1", "attach")
    resume = await store.claim_message(record("m3", "k"), seeds("ann"), owner="b",
                                       owner_is_alive=DEAD)
    assert (resume.message_id, resume.action) == ("m1", "resume")
    await store.finish_message("m1", owner="b", at=NOW)
    done = await store.claim_message(record("m4", "k"), seeds("ann"), owner="c",
                                     owner_is_alive=ALIVE)
    assert done.action == "done"
    with pytest.raises(KeyConflict):
        await store.claim_message(record("m5", "k", fingerprint="other"), seeds("ann"),
                                  owner="c", owner_is_alive=ALIVE)
    assert await store.load_message("m2") is None


async def test_attempts_are_recorded_before_and_after(store: SqlStore) -> None:
    await store.claim_message(record("m1"), seeds("ann"), owner="me", owner_is_alive=ALIVE)
    await store.begin_attempt(AttemptStart("a1", "m1", "ann", "sms", "+33612345678", "first",
                                           NOW))
    stored = await store.load_message("m1")
    assert stored is not None and stored.attempts[0].state == "sending"
    await store.finish_attempt("a1", Outcome.accepted("SM1").timed(0.2), NOW + 1,
                               delivery_status="accepted", delivery_channel="sms")
    stored = await store.load_message("m1")
    assert stored is not None
    [attempt] = stored.attempts
    assert (attempt.state, attempt.verdict, attempt.provider_id) == ("done", "accepted", "SM1")
    assert (stored.deliveries[0].status, stored.deliveries[0].done) == ("accepted", True)
    [newest] = await store.history(contact="ann")
    assert newest.attempt_id == "a1"


async def test_orphans_and_take_over(store: SqlStore) -> None:
    await store.claim_message(record("m1"), seeds("ann"), owner="dead", owner_is_alive=ALIVE)
    assert await store.orphaned_messages(owner_is_alive=ALIVE) == []
    assert await store.orphaned_messages(owner_is_alive=DEAD) == ["m1"]
    assert await store.take_over("m1", owner="me", owner_is_alive=DEAD) == 2
    assert await store.take_over("m1", owner="other", owner_is_alive=ALIVE) is None


async def test_an_attempt_starts_only_under_a_current_fence(store: SqlStore) -> None:
    """A paused owner wakes up after a take-over: its old epoch starts nothing."""
    claim = await store.claim_message(record("m1"), seeds("ann", "bob"), owner="a",
                                      owner_is_alive=ALIVE)
    assert (claim.action, claim.epoch) == ("new", 1)
    first = AttemptStart("a1", "m1", "ann", "sms", "+336", "first", NOW)
    assert await store.begin_attempt(first, Fence("a", 1))
    assert await store.take_over("m1", owner="b", owner_is_alive=DEAD) == 2
    late = AttemptStart("a2", "m1", "bob", "sms", "+337", "first", NOW + 1)
    assert not await store.begin_attempt(late, Fence("a", 1))
    assert not await store.begin_attempt(late, Fence("b", 1))  # the owner, at an old epoch
    assert [a.attempt_id for a in await store.history(message_id="m1")] == ["a1"]
    assert await store.begin_attempt(late, Fence("b", 2))
    # Finishing is always recorded, whoever owns the message now: the request was made.
    await store.finish_attempt("a1", Outcome.accepted("SM1"), NOW + 2)
    assert (await store.attempt_by_provider_id("SM1")) is not None
    assert await store.heartbeat(["m1"], owner="a", at=NOW + 3) == set()
    assert await store.heartbeat(["m1"], owner="b", at=NOW + 3) == {"m1"}


async def test_a_worker_whose_lease_was_taken_starts_nothing(store: SqlStore) -> None:
    await store.claim_message(record("m1"), seeds("ann"), owner=None, owner_is_alive=ALIVE,
                              state="queued")
    [(_, _, first)] = await store.claim_work("w1", now=NOW, lease=5, limit=10)
    [(_, _, second)] = await store.claim_work("w2", now=NOW + 6, lease=5, limit=10)
    assert second == first + 1
    attempt = AttemptStart("a1", "m1", "ann", "sms", "+336", "first", NOW + 7)
    assert await store.renew_leases("w1", [("m1", "ann")], until=NOW + 20) == set()
    assert not await store.begin_attempt(attempt, Fence("w1", first, "ann"))
    assert await store.renew_leases("w2", [("m1", "ann")], until=NOW + 20) == {("m1", "ann")}
    assert await store.begin_attempt(attempt, Fence("w2", second, "ann"))


async def test_an_escalation_step_starts_nothing_once_its_person_answered(
    store: SqlStore,
) -> None:
    """The step claimed its due delivery, then the person acknowledged before its
    attempt was written: no attempt, and the wait is never started again."""
    await store.claim_message(record("m1", goal="acknowledged"), seeds("ann", code="1234"),
                              owner="me", owner_is_alive=ALIVE)
    await store.wait_for("m1", "ann", waiting_for="ack", attempt_id=None, at=NOW + 60)
    assert await store.claim_due("m1", "ann", NOW + 60)
    step = AttemptStart("a1", "m1", "ann", "email", "ann@example.com", "escalation", NOW + 61)
    await store.acknowledge("ann", NOW + 61)
    assert not await store.begin_attempt(step, Fence.while_waiting("ann"))
    await store.wait_for("m1", "ann", waiting_for="ack", attempt_id=None, at=NOW + 120)
    assert await store.due(NOW + 1000) == []
    stored = await store.load_message("m1")
    assert stored is not None and stored.attempts == ()
    assert [(d.status, d.done) for d in stored.deliveries] == [("acknowledged", True)]


async def test_resolving_an_incident_stops_its_messages_in_one_go(store: SqlStore) -> None:
    book = IncidentBook(store)
    opened = EntryRecord("e1", "inc-1", "opened", NOW, "db down")
    assert await book.open(IncidentRecord("inc-1", "DB", "major", "ann", ("ops",), {}, NOW,
                                          updated_at=NOW), opened)
    alarm = MessageRecord("m1", record("m1").body_json, "{}", "fp", NOW, goal="acknowledged",
                          incident_id="inc-1", incident_entry="e1")
    await store.claim_message(alarm, seeds("ann", "bob", "cat"), owner="me",
                              owner_is_alive=ALIVE)
    other = record("m2", goal="acknowledged")  # another message, no incident's
    await store.claim_message(other, seeds("ann"), owner="me", owner_is_alive=ALIVE)
    await store.begin_attempt(AttemptStart("a1", "m1", "ann", "sms", "+336", "first", NOW))
    await store.finish_attempt("a1", Outcome.accepted("SM1"), NOW, delivery_status="accepted",
                               delivery_channel="sms")
    await store.begin_attempt(AttemptStart("a2", "m1", "bob", "sms", "+337", "first", NOW))
    for message_id in ("m1", "m2"):
        await store.wait_for(message_id, "ann", waiting_for="ack", attempt_id=None,
                             at=NOW + 60)
    resolved = EntryRecord("e2", "inc-1", "resolved", NOW + 10, "all clear")
    entry, stopped = await book.resolve(resolved)
    assert (entry.seq, stopped) == (2, 3)
    with pytest.raises(IncidentClosed):
        await book.resolve(EntryRecord("e3", "inc-1", "resolved", NOW + 11, "again"))
    # ann's wait ended, bob's request in flight may finish, cat (never begun) expired;
    # the other message waits on.
    assert await store.due(NOW + 1000) == [("m2", "ann", NOW + 60)]
    stored = await store.load_message("m1")
    assert stored is not None and stored.stopped_at == NOW + 10 and stored.state == "done"
    assert [(d.contact, d.status, d.done) for d in stored.deliveries] == [
        ("ann", "accepted", True), ("bob", "pending", True), ("cat", "expired", True)]
    # No attempt starts on it again, whoever asks, and no wait restarts.
    late = AttemptStart("a3", "m1", "cat", "sms", "+338", "first", NOW + 12)
    assert not await store.begin_attempt(late, Fence("me", 1))
    assert not await store.begin_attempt(late, Fence.while_waiting("cat"))
    await store.wait_for("m1", "ann", waiting_for="repeat", attempt_id=None, at=NOW + 70)
    assert await store.due(NOW + 1000) == [("m2", "ann", NOW + 60)]
    await store.finish_attempt("a2", Outcome.accepted("SM2"), NOW + 13,
                               delivery_status="accepted", delivery_channel="sms")
    [incident] = await book.incidents()
    assert incident.state == "resolved" and incident.next_update_at is None


async def test_one_process_claims_a_reminder(store: SqlStore) -> None:
    book = IncidentBook(store)
    await book.open(IncidentRecord("inc-1", "DB", "major", "ann", ("ops",), {}, NOW,
                                   updated_at=NOW, next_update_at=NOW + 60),
                    EntryRecord("e1", "inc-1", "opened", NOW, "db down", None, NOW + 60))
    assert await book.due_reminders(NOW + 59) == []
    [due] = await book.due_reminders(NOW + 61)
    claims = await asyncio.gather(*(book.claim_reminder("inc-1", NOW + 60, now=NOW + 61,
                                                        until=NOW + 181) for _ in range(4)))
    assert sorted(claims) == [False, False, False, True]
    assert await book.due_reminders(NOW + 62) == []  # claimed: nobody else takes it
    assert await book.next_reminder() == NOW + 181
    [again] = await book.due_reminders(NOW + 182)  # its claimer died: it is due again
    assert await book.claim_reminder("inc-1", NOW + 60, now=NOW + 182, until=NOW + 300)
    await book.reminded("inc-1", NOW + 60, NOW + 183)
    assert await book.due_reminders(NOW + 10_000) == []
    assert await book.next_reminder() is None
    assert due.incident_id == again.incident_id == "inc-1"


async def test_health_rows_newest_wins(store: SqlStore) -> None:
    await store.save_health([Breaker("sms", State.DOWN, since=NOW, last_error="503",
                                     updated_at=NOW + 5, last_probe_ok=False)])
    await store.save_health([Breaker("sms", State.UP, updated_at=NOW + 1)])  # older: ignored
    [row] = await store.load_health()
    assert (row.state, row.last_error, row.last_probe_ok) == (State.DOWN, "503", False)


async def test_escalation_waits_and_one_claimer(store: SqlStore) -> None:
    await store.claim_message(record("m1", goal="acknowledged"), seeds("ann", code="1234"),
                              owner="me", owner_is_alive=ALIVE)
    await store.wait_for("m1", "ann", waiting_for="ack", attempt_id=None, at=NOW + 60)
    assert await store.due(NOW) == []
    [(message_id, contact, at)] = await store.due(NOW + 61)
    assert await store.next_due() == NOW + 60
    results = await asyncio.gather(*(store.claim_due(message_id, contact, at) for _ in range(4)))
    assert sorted(results) == [False, False, False, True]
    assert await store.waiting_for_ack("ann") == [("m1", "1234")]
    assert await store.acknowledge("ann", NOW + 70) == [("m1", "ann")]
    assert await store.waiting_for_ack("ann") == []


async def test_receipts_only_move_forward(store: SqlStore) -> None:
    await store.claim_message(record("m1", goal="delivered"), seeds("ann"), owner="me",
                              owner_is_alive=ALIVE)
    await store.begin_attempt(AttemptStart("a1", "m1", "ann", "sms", "+336", "first", NOW))
    await store.finish_attempt("a1", Outcome.accepted("SM1"), NOW, delivery_status="accepted",
                               delivery_channel="sms")
    await store.wait_for("m1", "ann", waiting_for="receipt", attempt_id="a1", at=NOW + 60)
    assert await store.record_receipt("SM-unknown", ReceiptState.DELIVERED, NOW) is None
    receipt = await store.record_receipt("SM1", ReceiptState.DELIVERED, NOW)
    assert receipt is not None and receipt.awaited
    late = await store.record_receipt("SM1", ReceiptState.SENT, NOW)  # out of order
    assert late is None
    assert await store.record_receipt("SM1", ReceiptState.DELIVERED, NOW) is None  # replay
    attempt = await store.attempt_by_provider_id("SM1")
    assert attempt is not None and attempt.receipt == "delivered"


async def test_inbound_events_are_recorded_once(store: SqlStore) -> None:
    event = InboundEvent("e1", "sms", "SMabc", "+336", "ann", "reply", "hello", None, NOW)
    assert await store.record_inbound(event)
    replay = InboundEvent("e2", "sms", "SMabc", "+336", "ann", "reply", "hello", None, NOW + 1)
    assert not await store.record_inbound(replay)
    assert [e.event_id for e in await store.inbox()] == ["e1"]
    assert await store.first_time("token-1", NOW)
    assert not await store.first_time("token-1", NOW)
    await store.opt_out("ann", "sms", NOW)
    await store.opt_out("ann", "sms", NOW)
    assert await store.opt_outs() == {("ann", "sms")}
    await store.set_value("k", "1")
    await store.set_value("k", "2")
    assert await store.get_value("k") == "2"


async def test_workers_claim_disjoint_leases_and_expired_ones_return(store: SqlStore) -> None:
    names = [f"c{i}" for i in range(30)]
    await store.claim_message(record("m1"), seeds(*names), owner=None, owner_is_alive=ALIVE,
                              state="queued")
    claims = await asyncio.gather(*(
        store.claim_work(f"w{i}", now=NOW, lease=30, limit=10) for i in range(4)
    ))
    taken = [(m, c) for claim in claims for m, c, _ in claim]
    assert len(taken) == 30 and len(set(taken)) == 30  # nobody got a delivery twice
    assert {epoch for claim in claims for *_, epoch in claim} == {1}
    assert await store.claim_work("w9", now=NOW + 10, lease=30, limit=10) == []
    late = await store.claim_work("w9", now=NOW + 31, lease=30, limit=50)
    assert len(late) == 30  # every lease expired: a dead worker strands nothing
    assert {epoch for *_, epoch in late} == {2}  # taken over: the old holders are fenced off
    for message_id, contact, _ in late:
        await store.finish_delivery(message_id, contact, "accepted", "sms", NOW + 32)
        await store.release(message_id, contact, "w9", at=NOW + 32)
    stored = await store.load_message("m1")
    assert stored is not None and stored.state == "done"


async def test_a_shared_rate_is_spaced_across_callers(store: SqlStore) -> None:
    slots = await asyncio.gather(*(
        store.reserve_rate("telegram", not_before=NOW, clock=lambda: NOW, interval=0.1, burst=1)
        for _ in range(10)
    ))
    gaps = [b - a for a, b in itertools.pairwise(sorted(slots))]
    assert min(slots) == NOW
    assert gaps == pytest.approx([0.1] * 9)
    await store.pause_rate("telegram", until=NOW + 30)
    assert await store.reserve_rate(
        "telegram", not_before=NOW, clock=lambda: NOW, interval=0.1, burst=1
    ) >= NOW + 30


async def test_a_lease_has_one_holder(store: SqlStore) -> None:
    assert await store.try_lease("probe", "a", now=NOW, until=NOW + 60)
    assert not await store.try_lease("probe", "b", now=NOW + 1, until=NOW + 61)
    assert await store.try_lease("probe", "a", now=NOW + 2, until=NOW + 62)  # renewal
    assert await store.try_lease("probe", "b", now=NOW + 63, until=NOW + 120)  # expired


async def test_schema_is_applied_once_when_several_processes_start(
    store_section: dict[str, Any],
) -> None:
    stores = [open_store(StoreSettings(**store_section)) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    versions = [await s.run(lambda tx: tx.fetchall("SELECT version FROM schema_version"))
                for s in stores]
    for s in stores:
        await s.close()
    assert versions[0] == versions[1] == versions[2]
    assert [v for (v,) in versions[0]] == list(range(1, len(versions[0]) + 1))


async def test_stores_opening_a_new_sqlite_file_at_once_all_get_in(tmp_path: Any) -> None:
    """The cron probe and a broadcast may create the store together: neither may fail.

    Each store connects from its own writer thread, as separate processes would; the
    race (both asking for WAL mode on a new file) is narrow, hence many new files.
    """
    for trial in range(200):
        stores = [SqliteStore(tmp_path / f"new-{trial}.db") for _ in range(4)]
        opened = await asyncio.gather(*(store.open() for store in stores),
                                      return_exceptions=True)
        for store in stores:
            await store.close()
        assert [o for o in opened if o is not None] == [], f"trial {trial}"


def test_receipts_stored_in_twilio_words_are_mapped_to_neutral_states(tmp_path: Path) -> None:
    import sqlite3

    from router.store.engines import migrate
    from router.store.schema import MIGRATIONS
    from router.store.sql import SqliteTx, drive

    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    mapping = next(i for i, m in enumerate(MIGRATIONS) if "SET receipt = CASE" in m[0])
    old = MIGRATIONS[:mapping]
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, statements in enumerate(old, start=1):
        for statement in statements:
            assert isinstance(statement, str)
            db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    for index, status in enumerate(("completed", "no-answer", "undelivered", "read", "sent")):
        db.execute("INSERT INTO attempts (id, message_id, contact, channel, address, kind,"
                   " state, started_at, receipt) VALUES (?, 'm', 'c', 'sms', '+1', 'first',"
                   " 'done', 0, ?)", (f"a{index}", status))
    db.execute("INSERT INTO settings_kv (key, value) VALUES ('telegram.update_offset', '42')")
    db.execute("BEGIN IMMEDIATE")
    assert drive(migrate(SqliteTx(db))) == len(MIGRATIONS)
    db.execute("COMMIT")
    receipts = [row[0] for row in db.execute("SELECT receipt FROM attempts ORDER BY id")]
    assert receipts == ["delivered", "failed", "failed", "read", "sent"]
    assert db.execute("SELECT value FROM settings_kv WHERE key = 'telegram-updates.cursor'"
                      ).fetchone() == ("42",)
    db.close()


def test_attempts_recorded_before_providers_name_their_channels_only_provider(
    tmp_path: Path,
) -> None:
    import sqlite3

    from router.store.engines import migrate
    from router.store.schema import MIGRATIONS
    from router.store.sql import SqliteTx, drive

    db = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    providers = next(i for i, m in enumerate(MIGRATIONS) if "ADD COLUMN provider" in m[0])
    for version, statements in enumerate(MIGRATIONS[:providers], start=1):
        for statement in statements:
            db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    for channel in ("whatsapp", "sms", "voice", "telegram", "email"):
        db.execute("INSERT INTO attempts (id, message_id, contact, channel, address, kind,"
                   " state, started_at) VALUES (?, 'm', 'c', ?, '+1', 'first', 'done', 0)",
                   (f"a-{channel}", channel))
    db.execute("BEGIN IMMEDIATE")
    assert drive(migrate(SqliteTx(db))) == len(MIGRATIONS)
    db.execute("COMMIT")
    assert dict(db.execute("SELECT channel, provider FROM attempts").fetchall()) == {
        "whatsapp": "twilio", "sms": "twilio", "voice": "twilio", "telegram": "telegram",
        "email": "email",
    }
    db.close()
