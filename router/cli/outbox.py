"""``resume`` and ``history``: finishing interrupted work, and what was attempted."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
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
from router.cli.output import (
    VERDICT_MARK,
    outside,
    print_json,
    results_table,
    stdout_console,
    summary_line,
)
from router.model.redact import mask_address
from router.store.base import StoredAttempt
from router.store.results import stored_attempt


@app.command()
def resume(config: Path | None = ConfigOption, json_output: bool = JsonOption) -> None:
    """Finish every message a crashed or killed process left unfinished.

    Attempts whose answer was lost are never resent on their channel: Twilio ones are
    looked up at Twilio first; the others count as maybe sent and the route goes on.
    """

    async def job() -> int:
        async with open_router(load(config)) as router:
            finished = await router.resume()
        if json_output:
            print_json({"resumed": [result.to_json() for result in finished]})
        else:
            console = stdout_console()
            if not finished:
                console.print("nothing to resume")
            for result in finished:
                console.print(results_table(result, title=f"resumed {result.message_id}"))
                console.print(summary_line(result))
        return EXIT_OK if all(result.reached_all for result in finished) else EXIT_UNREACHED

    run(job())


@app.command()
def history(
    config: Path | None = ConfigOption,
    message: str | None = typer.Option(None, "--message", "-m", help="One message id."),
    contact: str | None = typer.Option(None, "--contact", help="One contact name."),
    limit: int = typer.Option(200, min=1, help="Newest attempts first, at most this many."),
    json_output: bool = JsonOption,
) -> None:
    """Every attempt with channel, outcome, detail and timing (addresses masked)."""

    async def job() -> int:
        async with open_router(load(config)) as router:
            if contact is not None:
                router.contact(contact)  # an unknown name is bad input, not an empty list
            rows = await router.store.history(message_id=message, contact=contact, limit=limit)
        if json_output:
            print_json({"attempts": [_row_json(row) for row in rows]})
        else:
            stdout_console().print(_history_table(rows))
        return EXIT_OK

    run(job())


def _row_json(row: StoredAttempt) -> dict[str, object]:
    attempt = stored_attempt(row)
    return {
        "message_id": row.message_id,
        "contact": row.contact,
        "address": mask_address(row.channel, row.address),
        **attempt.to_json(),
        "in_doubt": row.state == "sending",
    }


def _history_table(rows: list[StoredAttempt]) -> Table:
    table = Table(title="attempts, newest first")
    table.add_column("when", no_wrap=True)
    table.add_column("message", no_wrap=True)
    table.add_column("contact", no_wrap=True)
    table.add_column("channel", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for row in rows:
        attempt = stored_attempt(row)
        mark, style = VERDICT_MARK[attempt.outcome.verdict]
        outcome = Text(f"{mark} {attempt.outcome.verdict.value}", style=style)
        if attempt.kind.value != "first":
            outcome.append(f" ({attempt.kind.value})", style="dim")
        table.add_row(
            f"{datetime.fromtimestamp(row.started_at):%m-%d %H:%M:%S}",
            Text(row.message_id[-8:]), outside(row.contact),
            outside(f"{row.channel} {mask_address(row.channel, row.address)}"), outcome,
            f"{attempt.outcome.elapsed * 1000:.0f}", outside(attempt.outcome.detail),
        )
    return table
