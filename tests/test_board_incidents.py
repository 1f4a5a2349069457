"""Incidents on the crisis board: listed live, overdue flagged, behind the board's login.

A real server on a socket, real stores (SQLite and PostgreSQL, where the change reaches
the board by the incident tables' NOTIFY triggers), and one run in a real browser.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from board_helpers import API_TOKEN, PASSWORD, board_rig, browser, client, log_in, part_where, sse

from router import Message

BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
OWNER = {"incidents": {"owner": "alice"}, "escalation": {"ack_wait": 600, "repeats": 0}}


async def test_the_api_lists_incidents_and_flags_a_late_promise(
    tmp_path: Path, store_section: dict[str, Any],
) -> None:
    async with board_rig(tmp_path, store=store_section, overrides=OWNER) as rig, \
            client() as http:
        async with http.get(rig.at("/api/incidents")) as answer:
            assert answer.status == 401  # nothing without the board's login or token
        opened = await rig.router.incidents.open(
            Message("db down"), title="<b>DB</b> down", group="ops", next_update=1.0)
        late = await rig.router.incidents.open(Message("disk"), title="Disk", group="ops")
        await rig.router.incidents.resolve(late.incident_id, Message("fixed"))
        async with asyncio.timeout(15):  # the server's timers remind alice: then it is late
            while True:
                async with http.get(rig.at("/api/incidents"), headers=BEARER) as answer:
                    listed = (await answer.json())["incidents"]
                if listed[0]["overdue"]:
                    break
                await asyncio.sleep(0.1)
        async with http.get(rig.at("/api/messages"), headers=BEARER) as answer:
            messages = (await answer.json())["messages"]
    assert [(i["incident_id"], i["state"]) for i in listed] == [
        (opened.incident_id, "open"), (late.incident_id, "resolved")]
    assert listed[0]["title"] == "<b>DB</b> down" and listed[0]["owner"] == "alice"
    assert listed[1]["overdue"] is False
    notices = [m for m in messages if m["audience"].get("incident") == opened.incident_id]
    assert [m["audience"]["group"] for m in notices if "group" in m["audience"]] == ["ops"]


async def test_an_incident_reaches_the_live_stream(
    tmp_path: Path, store_section: dict[str, Any],
) -> None:
    async with board_rig(tmp_path, store=store_section, overrides=OWNER) as rig, \
            client() as http:
        await log_in(http, rig)
        events = sse(http, rig.at("/board/events"))
        await part_where(events, "incidents", lambda html: "No incident" in html)
        opened = await rig.router.incidents.open(Message("db down"), title="Payroll <down>",
                                                 group="ops")
        html = await part_where(events, "incidents", lambda h: opened.incident_id in h)
        await events.aclose()
    assert "Payroll &lt;down&gt;" in html and 'data-state="open"' in html


async def test_a_browser_sees_an_incident_appear_and_turn_overdue(tmp_path: Path) -> None:
    async with board_rig(tmp_path, overrides=OWNER) as rig, browser() as context:
        page = await context.new_page()
        await page.goto(rig.at("/board"))
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_selector("#live[data-state=live]", timeout=15_000)
        await page.evaluate("window.__sameDocument = true")
        opened = await rig.router.incidents.open(
            Message("db down"), title="Lyon DC down", group="ops", next_update=2.0)
        row = page.locator(f"#incidents li[data-incident={opened.incident_id}]")
        await row.wait_for(timeout=15_000)
        assert await row.get_attribute("data-overdue") == "no"
        assert "Lyon DC down" in await row.inner_text()
        # The promise passes: the server reminds the owner, and the board flags it.
        await page.locator(f"#incidents li[data-incident={opened.incident_id}]"
                           "[data-overdue=yes]").wait_for(timeout=15_000)
        assert "OVERDUE" in await row.inner_text()
        assert await page.evaluate("window.__sameDocument") is True  # never reloaded
