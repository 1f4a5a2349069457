"""``backchannel demo``: a broadcast during a WhatsApp outage, entirely on this machine.

The sandbox peers stand in for Twilio, Telegram and an SMTP relay; halfway
through the broadcast WhatsApp starts answering HTTP 503 (as Meta's apps did
on 4 October 2021), the breaker takes it out of the route, and the rest of
the contacts are reached on their next channel. A second scene escalates an
alert until a person acknowledges it; a third takes Twilio down as a whole, and SMS
carries on through Vonage.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from router.cli.common import cleaned_up_on_forced_exit
from router.cli.demo_providers import provider_outage_scene
from router.cli.demo_twoway import ACK_WAIT, acknowledge_scene
from router.cli.output import attempt_path, results_table, summary_line
from router.core import Router
from router.model.health import State
from router.model.message import Message
from router.model.results import BroadcastResult, DeliveryResult
from router.sandbox import Fault, Sandbox

DEMO_CONTACTS: dict[str, dict[str, object]] = {
    "amelie": {"phone": "+33612345678", "telegram": 100001, "email": "amelie@example.com"},
    "bruno": {"phone": "+33623456789", "telegram": 100002},
    "chloe": {"phone": "+33634567890", "email": "chloe@example.com"},
    "david": {"phone": "+447911123456", "telegram": 100004, "email": "david@example.com"},
    "emma": {"phone": "+33645678901"},
    "farid": {"email": "farid@example.com"},
    "gaelle": {"phone": "+33656789012", "telegram": 100007},
    "henri": {"voice": "+33140000000", "email": "henri@example.com"},
    "ines": {"phone": "+33667890123", "telegram": 100009},
    "jules": {"phone": "+33678901234", "email": "jules@example.com"},
}
OUTAGE_AFTER = 3
TEXT = (
    "Major incident: our main site is down since 09:40. Crisis cell on the usual bridge at "
    "10:15. Reply or call back on this channel if WhatsApp does not work for you."
)
DEMO_SETTINGS: dict[str, dict[str, object]] = {
    "routing": {"concurrency": 2},
    "limits.sms": {"per_second": 20},
    "limits.voice": {"per_second": 20},
    "escalation": {"ack_wait": ACK_WAIT},
}


async def run_demo(console: Console) -> int:
    console.print(
        "[bold]backchannel demo[/]: local stand-ins for Twilio (WhatsApp, SMS, voice), "
        "Vonage (SMS, voice), Telegram and an SMTP relay, on 127.0.0.1. Nothing leaves this"
        " machine.\n"
    )
    sandbox = Sandbox(latency=0.12)
    with (tempfile.TemporaryDirectory(prefix="backchannel-demo-") as workdir,
          cleaned_up_on_forced_exit(sandbox.discard_files),
          cleaned_up_on_forced_exit(lambda: shutil.rmtree(workdir, ignore_errors=True))):
        async with sandbox:
            config = Path(workdir) / "backchannel.toml"
            config.write_text(sandbox.config_toml(
                contacts=DEMO_CONTACTS, store_path="demo.db", overrides=DEMO_SETTINGS,
                vonage=True,
            ))
            async with Router.from_config(config) as router:
                console.print(f"ranking: [bold]{' → '.join(router.ranking())}[/]")
                console.print(f"broadcasting to {len(DEMO_CONTACTS)} people (group ops):")
                console.print(f"  [italic]{TEXT}[/]\n")
                result = await _broadcast(router, sandbox, console)
                console.print()
                console.print(results_table(result, title="who got it, and how"))
                console.print(_received_table(sandbox, result))
                console.print(summary_line(result))
                acknowledged = await acknowledge_scene(router, sandbox, console)
                rerouted = await provider_outage_scene(router, sandbox, console)
            console.print(
                "\nNext: [bold]backchannel sandbox[/] runs these peers for your own config; "
                "the README explains real Twilio, Telegram and SMTP credentials."
            )
            return 0 if result.reached_all and acknowledged and rerouted else 1


async def _broadcast(router: Router, sandbox: Sandbox, console: Console) -> BroadcastResult:
    finished = 0
    announced_down = False
    progress = Progress(
        TextColumn("[bold]broadcast"), BarColumn(), MofNCompleteColumn(), console=console,
        transient=True,
    )
    task = progress.add_task("broadcast", total=len(DEMO_CONTACTS))

    def on_result(result: DeliveryResult) -> None:
        nonlocal finished, announced_down
        finished += 1
        progress.advance(task)
        line = Text(f"  {result.contact:<8} ")
        line.append_text(attempt_path(result))
        progress.console.print(line)
        if finished == OUTAGE_AFTER:
            sandbox.twilio.faults.fail("whatsapp", Fault.http(503))
            progress.console.print(
                "[bold red]  ⚡ WhatsApp goes down[/]: the sandbox now answers HTTP 503 to "
                "every WhatsApp request"
            )
        breaker = router.health.breaker("whatsapp")
        if breaker.state is State.DOWN and not announced_down:
            announced_down = True
            progress.console.print(
                f"[bold yellow]  ⛔ whatsapp marked down[/] after {breaker.consecutive_failures}"
                " failures: the next contacts skip it without a request"
            )

    with progress:
        return await router.broadcast(Message(TEXT, subject="Major incident"), group="ops",
                                      on_result=on_result)


def _received_table(sandbox: Sandbox, result: BroadcastResult) -> Table:
    table = Table(title="what each provider received (from the peers' own logs)")
    table.add_column("channel")
    table.add_column("messages", justify="right")
    table.add_column("people", justify="right")
    table.add_column("twice to one person", justify="right")
    for channel, recipients in sandbox.received().items():
        counts = Counter(recipients)
        twice = sum(1 for n in counts.values() if n > 1)
        table.add_row(channel, str(len(recipients)), str(len(counts)),
                      f"[green]{twice}[/]" if twice == 0 else f"[bold red]{twice}[/]")
    return table
