"""The crisis board in a real headless browser (Debian's chromium, driven by Playwright).

What a person on the crisis cell would check: they log in, the page changes by itself
when a channel goes down or someone acknowledges, the filter narrows the table, a wrong
password is refused, and a message's ``<script>`` is shown, never run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from board_helpers import PASSWORD, BoardRig, board_rig, browser

from router import Message

LIVE = 15_000  # ms a page may take to show a change; the board promises about one second
SCREENSHOT_SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "board_screenshot.py"
HEALTH = {"background_probes": True, "probe_interval": 0.3, "refresh_interval": 0.3}


async def logged_in(context: Any, rig: BoardRig, path: str = "/board") -> Any:
    page = await context.new_page()
    await page.goto(rig.at(path))
    assert "/board/login" in page.url  # never shown without a password
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#live[data-state=live]", timeout=LIVE)
    return page


async def test_log_in_and_see_a_channel_go_down_without_reloading(tmp_path: Path) -> None:
    async with board_rig(tmp_path, overrides={"health": HEALTH}) as rig, \
            browser() as context:
        page = await logged_in(context, rig)
        await page.evaluate("window.__sameDocument = true")
        row = page.locator("#health tr[data-channel=telegram]")
        await row.and_(page.locator("[data-state=up]")).wait_for(timeout=LIVE)
        await rig.sandbox.telegram.refuse()  # the provider goes away
        await page.locator("#health tr[data-channel=telegram][data-state=down]").wait_for(
            timeout=LIVE)
        assert (await row.locator(".error").inner_text()).strip()  # why, in the row
        assert await page.evaluate("window.__sameDocument") is True  # no reload happened
        await rig.sandbox.telegram.restore()


async def test_a_row_moves_from_pending_to_acknowledged_when_the_button_is_pressed(
    tmp_path: Path,
) -> None:
    from router.ops.worker import Worker

    contacts = {"carol": {"telegram": 333333333}, "dave": {"telegram": 444444444}}
    async with board_rig(tmp_path, contacts=contacts,
                         overrides={"escalation": {"ack_wait": 600}}) as rig, \
            browser() as context:
        # Queued for workers: recorded, nothing sent yet.
        queued = await rig.router.broadcast(Message("Database down: who takes it?"),
                                            group="ops", until="acknowledged", queue=True)
        page = await logged_in(context, rig)
        await page.evaluate("window.__sameDocument = true")
        carol = page.locator("#detail tr[data-contact=carol]")
        assert await carol.get_attribute("data-status") == "pending"
        stop = asyncio.Event()
        working = asyncio.create_task(Worker(rig.router).run(stop))
        try:
            # Taken by Telegram, then waiting for her answer: two writes, which a busy
            # machine may show one after the other.
            await page.locator("#detail tr[data-contact=carol][data-status=accepted]",
                               has_text="waiting for ack").wait_for(timeout=LIVE)
            async with asyncio.timeout(10):
                while not [s for s in rig.sandbox.telegram.sent if s.chat_id == 333333333]:
                    await asyncio.sleep(0.02)
            [message] = [s for s in rig.sandbox.telegram.sent if s.chat_id == 333333333]
            keyboard: Any = (message.reply_markup or {})["inline_keyboard"]
            await rig.sandbox.telegram.push_callback_query(
                333333333, message.message_id, str(keyboard[0][0]["callback_data"]))
            await page.locator(
                "#detail tr[data-contact=carol][data-status=acknowledged]").wait_for(timeout=LIVE)
        finally:
            stop.set()
            await working
        assert "on telegram" in await carol.inner_text()  # when, and on which channel
        dave = page.locator("#detail tr[data-contact=dave]")
        assert await dave.get_attribute("data-status") == "accepted"
        assert "ack" in await page.locator("#inbox").inner_text()
        assert await page.evaluate("window.__sameDocument") is True  # never reloaded
        selected = page.locator("#messages li.selected")
        assert await selected.get_attribute("data-message") == queued.message_id


async def test_the_filter_narrows_the_table(tmp_path: Path) -> None:
    from playwright.async_api import expect

    contacts = {f"medic{i:02d}": {"email": f"medic{i}@example.com"} for i in range(12)}
    contacts |= {f"pilot{i:02d}": {"email": f"pilot{i}@example.com"} for i in range(8)}
    async with board_rig(tmp_path, contacts=contacts) as rig, browser() as context:
        await rig.router.broadcast(Message("Stand by"), group="ops")
        page = await logged_in(context, rig)
        rows = page.locator("#detail tbody tr[data-contact]")
        assert await rows.count() == 20
        await page.fill("input[name=q]", "pilot")
        await expect(rows).to_have_count(8, timeout=LIVE)
        names = await rows.evaluate_all("rows => rows.map(r => r.dataset.contact)")
        assert all(name.startswith("pilot") for name in names)
        assert "q=pilot" in page.url  # the view can be shared as a link
        await page.select_option("select[name=status]", "failed")
        await page.locator("#detail .empty").wait_for(timeout=LIVE)


async def test_a_wrong_password_is_refused(tmp_path: Path) -> None:
    async with board_rig(tmp_path) as rig, browser() as context:
        page = await context.new_page()
        await page.goto(rig.at("/board"))
        await page.fill("input[name=password]", "not the password")
        await page.click("button[type=submit]")
        problem = page.locator("#problem")
        await problem.wait_for(timeout=LIVE)
        assert "Wrong" in await problem.inner_text()
        assert "/board/login" in page.url
        cookies = await context.cookies()
        assert not [c for c in cookies if c["name"] == "bc_session"]
        answer = await page.request.get(rig.at("/api/health"))
        assert answer.status == 401


async def test_a_script_in_a_message_is_shown_as_text_never_run(tmp_path: Path) -> None:
    hostile = ('<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
               "\u202eevil")
    async with board_rig(tmp_path) as rig, browser() as context:
        page = await logged_in(context, rig)
        await rig.router.send(Message(hostile), to="alice")  # arrives live, as a part
        text = page.locator("#detail .message-text")
        await text.wait_for(timeout=LIVE)
        shown = await text.inner_text()
        assert "<script>window.__pwned = 1</script>" in shown
        assert "\u202e" not in shown and "\\u202e" in shown  # no direction override
        await page.reload()  # and on a first paint too
        await page.locator("#detail .message-text").wait_for(timeout=LIVE)
        await asyncio.sleep(0.2)  # an onerror handler would have run by now
        assert await page.evaluate("window.__pwned") is None
        assert await page.locator("#detail script, #detail img").count() == 0


async def test_times_in_the_viewers_zone_and_usable_on_a_phone(tmp_path: Path) -> None:
    async with board_rig(tmp_path) as rig, browser(
        timezone_id="Asia/Tokyo", viewport={"width": 390, "height": 844},
        is_mobile=True, has_touch=True,
    ) as context:
        await rig.router.send(Message("Evacuate floor 3"), to="alice")
        page = await logged_in(context, rig)
        stamp = page.locator("#detail .meta time").first
        epoch = float(await stamp.get_attribute("data-t") or 0)
        expected = await page.evaluate(
            "t => new Intl.DateTimeFormat(undefined, {hour: '2-digit', minute: '2-digit',"
            " second: '2-digit', timeZone: 'Asia/Tokyo'}).format(new Date(t * 1000))", epoch)
        assert await stamp.inner_text() == expected
        assert "Tokyo" in await page.locator("#live").inner_text()
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1  # nothing wider than the phone: tables scroll in their box
        await page.emulate_media(media="print")
        assert await page.locator("#filter").is_hidden()
        assert await page.locator("#detail").is_visible()


async def test_the_readme_screenshot_script_still_works(tmp_path: Path) -> None:
    import sys

    from board_helpers import require_browser

    require_browser()
    script = SCREENSHOT_SCRIPT
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(tmp_path / "board.png"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()[-2000:]
    picture = await asyncio.to_thread((tmp_path / "board.png").read_bytes)
    assert picture.startswith(b"\x89PNG") and len(picture) > 50_000
