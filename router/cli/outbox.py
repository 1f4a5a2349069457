"""``resume`` and ``history``: finishing interrupted work, and what was attempted."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import typer
from rich import box
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
    carried_by,
    outside,
    print_json,
    results_table,
    stdout_console,
    summary_line,
)
from router.model.errors import BadInput
from router.model.redact import mask_address
from router.store.base import Store, StoredAttempt
from router.store.board_view import STATUSES as DELIVERY_STATUSES
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
    message: str | None = typer.Option(
        None, "--message", "-m", metavar="ID",
        help="One message: its id, or any start or end of it that only it has.",
    ),
    contact: str | None = typer.Option(
        None, "--contact", metavar="CONTACT", help="One contact name."
    ),
    limit: int = typer.Option(200, min=1, help="Newest attempts first, at most this many."),
    json_output: bool = JsonOption,
) -> None:
    """Every attempt with channel, outcome, detail and timing (addresses masked), grouped
    by message.

    Exit status 2 when --message matches no message, or several (they are listed).
    """

    async def job() -> int:
        async with open_router(load(config)) as router:
            if contact is not None:
                router.contact(contact)  # an unknown name is bad input, not an empty list
            message_id = None if message is None else await _one_message(router.store, message)
            rows = await router.store.history(message_id=message_id, contact=contact, limit=limit)
            # A message's progress comes from counts, never from loading every row: a
            # queued million-contact message answers as fast as a ten-contact one.
            progress = (None if message_id is None
                        else await router.store.delivery_counts(message_id))  # fmt: skip
        if json_output:
            head = {} if progress is None else {"message_id": message_id, "progress": progress}
            print_json({**head, "attempts": [_row_json(row) for row in rows]})
            return EXIT_OK
        console = stdout_console()
        if progress is not None:
            console.print(progress_line(str(message_id), progress), highlight=False)
        for table in _history_tables(rows):
            console.print(table)
        if not rows:
            console.print("no attempts recorded" + (" for this message yet" if message else ""))
        return EXIT_OK

    run(job())


SHOWN_MATCHES = 5


async def _one_message(store: Store, given: str) -> str:
    """The id of the one message whose id is, starts with or ends with ``given``; BadInput
    (exit 2) when none or several do."""
    part = given.strip()
    if not part:
        raise BadInput("--message: give a message id (or the start or end of one)")
    found = await store.message_ids_like(part, limit=SHOWN_MATCHES + 1)
    if part in found:
        return part
    if len(found) == 1:
        return found[0]
    if not found:
        raise BadInput(f"--message {part}: no message id is, starts or ends with it"
                       " (`backchannel history` shows the recent ones)")
    listed = ", ".join(found[:SHOWN_MATCHES]) + (" and more" if len(found) > SHOWN_MATCHES
                                                  else "")
    raise BadInput(f"--message {part}: several messages match ({listed}); give more of the id")


def progress_line(message_id: str, counts: Mapping[str, int]) -> str:
    """``message ID: 1,000,000 contacts: 412,118 pending, 587,880 accepted, 2 failed``,
    statuses in the order a delivery moves through them."""
    order = [s for s in DELIVERY_STATUSES if counts.get(s)]
    order += sorted(s for s in counts if s not in DELIVERY_STATUSES and counts[s])
    done = ", ".join(f"{counts[s]:,} {s}" for s in order)
    total = sum(counts.values())
    return f"message {message_id}: {total:,} contact(s)" + (f": {done}" if done else "")


def _row_json(row: StoredAttempt) -> dict[str, object]:
    attempt = stored_attempt(row)
    return {
        "message_id": row.message_id,
        "contact": row.contact,
        "address": mask_address(row.channel, row.address),
        **attempt.to_json(),
        "in_doubt": row.state == "sending",
    }


def _history_tables(rows: list[StoredAttempt]) -> list[Table]:
    """One table per message, titled with its whole id (what ``--message`` takes), so that
    the columns fit 80 terminal columns without cutting the timing or the detail."""
    by_message: dict[str, list[StoredAttempt]] = {}
    for row in rows:
        by_message.setdefault(row.message_id, []).append(row)
    return [_message_table(message_id, attempts) for message_id, attempts in by_message.items()]


def _message_table(message_id: str, rows: list[StoredAttempt]) -> Table:
    first = min(row.started_at for row in rows)
    days = {f"{datetime.fromtimestamp(row.started_at):%m-%d}" for row in rows}
    when = "%m-%d %H:%M:%S" if len(days) > 1 else "%H:%M:%S"
    table = Table(
        title=f"message {message_id}  {datetime.fromtimestamp(first):%Y-%m-%d}",
        title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
        collapse_padding=True,
    )
    table.add_column("when", no_wrap=True)
    table.add_column("contact", overflow="fold")
    table.add_column("channel / to", overflow="fold")
    table.add_column("outcome", no_wrap=True)
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("detail", overflow="fold", min_width=16)
    for row in rows:
        attempt = stored_attempt(row)
        mark, style = VERDICT_MARK[attempt.outcome.verdict]
        outcome = Text(f"{mark} {attempt.outcome.verdict.value}", style=style)
        if attempt.kind.value != "first":
            outcome.append(f"\n  ({attempt.kind.value})", style="dim")
        table.add_row(
            f"{datetime.fromtimestamp(row.started_at):{when}}", outside(row.contact),
            _channel_cell(row), outcome,
            f"{attempt.outcome.elapsed * 1000:.0f}", outside(attempt.outcome.detail),
        )
    return table


def _channel_cell(row: StoredAttempt) -> Text:
    """The channel (and provider, where it is not the channel's own), the masked address
    on a line of its own: the column stays narrow enough for the detail."""
    cell = Text(carried_by(row.channel, row.provider))
    cell.append_text(outside(f"\n{mask_address(row.channel, row.address)}", "dim"))
    return cell
