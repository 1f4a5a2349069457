"""Take the README's screenshot of the crisis board, from the sandbox.

    python docs/board_screenshot.py [docs/board.png]

Runs the sandbox peers, a router with its server and board, a few reachability runs, an
incident resolved earlier, and an incident whose alert people must acknowledge while
WhatsApp fails; a person acknowledges on
Telegram, another replies, a third opts out. Then Debian's chromium (headless, driven
by Playwright) logs in and takes the picture. Everything is local; nothing is faked in
the store: it is what the router recorded.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import uvicorn

from config import settings_from_mapping
from router import Message, Router
from router.ops.reachability import check_reachability
from router.sandbox import DEFAULT_CONTACTS, Fault, Sandbox
from router.server import create_app

PASSWORD = "screenshot-password"  # noqa: S105 (a throwaway sandbox)
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
CONTACTS: dict[str, dict[str, object]] = {
    **DEFAULT_CONTACTS,
    "erin": {"phone": "+33698765432"},
    "frank": {"telegram": 555555555, "email": "frank@example.com"},
    "grace": {"email": "grace@example.com", "phone": "+14155552672"},
    "heidi": {"phone": "+447911123457", "email": "heidi@example.com"},
}


async def scene(router: Router, sandbox: Sandbox) -> None:
    for run in range(12):
        if run in (3, 4, 8):
            await sandbox.smtp.refuse()  # the mail relay had bad nights
        await check_reachability(router)
        await sandbox.smtp.restore()
    relay = await router.incidents.open(Message("Mail relay rejects logins"),
                                        title="Mail relay down", group="ops", severity="minor")
    await router.incidents.resolve(relay.incident_id, Message("Mail relay works again"))
    await router.send(Message("Status page updated: investigating."), to="bob")
    sandbox.twilio.faults.fail("whatsapp", Fault.http(503))
    opened = await router.incidents.open(
        Message("Datacenter FR-2 lost power: primary database down. Who takes it?"),
        title="FR-2 power loss", group="ops", severity="critical", until="acknowledged",
        next_update=1800, public_text="We are investigating an outage of the portal.")
    assert opened.broadcast is not None
    sent = opened.broadcast
    telegram = sandbox.telegram
    for chat in (111111111, 444444444):
        [alert] = [s for s in telegram.sent if s.chat_id == chat and s.reply_markup]
        keyboard: Any = (alert.reply_markup or {})["inline_keyboard"]
        await telegram.push_callback_query(chat, alert.message_id,
                                           str(keyboard[0][0]["callback_data"]))
    await telegram.push_message(333333333, "On my way, 20 min. <b>bold?</b>")
    await telegram.push_message(555555555, "STOP")
    while len(await router.store.inbox(10)) < 4:  # noqa: ASYNC110 (the poller records them)
        await asyncio.sleep(0.05)
    print(f"message {sent.message_id}: {[r.status.value for r in sent]}")


async def take(out: Path) -> None:
    from playwright.async_api import async_playwright

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    workdir = Path(tempfile.mkdtemp(prefix="bc-shot-"))
    try:
        async with Sandbox() as sandbox:
            text = sandbox.config_toml(contacts=CONTACTS, store_path=str(workdir / "bc.db"),
                                       overrides={"board": {"password": PASSWORD},
                                                  "escalation": {"ack_wait": 900},
                                                  "incidents": {"owner": "alice"},
                                                  "limits.sms": {"per_second": 50}})
            router = Router(settings_from_mapping(tomllib.loads(text)), long_running=True)
            server = uvicorn.Server(uvicorn.Config(
                create_app(router, manage=False), log_level="warning", lifespan="on",
                timeout_graceful_shutdown=1, proxy_headers=False))
            async with router:
                serving = asyncio.create_task(server.serve(sockets=[listener]))
                await scene(router, sandbox)
                async with async_playwright() as driver:
                    context = await driver.chromium.launch_persistent_context(
                        str(workdir / "profile"), executable_path=CHROMIUM, headless=True,
                        args=FLAGS, viewport={"width": 1280, "height": 900},
                        timezone_id="Europe/Paris", locale="en-GB")
                    page = await context.new_page()
                    await page.goto(url + "/board")
                    await page.fill("input[name=password]", PASSWORD)
                    await page.click("button[type=submit]")
                    await page.wait_for_selector("#live[data-state=live]")
                    await page.wait_for_selector(
                        "#health tr[data-channel=whatsapp][data-state=down]")
                    await page.screenshot(path=str(out), full_page=True)
                    await context.close()
                server.should_exit = True
                await serving
    finally:
        listener.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("board.png")
    asyncio.run(take(target))
    print(f"wrote {target}")
