"""``status`` and ``probe``: the shared view of which channels are up."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from rich.table import Table
from rich.text import Text

from router.cli.app import app
from router.cli.common import (
    EXIT_OK,
    EXIT_UNREACHED,
    ConfigOption,
    JsonOption,
    load,
    open_router,
    run,
)
from router.cli.output import outside, print_json, stdout_console
from router.model.health import ChannelStatus
from router.model.outcome import Outcome


@app.command()
def status(config: Path | None = ConfigOption, json_output: bool = JsonOption) -> None:
    """Show each channel's health as recorded in the shared store (sends nothing)."""

    async def job() -> int:
        async with open_router(load(config)) as router:
            report = router.health_report()
        _show(report, {}, json_output)
        return EXIT_OK

    run(job())


@app.command()
def probe(config: Path | None = ConfigOption, json_output: bool = JsonOption) -> None:
    """Probe every channel once (no message to anyone) and record the result.

    Exit status 0 when every enabled channel is up, 1 when any is down.
    """

    async def job() -> int:
        async with open_router(load(config)) as router:
            outcomes = await router.probe()
            report = router.health_report()
            enabled = set(router.ranking())
        _show(report, outcomes, json_output)
        return EXIT_OK if all(row.up for row in report if row.name in enabled) else EXIT_UNREACHED

    run(job())


def _show(report: list[ChannelStatus], probes: Mapping[str, Outcome], json_output: bool) -> None:
    if json_output:
        rows = []
        for row in report:
            entry = row.to_json()
            if row.name in probes:
                entry["probe"] = {"outcome": probes[row.name].verdict.value,
                                  "detail": probes[row.name].detail}
            rows.append(entry)
        print_json({"channels": rows})
        return
    table = Table(title="channel health")
    table.add_column("channel / provider", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("since")
    table.add_column("probe", justify="right", no_wrap=True)
    table.add_column("last error", overflow="fold", ratio=1)
    for row in report:
        state = Text("up", style="green") if row.up else Text(
            "down" if row.blocked_by == row.name else f"down ({row.blocked_by})", style="bold red"
        )
        latency = "-"
        if row.last_probe_latency is not None:
            latency = f"{row.last_probe_latency * 1000:.0f} ms"
        if row.last_probe_ok is False:
            latency += " ✗"
        # The last error quotes the provider (or whatever answered in its place).
        note = outside(row.last_error or "")
        if row.warning:
            note.append(("; " if note else "") + row.warning, style="yellow")
        if row.lanes:
            ways = sum(1 for lane in report if lane.name in row.lanes and lane.up)
            state.append(f" ({ways}/{len(row.lanes)})", style="dim")
        table.add_row(_display(row.name), state, _ago(row.since), latency, note)
    stdout_console().print(table)


def _display(name: str) -> str:
    """``sms.vonage`` (one provider's lane of a channel) as ``  sms via vonage``."""
    channel, dot, provider = name.partition(".")
    return f"  {channel} via {provider}" if dot else name


def _ago(timestamp: float) -> str:
    if timestamp <= 0:
        return "-"
    seconds = max(0.0, time.time() - timestamp)
    when = datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")
    if seconds < 120:
        return f"{when} ({seconds:.0f}s ago)"
    if seconds < 7200:
        return f"{when} ({seconds / 60:.0f} min ago)"
    return f"{datetime.fromtimestamp(timestamp):%Y-%m-%d %H:%M} ({seconds / 3600:.0f} h ago)"
