"""What ``send`` and ``broadcast`` say, and whether they may say it.

``--template NAME --var key=value`` renders pre-approved words from the config;
``--dry-run`` shows, per channel, exactly what would go out and to how many
contacts, then stops; a broadcast above ``[routing] confirm_above`` contacts asks
first on a terminal and refuses without one, unless ``--yes``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import typer
from rich.table import Table
from rich.text import Text

from config.contacts import Contact
from config.settings import Settings
from router.cli.output import outside, print_json, stdout_console
from router.core import Router
from router.model.errors import BadInput
from router.model.message import Message
from router.rules.routing import unfit
from router.rules.segments import sms_segments
from router.rules.templates import (
    RenderedTemplate,
    parse_vars,
    render_template,
    render_wording,
)

TemplateOption = typer.Option(
    "--template", "-T", metavar="NAME", help="Named template from the config ([templates.NAME])."
)
VarOption = typer.Option(
    "--var", "-V", metavar="NAME=VALUE", help="A template variable; repeat for more."
)
DryRunOption = typer.Option(
    "--dry-run", help="Show per channel what would be sent, to how many; send nothing."
)
"""Options for ``Annotated[...]`` parameters: their defaults are the parameters' own."""
YesOption = typer.Option(
    False, "--yes", "-y", help="Do not ask before a broadcast above [routing] confirm_above."
)


@dataclass(frozen=True, slots=True)
class Wording:
    """What the command line asked to say, before the config is read."""

    text: str | None
    template: str | None
    variables: dict[str, str]
    subject: str | None
    sms: str | None
    voice: str | None

    def message(self, settings: Settings) -> Message:
        """The message to send; raises BadInput (a missing variable, an empty text)."""
        if self.template is not None:
            return render_template(settings.templates, self.template, self.variables)
        return self._typed()

    def rendered(self, settings: Settings, context: Mapping[str, str],
                 public: str | None) -> RenderedTemplate:
        """An incident's words: the message and what it publishes (``--public-text``, else
        the template's ``public`` field), the template given ``context`` (what the incident
        knows without ``--var``)."""
        if self.template is None:
            return RenderedTemplate(self._typed(), public)
        found = render_wording(settings.templates, self.template, self.variables,
                               context=context)
        return RenderedTemplate(found.message, public if public is not None else found.public)

    def _typed(self) -> Message:
        assert self.text is not None
        by_channel = {name: words for name, words in (("sms", self.sms), ("voice", self.voice))
                      if words}  # fmt: skip
        return Message(text=self.text, subject=self.subject, by_channel=by_channel)


class _MissingText(typer.BadParameter):
    """TEXT became optional (a template can replace it): say what click would have."""

    def format_message(self) -> str:
        return "Missing argument 'text' (or give --template NAME)."


def wording(
    text: str | None,
    template: str | None,
    variables: Sequence[str],
    subject: str | None,
    sms: str | None,
    voice: str | None,
) -> Wording:
    """Check the options fit together; a usage error (exit 2) if they do not."""
    if template is None:
        if text is None:
            raise _MissingText("text")
        if variables:
            raise typer.BadParameter("needs --template", param_hint="--var")
        return Wording(text, None, {}, subject, sms, voice)
    clashing = [name for name, value in (("TEXT", text), ("--subject", subject),
                ("--sms-text", sms), ("--voice-text", voice)) if value is not None]  # fmt: skip
    if clashing:
        raise typer.BadParameter(
            f"the template gives the words: drop {', '.join(clashing)}", param_hint="--template"
        )
    try:
        parsed = parse_vars(variables)
    except BadInput as exc:
        raise typer.BadParameter(str(exc).removeprefix("--var: "), param_hint="--var") from None
    return Wording(None, template, parsed, None, None, None)


def confirm_broadcast(settings: Settings, group: str, count: int, *, yes: bool) -> None:
    """Ask before a large broadcast; without a terminal, refuse unless ``--yes``."""
    limit = settings.routing.confirm_above
    if yes or count <= limit:
        return
    if not sys.stdin.isatty():
        raise BadInput(
            f"broadcast: group {group!r} has {count} contacts, more than routing.confirm_above"
            f" ({limit}), and there is no terminal to confirm: pass --yes. Nothing was sent."
        )
    question = f"Send to all {count} contacts of group {group!r}?"
    if not typer.confirm(question, default=False, err=True):
        raise BadInput("broadcast: not confirmed. Nothing was sent.")


@dataclass(frozen=True, slots=True)
class ChannelPreview:
    """One channel of a dry run: who it would reach and with which words."""

    channel: str
    up: bool
    first: int
    """Contacts this channel would be tried first for."""
    fallback: int
    """Contacts for whom it is a later choice."""
    subject: str | None
    text: str

    def to_json(self) -> dict[str, object]:
        entry: dict[str, object] = {
            "channel": self.channel, "up": self.up, "first_choice": self.first,
            "fallback": self.fallback, "text": self.text,
        }
        if self.channel == "email":
            entry["subject"] = self.subject
        if self.channel == "sms":
            entry["sms"] = sms_segments(self.text).to_json()
        return entry


def preview(router: Router, message: Message, contacts: Iterable[Contact]) -> tuple[
    list[ChannelPreview], list[str]
]:
    """Per enabled channel, what would be sent; and the contacts no channel reaches.

    Each contact is planned as it is read: a group of a million is never held."""
    planner = router.parts.routing.planner(message)
    up = {row.name for row in router.health_report() if row.up}
    first: dict[str, int] = {}
    fallback: dict[str, int] = {}
    unreachable: list[str] = []
    too_long: list[str] = []
    for contact in contacts:
        route = planner(contact)
        if route.too_long_everywhere:
            too_long.append(contact.name)
            continue
        if not route.steps:
            unreachable.append(route.contact.name)
            continue
        # Routing skips a channel that is down: the first channel up is where it goes.
        lead = next((s for s in route.steps if s.channel in up), route.steps[0])
        for step in route.steps:
            counts = first if step is lead else fallback
            counts[step.channel] = counts.get(step.channel, 0) + 1
    if too_long:
        raise unfit(too_long)
    rows = []
    for channel in router.ranking():
        rendered = message.render(channel)
        rows.append(ChannelPreview(
            channel, channel in up, first.get(channel, 0), fallback.get(channel, 0),
            rendered.subject, rendered.text,
        ))
    return rows, unreachable


def show_preview(
    router: Router, message: Message, contacts: Iterable[Contact], *, count: int,
    template: str | None, json_output: bool,
) -> int:
    """Print what a send or broadcast would do; send nothing. Exit status 0, or 1 when
    some contact has no channel at all (as the real run would)."""
    rows, unreachable = preview(router, message, contacts)
    if json_output:
        print_json({
            "dry_run": True, "template": template, "contacts": count,
            "channels": [row.to_json() for row in rows], "unreachable": unreachable,
        })
        return 1 if unreachable else 0
    table = Table(title=f"dry run: {count} contacts, nothing sent", show_lines=True)
    table.add_column("channel", no_wrap=True)
    table.add_column("contacts", no_wrap=True)
    table.add_column("what would be sent", overflow="fold")
    for row in rows:
        words = Text()
        # Rendered from --var values, which may come from an alert's payload.
        if row.channel == "email" and row.subject:
            words.append("Subject: ", style="bold")
            words.append_text(outside(row.subject + "\n"))
        words.append_text(outside(row.text))
        if row.channel == "sms":
            words.append("\n" + sms_segments(row.text).describe(), style="dim")
        counts = Text(f"{row.first} first\n{row.fallback} fallback")
        name = Text(row.channel) if row.up else Text(f"{row.channel}\n(down)", style="red")
        table.add_row(name, counts, words)
    console = stdout_console()
    console.print(table)
    if unreachable:
        console.print(outside("no channel for: " + ", ".join(unreachable), "bold red"))
    return 1 if unreachable else 0
