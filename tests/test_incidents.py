"""Incidents through the Python API: who each step reaches, on which channel first, what
resolving stops, the owner's reminder, and bad input (both backends, scripted channels,
a fake clock)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from scripted import FakeClock, ScriptedChannel

from config import ConfigError, settings_from_mapping
from router import BadInput, Message, Outcome, Router, Scope, Status
from router.store.incidents import IncidentBook

PEOPLE: dict[str, dict[str, object]] = {
    "ann": {"phone": "+33612345678", "email": "ann@example.com"},
    "bob": {"phone": "+33698765432"},  # a number the SMS provider refuses: never reached
    "cat": {"email": "cat@example.com"},
    "dan": {"phone": "+33611111111"},  # the SMS request times out: maybe arrived
    "eve": {"phone": "+33622222222", "email": "eve@example.com"},  # SMS refused, email takes it
}


def incident_router(store: dict[str, Any], *channels: ScriptedChannel,
                    clock: FakeClock | None = None, people: Mapping[str, object] | None = None,
                    groups: Mapping[str, list[str]] | None = None,
                    **sections: dict[str, Any]) -> Router:
    contacts = dict(people or PEOPLE)
    config: dict[str, Any] = {
        "routing": {"order": [c.name for c in channels], "retry_backoff": 0.01},
        "store": store, "contacts": contacts,
        "groups": dict(groups or {"ops": list(contacts)}),
        "escalation": {"ack_wait": 300, "repeats": 0},
        **sections,
    }
    return Router(settings_from_mapping(config), channels={c.name: c for c in channels},
                  clock=clock or FakeClock())


def sent_to(channel: ScriptedChannel, text: str) -> list[str]:
    """Addresses ``channel`` carried ``text`` to (its words begin with it), in order."""
    return [address for address, words, _ in channel.sent if words.startswith(text)]


def scripted() -> tuple[ScriptedChannel, ScriptedChannel]:
    sms, email = ScriptedChannel("sms"), ScriptedChannel("email")
    refused = Outcome.permanent("Twilio 21211: invalid number", Scope.RECIPIENT)
    sms.will(refused, address="+33698765432")
    sms.will(Outcome.unknown("read timeout after the request was sent"),
             address="+33611111111")
    sms.will(refused, address="+33622222222")
    return sms, email


async def test_updates_and_the_all_clear_reach_exactly_those_reached(
    store_section: dict[str, Any],
) -> None:
    sms, email = scripted()
    async with incident_router(store_section, sms, email) as router:
        opened = await router.incidents.open(Message("db down"), title="DB", group="ops")
        assert {r.contact: r.status for r in opened} == {
            "ann": Status.ACCEPTED, "bob": Status.FAILED, "cat": Status.ACCEPTED,
            "dan": Status.UNKNOWN, "eve": Status.ACCEPTED,
        }
        update = await router.incidents.update(opened.incident_id, Message("failing over"))
        done = await router.incidents.resolve(opened.incident_id, Message("all clear"))
    reached = ["ann", "cat", "dan", "eve"]  # dan's message may have arrived: he counts
    assert [r.contact for r in update] == reached
    assert [r.contact for r in done] == reached
    assert "+33698765432" not in sent_to(sms, "failing over") + sent_to(sms, "all clear")
    assert update.incident_id == done.incident_id == opened.incident_id
    assert update.message_id not in (None, opened.message_id, done.message_id)


async def test_each_is_tried_first_on_the_channel_that_last_worked(
    store_section: dict[str, Any],
) -> None:
    sms, email = scripted()
    async with incident_router(store_section, sms, email) as router:
        opened = await router.incidents.open(Message("db down"), title="DB", group="ops")
        await router.incidents.update(opened.incident_id, Message("failing over"))
    # eve's SMS was refused and email took the notice: the update goes by email, no
    # request on SMS first; ann, whom SMS reached, gets it by SMS again.
    assert "eve@example.com" in sent_to(email, "failing over")
    assert "+33622222222" not in sent_to(sms, "failing over")
    assert "+33612345678" in sent_to(sms, "failing over")
    assert "ann@example.com" not in sent_to(email, "failing over")


async def test_an_acknowledgement_moves_the_channel_that_worked(
    store_section: dict[str, Any],
) -> None:
    sms, email = ScriptedChannel("sms"), ScriptedChannel("email")
    async with incident_router(store_section, sms, email) as router:
        opened = await router.incidents.open(Message("db down"), title="DB", group="ops",
                                             until="acknowledged")
        # ann's SMS went unanswered; the escalation's email reached her and she answered it.
        clock = router.clock
        assert isinstance(clock, FakeClock)
        clock.advance(301)
        await router.escalator.run_due()
        assert "ann@example.com" in sent_to(email, "db down")
        reply = await router.inbound.text("email", "ann@example.com", "ACK", "ext-1")
        assert reply is not None and reply.kind == "ack"
        await router.incidents.update(opened.incident_id, Message("failing over"))
    assert "ann@example.com" in sent_to(email, "failing over")
    assert "+33612345678" not in sent_to(sms, "failing over")


async def test_someone_who_joined_the_group_later_gets_no_all_clear(
    store_section: dict[str, Any],
) -> None:
    sms, email = ScriptedChannel("sms"), ScriptedChannel("email")
    few = {name: PEOPLE[name] for name in ("ann", "cat")}
    async with incident_router(store_section, sms, email, people=few) as router:
        opened = await router.incidents.open(Message("db down"), title="DB", group="ops")
    async with incident_router(store_section, sms, email) as router:  # eve joined since
        done = await router.incidents.resolve(opened.incident_id, Message("all clear"))
    assert [r.contact for r in done] == ["ann", "cat"]
    assert "eve@example.com" not in sent_to(email, "all clear")


async def test_resolving_stops_every_pending_escalation(store_section: dict[str, Any]) -> None:
    sms, email = ScriptedChannel("sms"), ScriptedChannel("email")
    clock = FakeClock()
    async with incident_router(store_section, sms, email, clock=clock,
                               escalation={"ack_wait": 300, "repeats": 2,
                                           "repeat_every": 600}) as router:
        opened = await router.incidents.open(Message("db down"), title="DB", group="ops",
                                             until="acknowledged")
        done = await router.incidents.resolve(opened.incident_id, Message("all clear"))
        requests = len(sms.sent) + len(email.sent)
        for _ in range(6):
            clock.advance(700)
            assert await router.escalator.run_due() == 0
        stored = await router.store.load_message(opened.message_id or "")
    assert done.stopped == 5  # every delivery was waiting for its person
    assert len(sms.sent) + len(email.sent) == requests  # nothing more, ever
    assert stored is not None and stored.state == "done" and stored.stopped_at is not None
    assert {d.status for d in stored.deliveries} == {"accepted"}
    assert all(d.done and d.next_action_at is None for d in stored.deliveries)


async def test_resolving_while_the_first_notice_is_still_going_out_stops_it(
    store_section: dict[str, Any],
) -> None:
    """A false alarm, called off while a large group is being alerted: the rest never get
    the alarm (after the all-clear, it would be worse than silence)."""
    people = {f"p{i:02d}": {"email": f"p{i:02d}@example.com"} for i in range(30)}
    email = ScriptedChannel("email", delay=0.02)
    async with incident_router(store_section, email, people=people,
                               routing={"order": ["email"], "concurrency": 2}) as router:
        opening = asyncio.create_task(router.incidents.open(
            Message("fire alarm"), title="Fire", group="ops"))
        async with asyncio.timeout(10):
            while len(email.sent) < 6:
                await asyncio.sleep(0.005)
        [incident] = await router.incidents.recent()
        done = await router.incidents.resolve(incident.incident_id, Message("false alarm"))
        opened = await opening
        reached = {r.contact for r in done}
        report = await router.incidents.report(incident.incident_id)
    assert opened.broadcast is not None and opened.broadcast.stopped
    alarmed = set(sent_to(email, "fire alarm"))
    assert 6 <= len(alarmed) < 30
    # Everyone alarmed, and only they, got the all-clear (those in flight at the resolve
    # may have been alarmed: they count).
    missing = alarmed - {f"{name}@example.com" for name in reached}
    assert not missing, f"alarmed, and given no all-clear: {sorted(missing)}"
    assert {f"{name}@example.com" for name in reached} == alarmed
    never = {p.contact for p in report.people if p.status == "expired"}
    assert len(never) == 30 - len(alarmed)


async def test_the_timeline_lists_every_step_in_order(store_section: dict[str, Any]) -> None:
    sms, email = scripted()
    clock = FakeClock()
    async with incident_router(store_section, sms, email, clock=clock) as router:
        opened = await router.incidents.open(
            Message("db down"), title="DB", group="ops", until="acknowledged",
            public_text="We are looking into an outage.")
        clock.advance(60)
        await router.inbound.text("sms", "+33612345678", "ACK", "ext-ann")
        clock.advance(60)
        await router.incidents.update(opened.incident_id, Message("failing over"))
        clock.advance(60)
        await router.inbound.text("email", "cat@example.com", "OK", "ext-cat")
        clock.advance(60)
        await router.incidents.resolve(opened.incident_id, Message("all clear"),
                                       public_text="Resolved.")
        report = await router.incidents.report(opened.incident_id)
    assert [(e.kind, e.ack.contact if e.ack else None) for e in report.timeline] == [
        ("opened", None), ("acknowledged", "ann"), ("update", None),
        ("acknowledged", "cat"), ("resolved", None),
    ]
    people = {p.contact: p for p in report.people}
    assert people["ann"].acknowledged_on == "sms" and people["cat"].acknowledged_on == "email"
    assert report.never_reached == ["bob"]
    assert [e.sent_to for e in report.timeline if e.entry] == [5, 4, 4]
    assert report.timeline[0].entry is not None
    assert report.timeline[0].entry.public_text == "We are looking into an outage."


async def test_a_late_promise_reminds_the_owner_once(store_section: dict[str, Any]) -> None:
    sms, email = ScriptedChannel("sms"), ScriptedChannel("email")
    clock = FakeClock()
    async with incident_router(store_section, sms, email, clock=clock) as router:
        opened = await router.incidents.open(Message("db down"), title="DB", group="ops",
                                             owner="cat", next_update=1800)
        timers = router.incidents.timers
        [incident] = await router.incidents.recent()
        assert incident.next_update_at == opened.entry.at + 1800
        clock.now = incident.next_update_at - 1
        assert await timers.fire_due() == 0
        assert not incident.overdue(clock.time())
        clock.advance(2)
        assert await timers.fire_due() == 1
        for _ in range(3):
            clock.advance(600)
            assert await timers.fire_due() == 0
        [incident] = await router.incidents.recent()
        report = await router.incidents.report(opened.incident_id)
    reminders = sent_to(email, "Reminder")
    assert reminders == ["cat@example.com"]  # the owner, on her own channel, once
    assert incident.overdue(clock.time()) and report.overdue
    assert [e.kind for e in report.timeline] == ["opened", "reminder"]
    [reminder] = [e for e in report.timeline if e.kind == "reminder"]
    assert reminder.entry is not None and opened.incident_id in reminder.entry.text


async def test_an_update_in_time_keeps_the_promise(store_section: dict[str, Any]) -> None:
    sms, email = ScriptedChannel("sms"), ScriptedChannel("email")
    clock = FakeClock()
    async with incident_router(store_section, sms, email, clock=clock,
                               incidents={"owner": "ann"}) as router:
        opened = await router.incidents.open(Message("db down"), title="DB", group="ops",
                                             next_update=1800)
        clock.advance(1700)
        await router.incidents.update(opened.incident_id, Message("still on it"))
        clock.advance(3600)
        assert await router.incidents.timers.fire_due() == 0
        [incident] = await router.incidents.recent()
    assert not incident.overdue(clock.time())
    assert sent_to(sms, "Reminder") == [] and sent_to(email, "Reminder") == []


async def test_an_update_can_hand_the_incident_over(store_section: dict[str, Any]) -> None:
    sms, email = ScriptedChannel("sms"), ScriptedChannel("email")
    clock = FakeClock()
    async with incident_router(store_section, sms, email, clock=clock,
                               incidents={"owner": "ann"}) as router:
        opened = await router.incidents.open(Message("db down"), title="DB", group="ops")
        update = await router.incidents.update(opened.incident_id, Message("cat takes over"),
                                               owner="cat", next_update=600)
        assert update.entry.next_update_at is not None
        clock.now = update.entry.next_update_at + 1
        assert await router.incidents.timers.fire_due() == 1
        [incident] = await router.incidents.recent()
    assert incident.owner == "cat"
    assert sent_to(email, "Reminder") == ["cat@example.com"]
    assert sent_to(sms, "Reminder") == []


async def test_two_processes_send_one_reminder(store_section: dict[str, Any]) -> None:
    sms, email = ScriptedChannel("sms"), ScriptedChannel("email")
    clock = FakeClock()
    first = incident_router(store_section, sms, email, clock=clock, incidents={"owner": "cat"})
    second = incident_router(store_section, sms, email, clock=clock, incidents={"owner": "cat"})
    async with first, second:
        await first.incidents.open(Message("db down"), title="DB", group="ops",
                                   next_update=60)
        clock.advance(61)
        fired = await asyncio.gather(*(router.incidents.timers.fire_due()
                                       for router in (first, second, first, second)))
    assert sum(fired) == 1
    assert sent_to(email, "Reminder") == ["cat@example.com"]


async def test_an_update_stops_the_reminders_escalation(store_section: dict[str, Any]) -> None:
    sms, email = ScriptedChannel("sms"), ScriptedChannel("email")
    clock = FakeClock()
    async with incident_router(store_section, sms, email, clock=clock,
                               incidents={"owner": "ann"}) as router:
        opened = await router.incidents.open(Message("db down"), title="DB", group="ops",
                                             next_update=60)
        clock.advance(61)
        await router.incidents.timers.fire_due()
        assert sent_to(sms, "Reminder") == ["+33612345678"]
        await router.incidents.update(opened.incident_id, Message("here it is"))
        clock.advance(301)  # the reminder would now escalate to ann's email
        assert await router.escalator.run_due() == 0
    assert sent_to(email, "Reminder") == []


async def test_the_first_acknowledgement_is_announced_to_the_owner(
    store_section: dict[str, Any],
) -> None:
    sms, email = ScriptedChannel("sms"), ScriptedChannel("email")
    clock = FakeClock()
    async with incident_router(store_section, sms, email, clock=clock,
                               incidents={"owner": "cat", "announce_acks": True,
                                          "timezone": "UTC"}) as router:
        await router.incidents.open(Message("db down"), title="DB", group="ops",
                                    until="acknowledged")
        assert await router.incidents.timers.fire_due() == 0  # nobody answered yet
        await router.inbound.text("sms", "+33698765432", "ACK", "ext-bob")
        await router.inbound.text("sms", "+33612345678", "ACK", "ext-ann")
        assert await router.incidents.timers.fire_due() == 1
        assert await router.incidents.timers.fire_due() == 0
    [announcement] = [words for address, words, _ in email.sent
                      if address == "cat@example.com" and "acknowledged" in words]
    assert announcement.startswith("bob acknowledged incident inc-")
    assert announcement.endswith(" on SMS at 08:00.")  # the fake clock's hour, in UTC


async def test_bad_input_records_and_sends_nothing(store_section: dict[str, Any]) -> None:
    sms, email = ScriptedChannel("sms"), ScriptedChannel("email")
    async with incident_router(store_section, sms, email) as router:
        incidents = router.incidents
        opened = await incidents.open(Message("db down"), title="DB", group="ops")
        await incidents.resolve(opened.incident_id, Message("all clear"))
        book = IncidentBook.of(router.store)
        assert book is not None
        entries = len(await book.entries(opened.incident_id))
        requests = len(sms.sent) + len(email.sent)
        cases = [
            (incidents.update("inc-nope99", Message("x")), "no incident 'inc-nope99'"),
            (incidents.resolve("inc-nope99", Message("x")), "no incident"),
            (incidents.resolve(opened.incident_id, Message("x")), "resolved already"),
            (incidents.update(opened.incident_id, Message("x")), "takes no more updates"),
            (incidents.open(Message("x"), title="T", group="ops", next_update=60),
             "needs an owner"),
            (incidents.open(Message("x"), title="T", group="ops", owner="zed"),
             "unknown contact 'zed'"),
            (incidents.open(Message("x"), title="T", group="nobody"), "unknown group"),
            (incidents.open(Message("x"), title="  ", group="ops"), "--title: is empty"),
            (incidents.open(Message("x"), title="T\x1b[2J", group="ops"), "control character"),
            (incidents.open(Message("x"), title="T\nBcc: all", group="ops"), "single line"),
            (incidents.open(Message("x"), title="T", group="ops", public_text="a\x00b"),
             "NUL"),
            (incidents.open(Message("x"), title="T", group="ops", severity="apocalyptic"),
             "--severity"),
            (incidents.open(Message("x"), title="T", group="ops", public_text="p" * 2001),
             "--public-text"),
            (incidents.open(Message("x"), title="T", group="ops", owner="ann",
                            next_update=-5), "longer than zero"),
        ]
        for attempt, problem in cases:
            with pytest.raises(BadInput, match=problem):
                await attempt
        assert len(await incidents.recent()) == 1
        assert len(await book.entries(opened.incident_id)) == entries
    assert len(sms.sent) + len(email.sent) == requests


async def test_a_message_that_fits_no_channel_opens_nothing(
    store_section: dict[str, Any],
) -> None:
    sms = ScriptedChannel("sms", max_length=20)
    people = {"bob": PEOPLE["bob"]}
    async with incident_router(store_section, sms, people=people) as router:
        with pytest.raises(BadInput, match="too long"):
            await router.incidents.open(Message("x" * 50), title="T", group="ops")
        assert await router.incidents.recent() == []
    assert sms.sent == []


@pytest.mark.parametrize(("incidents", "problem"), [
    ({"owner": "zed"}, "incidents.owner: names an unknown contact"),
    ({"timezone": "Mars/Olympus"}, "incidents.timezone: is not a known IANA time zone"),
    ({"status_title": "two\nlines"}, "incidents.status_title: must be one line"),
    ({"announce": True}, "incidents.announce: unknown key"),
    ({"status_url": "not a url"}, "incidents.status_url"),
])
def test_the_incidents_section_is_checked_naming_the_key(
    incidents: dict[str, Any], problem: str,
) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        settings_from_mapping({"contacts": PEOPLE, "incidents": incidents})


async def test_a_group_from_contact_files_is_alerted_updated_and_given_the_all_clear(
    tmp_path: Path,
) -> None:
    (tmp_path / "staff.csv").write_text(
        "name,email,groups\n"
        "fay,fay@example.com,ops\n"
        "gus,gus@example.com,ops;night\n"
        "hal,hal@example.com,night\n", encoding="utf-8")
    email = ScriptedChannel("email")
    config: dict[str, Any] = {
        "routing": {"order": ["email"]}, "store": {"path": str(tmp_path / "bc.db")},
        "contacts": {"cat": PEOPLE["cat"]}, "groups": {"ops": ["cat"], "night": []},
        "directory": {"files": ["staff.csv"]}, "incidents": {"owner": "hal"},
    }
    settings = settings_from_mapping(config, base_dir=tmp_path)
    async with Router(settings, channels={"email": email}, clock=FakeClock()) as router:
        opened = await router.incidents.open(Message("db down"), title="DB",
                                             group=["ops", "night"], next_update=600)
        update = await router.incidents.update(opened.incident_id, Message("failing over"))
        done = await router.incidents.resolve(opened.incident_id, Message("all clear"))
    # cat from the config, fay, gus and hal from the file; gus, in both groups, once.
    assert [r.contact for r in opened] == ["cat", "fay", "gus", "hal"]
    assert [r.contact for r in update] == [r.contact for r in done] == ["cat", "fay", "gus",
                                                                        "hal"]
    assert sent_to(email, "db down") == ["cat@example.com", "fay@example.com",
                                         "gus@example.com", "hal@example.com"]
