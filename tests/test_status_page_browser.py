"""The public status page in a real headless browser (Debian's chromium, via Playwright).

What a reader would check: the page served by ``backchannel serve``'s app shows the
public words, with their line breaks, and a ``<script>`` or an ``onerror`` someone put in
them is shown as text, never run (the page also forbids scripts in its policy).
"""

from __future__ import annotations

from pathlib import Path

from board_helpers import browser
from status_helpers import router_for, serving

from router import Message

TRAP = ('Payments are delayed <script>document.title = "ran"</script>'
        '<img src="x" onerror="document.body.dataset.ran = 1">\nNext: a fix at noon.')


async def test_the_page_shows_the_words_and_runs_none_of_them(tmp_path: Path) -> None:
    async with router_for({"path": str(tmp_path / "bc.db")}) as router, browser() as context:
        incident = await router.incidents.open(
            Message("internal"), title="t", group="ops", next_update=1800, public_text=TRAP)
        async with serving(router) as base:
            page = await context.new_page()
            await page.goto(base + "/status")
            await page.wait_for_load_state("load")
            title = await page.title()
            ran = await page.evaluate("document.body.dataset.ran || null")
            images = await page.locator("img").count()
            shown = await page.locator("article li .text").inner_text()
            body = await page.locator("body").inner_text()
    assert title == "Example Corp status"  # no script changed it
    assert ran is None and images == 0
    assert shown == TRAP  # every character shown as written, the line break kept
    assert "1 ongoing incident." in body and "Next update by" in body
    assert incident.incident_id not in body
