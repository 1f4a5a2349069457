"""``--until delivered|acknowledged``: waiting for receipts and people, on a terminal.

The waits themselves live in the store; this process only watches them, and
runs the escalation loop itself when no ``backchannel serve`` is running. If
interrupted, it says plainly who carries on: a running server, or nobody until
one starts.
"""

from __future__ import annotations

import asyncio
import sys

from rich.console import Console
from rich.live import Live

from router.cli.output import results_table
from router.core import Router
from router.model.results import BroadcastResult, Status
from router.twoway.services import servers_running

GOAL_REACHED = {
    "accepted": {Status.ACCEPTED, Status.DELIVERED, Status.ACKNOWLEDGED},
    "delivered": {Status.DELIVERED, Status.ACKNOWLEDGED},
    "acknowledged": {Status.ACKNOWLEDGED},
}


async def follow(
    router: Router, first: BroadcastResult, until: str, console: Console, *, quiet: bool
) -> BroadcastResult:
    """Wait until every delivery reached ``until`` or gave up; escalate meanwhile."""
    if until == "accepted":
        return first
    servers = await servers_running(router.store)
    if not quiet:
        who = "a running backchannel serve" if servers else "this process"
        console.print(f"waiting until {until} ({who} escalates); Ctrl-C stops waiting",
                      style="dim")
    live = Live(console=console, transient=True) if not quiet and sys.stdout.isatty() else None
    try:
        if live is not None:
            live.start()
        return await router.wait_until_done(
            first.message_id,
            on_change=lambda current: live.update(results_table(current))
            if live is not None else None,
        )
    except asyncio.CancelledError:
        servers = await servers_running(router.store)
        stream = Console(stderr=True)
        if servers:
            stream.print("stopped waiting: the running backchannel serve carries on with the "
                         "escalation.")
        else:
            stream.print("stopped waiting: [bold]nothing will continue the escalation[/] until "
                         "`backchannel serve` runs on this store (it picks up where this left).")
        raise
    finally:
        if live is not None:
            live.stop()


def goal_met(router: Router, result: BroadcastResult, until: str) -> bool:
    """``delivered`` means a receipt on channels that give one, and accepted elsewhere."""
    def met(status: Status, channel: str | None) -> bool:
        if status in GOAL_REACHED[until]:
            return True
        capabilities = router.capabilities(channel or "")
        return (until == "delivered" and status is Status.ACCEPTED and capabilities is not None
                and not capabilities.reports_delivery)

    return all(met(delivery.status, delivery.channel) for delivery in result)
