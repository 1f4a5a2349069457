"""The demo's third scene: Twilio goes down as a whole, and SMS carries on through Vonage.

Twilio stops answering (the connection is refused, as in an outage or a suspended
account); the account probe opens its breaker, so WhatsApp, and Twilio's SMS and voice,
are skipped without a request; SMS goes out through Vonage, the second provider of the
channel. The peers' own logs then show who received what: nothing twice.
"""

from __future__ import annotations

import logging
from collections import Counter

from rich.console import Console
from rich.table import Table
from rich.text import Text

from config.contacts import Contact
from router.cli.output import attempt_path
from router.core import Router
from router.model.message import Message
from router.model.results import DeliveryResult
from router.sandbox import Sandbox

PHONE_PEOPLE = ("amelie", "bruno", "emma", "jules")
NOTICE = "Update: the site is back for most users. Next update at 11:00."


async def provider_outage_scene(router: Router, sandbox: Sandbox, console: Console) -> bool:
    console.print(
        "\n[bold]Scene 3: Twilio goes down as a whole.[/] WhatsApp, SMS and voice all hang "
        "on one Twilio account; SMS and voice have Vonage as a second provider."
    )
    await sandbox.twilio.refuse()
    health_log = logging.getLogger("backchannel.health")
    level = health_log.level
    health_log.setLevel(logging.ERROR)  # the scene says it itself, without a log line
    try:
        probes = await router.probe()
    finally:
        health_log.setLevel(level)
    console.print(f"[bold red]  ⚡ Twilio refuses connections[/]: its account probe says "
                  f"[italic]{probes['twilio'].detail}[/]")
    for row in router.health_report():
        if row.name in ("whatsapp", "sms", "voice"):
            up = [lane.provider for lane in router.lanes(row.name)
                  if router.health.is_up(lane.key)]
            state = "up" if row.up else "down"
            console.print(f"  {row.name:<9}{state:<5} providers up: {', '.join(up) or 'none'}")
    twilio_before = len(sandbox.twilio.requests)
    vonage_before = len(sandbox.vonage.sms)
    # Phone channels only, so that the scene shows the providers, not the other channels.
    people = [Contact(name, router.contacts[name].addresses, order=("whatsapp", "sms", "voice"))
              for name in PHONE_PEOPLE]
    result = await router.broadcast(Message(NOTICE), to=people)
    for delivery in result:
        line = Text(f"  {delivery.contact:<8} ")
        line.append_text(attempt_path(delivery))
        console.print(line)
    console.print(_received(sandbox, vonage_before))
    twilio_requests = len(sandbox.twilio.requests) - twilio_before
    console.print(f"  requests to Twilio during the outage: {twilio_requests}")
    await sandbox.clear()
    reached = all(_via_vonage(delivery) for delivery in result)
    twice = any(n > 1 for n in Counter(m.to for m in sandbox.vonage.sms[vonage_before:]).values())
    return reached and not twice and twilio_requests == 0


def _via_vonage(delivery: DeliveryResult) -> bool:
    return delivery.reached and delivery.attempts[-1].provider == "vonage"


def _received(sandbox: Sandbox, vonage_before: int) -> Table:
    table = Table(title="scene 3: what each provider received (from the peers' own logs)")
    table.add_column("provider")
    table.add_column("channel")
    table.add_column("messages", justify="right")
    table.add_column("twice to one person", justify="right")
    rows = [("vonage", "sms", [m.to for m in sandbox.vonage.sms[vonage_before:]]),
            ("twilio", "whatsapp, sms, voice", [])]
    for provider, channel, recipients in rows:
        twice = sum(1 for n in Counter(recipients).values() if n > 1)
        table.add_row(provider, channel, str(len(recipients)),
                      f"[green]{twice}[/]" if twice == 0 else f"[bold red]{twice}[/]")
    return table
