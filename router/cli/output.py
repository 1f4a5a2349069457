"""How results look on a terminal, and as JSON."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from config.channels import providers_of
from router.model.outcome import Verdict
from router.model.results import BroadcastResult, DeliveryResult, Status
from router.model.text import terminal_safe

STATUS_STYLE = {
    Status.ACCEPTED: "green",
    Status.DELIVERED: "green",
    Status.ACKNOWLEDGED: "bold green",
    Status.FAILED: "bold red",
    Status.EXPIRED: "yellow",
    Status.UNKNOWN: "yellow",
}
VERDICT_MARK = {
    Verdict.ACCEPTED: ("✓", "green"),
    Verdict.TRANSIENT: ("✗", "yellow"),
    Verdict.PERMANENT: ("✗", "red"),
    Verdict.UNKNOWN: ("?", "magenta"),
}


def outside(text: str, style: str = "") -> Text:
    """Text that came from outside (a reply, a provider's error, a contact's name) for a
    table or a line: never console markup, and never anything a terminal would act on."""
    return Text(terminal_safe(text), style=style)


class SafeConsole(Console):
    """A console that escapes terminal controls in whatever it is given to print.

    Outside text is escaped where it is put into a table (:func:`outside`), so that
    columns are measured on what will show; this is the net under that, for anything
    a future command forgets. Rich's own control codes (cursor moves of a progress bar
    or a live table) are segments of their own and pass.
    """

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterator[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or not segment.text:
                yield segment
            else:
                safe = terminal_safe(segment.text)
                yield segment if safe is segment.text else Segment(safe, segment.style)


def stdout_console() -> Console:
    # Colours only on a terminal: pipes and cron mail get plain text.
    return SafeConsole(highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    return SafeConsole(stderr=True, highlight=False)


# json.dumps writes C0 controls as \u escapes but, with ensure_ascii off, leaves the C1
# controls, line separators, bidirectional overrides and lone surrogates raw: escaped
# too, the JSON decodes to exactly the same strings and cannot act on a terminal.
_RAW_IN_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _json(value: object, indent: int | None = None) -> str:
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


def print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(_json(payload, indent=2) + "\n")
    sys.stdout.flush()


def print_json_line(payload: dict[str, Any]) -> None:
    """One JSON object on one line (``--json-lines``), written at once."""
    sys.stdout.write(_json(payload) + "\n")
    sys.stdout.flush()


def print_broadcast_json(result: BroadcastResult) -> None:
    """``--json`` for a result of any size: one object, written a result at a time as it
    is read back (a million results are never held, nor one string of them all)."""
    head: dict[str, object] = {"message_id": result.message_id}
    if result.taken_over:
        head["taken_over"] = True
    out = sys.stdout
    out.write(_json(head, indent=2)[:-2] + ',\n  "results": [')
    for index, delivery in enumerate(result):
        body = _json(delivery.to_json(), indent=2).replace("\n", "\n    ")
        out.write(("," if index else "") + "\n    " + body)
    out.write("\n  ]\n}\n")
    out.flush()


def summary_json(result: BroadcastResult) -> dict[str, Any]:
    """The last line of ``--json-lines``: counts, not results."""
    statuses: dict[str, int] = {}
    channels: dict[str, int] = {}
    for delivery in result:
        statuses[delivery.status.value] = statuses.get(delivery.status.value, 0) + 1
        if delivery.channel:
            channels[delivery.channel] = channels.get(delivery.channel, 0) + 1
    summary: dict[str, Any] = {"message_id": result.message_id, "contacts": sum(statuses.values()),
                               "statuses": statuses, "channels": channels,
                               "reached_all": result.reached_all}
    if result.taken_over:
        summary["taken_over"] = True
    return {"summary": summary}


def attempt_path(result: DeliveryResult) -> Text:
    """``whatsapp down → whatsapp ✗×2 (Twilio 503) → telegram ✓``: the route actually taken.

    Repeated identical failures on one channel (transient retries) are shown once.
    """
    steps: list[tuple[str, str, str, str]] = []  # label, mark, style, detail
    skips = list(result.skipped)
    for index, attempt in enumerate(result.attempts):
        while skips and skips[0].after_attempts <= index:
            skip = skips.pop(0)
            steps.append((_skipped(skip.channel, skip.provider),
                          "down" if "down" in skip.reason else "skipped", "dim", ""))
        mark, style = VERDICT_MARK[attempt.outcome.verdict]
        detail = "" if attempt.outcome.ok else attempt.outcome.detail
        steps.append((carried_by(attempt.channel, attempt.provider), mark, style, detail))
    steps += [(_skipped(s.channel, s.provider), "down" if "down" in s.reason else "skipped", "dim",
               "") for s in skips]
    path = Text()
    index = 0
    while index < len(steps):
        label, mark, style, detail = steps[index]
        repeat = 1
        while index + repeat < len(steps) and steps[index + repeat] == steps[index]:
            repeat += 1
        if path:
            path.append(" → ", style="dim")
        path.append(f"{label} {mark}" + (f"×{repeat}" if repeat > 1 else ""), style=style)
        if detail:  # a provider's words
            path.append(f" ({_short(terminal_safe(detail, multiline=False))})", style="dim")
        index += repeat
    return path


def carried_by(channel: str, provider: str | None) -> str:
    """``sms via vonage`` where a channel's second provider carried it; else the channel."""
    home = providers_of(channel)
    if provider is None or provider == channel or (home and provider == home[0]):
        return channel
    return f"{channel} via {provider}"


def _skipped(channel: str, provider: str | None) -> str:
    """A skip names its provider whenever it left out only one of a channel's providers."""
    return f"{channel} via {provider}" if provider else channel


def results_table(results: Iterable[DeliveryResult], title: str | None = None) -> Table:
    table = Table(title=title, expand=False, show_lines=False)
    table.add_column("contact", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("via", no_wrap=True)
    table.add_column("attempts", overflow="fold")
    for result in results:
        path = attempt_path(result)
        if result.notes and not result.attempts:
            path.append_text(outside(("; " if path else "") + "; ".join(result.notes), "dim"))
        table.add_row(
            outside(result.contact),  # names are data, never console markup
            Text(result.status.value, style=STATUS_STYLE[result.status]),
            result.channel or "-",
            path,
        )
    return table


def summary_line(result: BroadcastResult) -> Text:
    reached = sum(1 for r in result if r.reached)
    by_channel: dict[str, int] = {}
    for r in result:
        if r.channel:
            by_channel[r.channel] = by_channel.get(r.channel, 0) + 1
    channels = ", ".join(f"{count} by {name}" for name, count in by_channel.items())
    style = "green" if reached == len(result) else "bold red"
    line = Text(f"{reached}/{len(result)} contacts reached", style=style)
    if channels:
        line.append(f" ({channels})")
    line.append(f"  message {result.message_id}", style="dim")
    return line


def _short(detail: str, limit: int = 48) -> str:
    return detail if len(detail) <= limit else detail[: limit - 1] + "…"


class ResultProgress:
    """A progress bar on stderr as results come in; nothing when not on a terminal."""

    def __init__(self, total: int, *, label: str, failed: str, enabled: bool) -> None:
        self._bar: Progress | None = None
        self._failed = 0
        if enabled and total and sys.stderr.isatty():
            self._bar = Progress(
                TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                TextColumn(f"{{task.fields[failed]}} {failed}"), TimeElapsedColumn(),
                console=Console(stderr=True), transient=True,
            )
            self._task = self._bar.add_task(label, total=total, failed=0)

    def __enter__(self) -> ResultProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, result: DeliveryResult) -> None:
        if self._bar is None:
            return
        if not result.reached:
            self._failed += 1
        self._bar.update(self._task, advance=1, failed=self._failed)
