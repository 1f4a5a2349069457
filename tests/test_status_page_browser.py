"""The public status page in a real headless browser (Debian's chromium).

What a reader would check: the page served by ``backchannel serve``'s app shows the
public words, with line breaks, and a ``<script>`` or an ``onerror`` someone put in them
is shown as text, never run (the page also forbids scripts in its Content-Security-Policy).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_status_page import router_for, serving

from router import Message

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TRAP = ('Payments are delayed <script>document.title = "ran"</script>'
        '<img src="x" onerror="document.body.dataset.ran = 1">\nNext: a fix at noon.')


def _no_browser() -> None:
    message = "browser tests need Debian's chromium (apt-get install chromium)"
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


async def rendered_dom(url: str, profile: Path) -> str:
    """The document as chromium has it once the page has loaded (and run what it would)."""
    if CHROMIUM is None:
        _no_browser()
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    return out.decode()


async def test_the_page_shows_the_words_and_runs_none_of_them(tmp_path: Path) -> None:
    async with router_for({"path": str(tmp_path / "bc.db")}) as router:
        incident: Any = await router.incidents.open(
            Message("internal"), title="t", group="ops", next_update=1800, public_text=TRAP)
        async with serving(router) as base:
            dom = await rendered_dom(base + "/status", tmp_path / "profile")
    assert "<title>Example Corp status</title>" in dom  # no script changed it
    assert "data-ran" not in dom and "<img" not in dom
    assert ("Payments are delayed &lt;script&gt;document.title = \"ran\"&lt;/script&gt;"
            "&lt;img src=\"x\" onerror=\"document.body.dataset.ran = 1\"&gt;\n"
            "Next: a fix at noon.") in dom
    assert "1 ongoing incident." in dom and "Next update by" in dom
    assert incident.incident_id not in dom
