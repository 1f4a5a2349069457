"""The demo's second scene: an alert that a person must acknowledge.

SMS first; nobody answers within the wait, so the router escalates to Telegram
with an Acknowledge button; the on-call engineer taps it, and the voice call
that would have come next is never made.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rich.console import Console
from rich.text import Text

from config.contacts import Contact
from router.core import Router
from router.model.message import Message
from router.model.results import Status
from router.sandbox import Sandbox

ACK_WAIT = 3.0
ALERT = "Database primary is down. Acknowledge if you take it."


async def acknowledge_scene(router: Router, sandbox: Sandbox, console: Console) -> bool:
    base = router.contacts["david"]
    david = Contact("david", base.addresses, order=("sms", "telegram", "voice"))
    chat = int(base.addresses["telegram"])
    console.print(
        f"\n[bold]Scene 2: an alert that must be acknowledged.[/] david is on call: SMS, then "
        f"Telegram, then a phone call, {ACK_WAIT:.0f} s apart until he answers."
    )
    started = time.monotonic()

    def say(text: str) -> None:
        console.print(f"  [dim]{time.monotonic() - started:4.1f}s[/]  {text}")

    router.services.start(server=False)  # escalation loop and Telegram polling
    result = await router.send(Message(ALERT), to=david, until="acknowledged")
    say("sms to david accepted; his phone shows:")
    for line in sandbox.twilio.sent("sms")[-1].body.splitlines():
        if line.strip():
            console.print(Text(f"          │ {line}", style="italic"))
    while not [s for s in sandbox.telegram.sent if s.chat_id == chat and s.reply_markup]:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # the escalation loop's next request, seen by the peer
    say(f"no acknowledgement within {ACK_WAIT:.0f} s: escalated to Telegram, with a button")
    await asyncio.sleep(1.0)  # david reads it
    sent = [s for s in sandbox.telegram.sent if s.chat_id == chat and s.reply_markup][-1]
    keyboard: Any = (sent.reply_markup or {})["inline_keyboard"]
    await sandbox.telegram.push_callback_query(
        chat, sent.message_id, str(keyboard[0][0]["callback_data"])
    )
    say("david taps [bold]Acknowledge[/] on Telegram")
    final = await router.wait_until_done(result.message_id, interval=0.05)
    [delivery] = final
    say(f"status: [bold green]{delivery.status.value}[/]; the escalation stopped")
    await asyncio.sleep(ACK_WAIT + 0.5)  # a call would have come by now
    calls = [c for c in sandbox.twilio.sent("voice") if c.to == base.addresses["voice"]]
    say(f"calls to david after that: {len(calls)}")
    return delivery.status is Status.ACKNOWLEDGED and not calls
