"""The public status page and its Atom feed: served by the real ASGI app on a socket,
exported as files, parsed by a real feed parser; nothing but the public words."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import feedparser
from scripted import FakeClock
from status_helpers import fetch, router_for, serving

from router import Message, Router
from router.incidents import StatusPage
from router.incidents.status_page import printable
from router.store.incidents import IncidentBook

PLANTED = [
    "zebulon", "quill", "ottoline", "vance", "+33612345678", "33612345678", "14155552671",
    "zebulon.quill@example.com", "ottoline@corp.example", "987654321",
    "Kestrel payroll database",  # the title: for the team only
    "INTERNAL", "root cause is the payroll", "call the bridge on 4411", "rollback of v2.3",
]
PUBLIC_OPEN = 'The portal is down <script>alert("x")</script> & we are on it.'
PUBLIC_UPDATE = "Failover started.\nSome customers may still see errors."
PUBLIC_DONE = "Resolved: the portal works again."


async def a_whole_incident(router: Router) -> str:
    incidents = router.incidents
    opened = await incidents.open(
        Message("INTERNAL: root cause is the payroll DB; call the bridge on 4411"),
        title="Kestrel payroll database", group="ops", next_update=1800,
        public_text=PUBLIC_OPEN)
    await incidents.update(opened.incident_id, Message("INTERNAL: rollback of v2.3 started"),
                           public_text=PUBLIC_UPDATE)
    await incidents.update(opened.incident_id, Message("INTERNAL: no public word this time"))
    await incidents.resolve(opened.incident_id, Message("INTERNAL: all clear, rollback of v2.3"),
                            public_text=PUBLIC_DONE)
    return opened.incident_id


def assert_nothing_private(text: str, incident_id: str) -> None:
    lowered = text.lower()
    leaked = [value for value in [*PLANTED, incident_id] if value.lower() in lowered]
    assert leaked == [], leaked


async def test_the_page_and_the_feed_carry_the_public_words_and_nothing_else(
    store_section: dict[str, Any],
) -> None:
    async with router_for(store_section) as router:
        incident_id = await a_whole_incident(router)
        async with serving(router) as base:
            status, headers, page = await fetch(base + "/status")
            feed_status, feed_headers, atom = await fetch(base + "/status/feed.atom")
    assert status == feed_status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert feed_headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    for text in (page, atom):
        assert_nothing_private(text, incident_id)
        assert "<script>" not in text
    # Escaped, not dropped: the words a person wrote are shown as written.
    assert "The portal is down &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; we" in page
    assert "Failover started.\nSome customers may still see errors." in page
    assert PUBLIC_DONE in page and "Resolved incident" in page
    parsed = feedparser.parse(atom)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.feed.title == "Example Corp status"
    assert [entry.title.split(",")[0] for entry in parsed.entries] == [
        "Resolved", "Update", "Investigating"]  # newest first; the silent update is absent
    assert parsed.entries[2].content[0].value.startswith(PUBLIC_OPEN)
    assert parsed.entries[1].content[0].value == PUBLIC_UPDATE
    assert len({entry.id for entry in parsed.entries}) == 3
    assert all(entry.id.startswith("urn:uuid:") for entry in parsed.entries)
    assert parsed.entries[0].link.startswith("https://alerts.example.com/status#incident-")


async def test_entry_ids_stay_the_same_served_or_exported(
    store_section: dict[str, Any], tmp_path: Path,
) -> None:
    async with router_for(store_section) as router:
        await a_whole_incident(router)
        async with serving(router) as base:
            _, _, first = await fetch(base + "/status/feed.atom")
        book = IncidentBook.of(router.store)
        assert book is not None
        page = StatusPage(book, router.settings.incidents, router.clock)
        written = await page.export(tmp_path / "site")
        again = page.served(await page.snapshot()).atom
    served_ids = [entry.id for entry in feedparser.parse(first).entries]
    exported = feedparser.parse((tmp_path / "site" / "feed.atom").read_text())
    assert exported.bozo == 0
    assert [entry.id for entry in exported.entries] == served_ids
    assert [entry.id for entry in feedparser.parse(again).entries] == served_ids
    assert sorted(path.name for path in written) == ["feed.atom", "index.html"]
    assert sorted(os.listdir(tmp_path / "site")) == ["feed.atom", "index.html"]  # no leftovers
    html = (tmp_path / "site" / "index.html").read_text()
    assert 'href="feed.atom"' in html and PUBLIC_DONE in html


async def test_next_update_by_is_shown_while_one_is_promised(tmp_path: Path) -> None:
    clock = FakeClock()
    async with router_for({"path": str(tmp_path / "bc.db")}, clock) as router:
        book = IncidentBook.of(router.store)
        assert book is not None
        page = StatusPage(book, router.settings.incidents, router.clock)
        opened = await router.incidents.open(Message("x"), title="t", group="ops",
                                             next_update=1800, public_text="Investigating.")
        promised = opened.entry.next_update_at
        assert promised is not None
        shown = page.served(await page.snapshot()).html
        assert f"Next update by {promised_at(promised)}" in shown
        assert "1 ongoing incident." in shown
        await router.incidents.update(opened.incident_id, Message("y"),
                                      public_text="Still on it; no time promised.")
        shown = page.served(await page.snapshot()).html
        assert "Next update by" not in shown and "Still on it" in shown


def promised_at(timestamp: float) -> str:
    return f"{datetime.fromtimestamp(timestamp, UTC):%H:%M}"


async def test_a_step_without_public_words_publishes_nothing(tmp_path: Path) -> None:
    async with router_for({"path": str(tmp_path / "bc.db")}) as router:
        opened = await router.incidents.open(Message("INTERNAL only"), title="t", group="ops")
        async with serving(router) as base:
            _, _, page = await fetch(base + "/status")
            _, _, atom = await fetch(base + "/status/feed.atom")
    assert "No incidents reported." in page and "No ongoing incidents." in page
    assert_nothing_private(page + atom, opened.incident_id)
    parsed = feedparser.parse(atom)
    assert parsed.bozo == 0 and parsed.entries == []


async def test_control_and_direction_characters_never_reach_the_page(tmp_path: Path) -> None:
    nasty = "Line one\x1b[2J\x07 then \u202egnp.exe\u202c and \x08 BS, \ufffe too\r\nend"
    async with router_for({"path": str(tmp_path / "bc.db")}) as router:
        await router.incidents.open(Message("x"), title="t", group="ops", public_text=nasty)
        book = IncidentBook.of(router.store)
        assert book is not None
        rendered = StatusPage(book, router.settings.incidents, router.clock).served(
            await StatusPage(book, router.settings.incidents, router.clock).snapshot())
    for text in (rendered.html, rendered.atom):
        assert not any(char in text for char in "\x1b\x07\x08\u202e\u202c\ufffe\r")
        assert "Line one\ufffd[2J\ufffd then \ufffdgnp.exe\ufffd and \ufffd BS" in text
    assert feedparser.parse(rendered.atom).bozo == 0
    # A NUL is refused as input; one already stored (an older version) is still replaced.
    assert printable("a\x00b\udc80c") == "a\ufffdb\ufffdc"
