"""``incident open|update|resolve|list|show`` and ``status-page export``.

Each step of an incident is a broadcast with everything ``broadcast`` has (templates,
``--until``, ``--dry-run``, ``--yes``, ``--json``), recorded on the incident's timeline;
bad input (an unknown incident, one resolved already, a promise without an owner) exits
2 before anything is recorded or sent.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from config.incidents import Severity
from router.cli.app import app
from router.cli.common import (
    EXIT_OK,
    EXIT_UNREACHED,
    ConfigOption,
    ConfigPath,
    JsonFlag,
    JsonOption,
    load,
    open_router,
    parse_duration,
    run,
)
from router.cli.compose import (
    DryRunOption,
    TemplateOption,
    VarOption,
    Wording,
    confirm_broadcast,
    show_preview,
    wording,
)
from router.cli.incident_output import headline, incidents_table, report_step, show_report
from router.cli.messaging import Until, gathered
from router.cli.output import (
    ResultProgress,
    outside,
    print_json,
    stdout_console,
)
from router.cli.waiting import follow, goal_met
from router.core import Router
from router.incidents import StatusPage, Step
from router.incidents.report import summary_json
from router.model.clock import SystemClock
from router.model.errors import BadInput
from router.store import open_store, unusable
from router.store.incidents import IncidentBook
from router.twoway.services import servers_running

incident_app = typer.Typer(
    name="incident", no_args_is_help=True,
    help="One thread from the first alert to the all-clear: open, update, resolve, list, show.",
)
status_page_app = typer.Typer(name="status-page", no_args_is_help=True,
                              help="The public status page, as static files.")
app.add_typer(incident_app)
app.add_typer(status_page_app)

IncidentId = Annotated[str, typer.Argument(metavar="ID", help="The incident (incident list).")]
NextUpdate = Annotated[str | None, typer.Option(
    "--next-update", metavar="DURATION",
    help="Promise the next update within this time (30m, 1h): the owner is reminded if "
    "none is sent by then.",
)]


@dataclass(frozen=True, slots=True)
class StepArgs:
    """What every step of an incident takes from the command line."""

    text: Annotated[str | None, typer.Argument(help="The message (or --template).")] = None
    config: ConfigPath = None
    public_text: Annotated[str | None, typer.Option(
        "--public-text", "--public",
        help="The words for the public status page (never sent). Without it, or a "
        "template's public field, nothing is published.",
    )] = None
    subject: Annotated[str | None, typer.Option("--subject", "-s", help="Email subject.")] = None
    sms_text: Annotated[str | None, typer.Option(help="Shorter words for SMS.")] = None
    voice_text: Annotated[str | None, typer.Option(help="Words to speak on a call.")] = None
    expires_after: Annotated[str | None, typer.Option(
        metavar="DURATION", help="Give up on contacts not reached by then (90s, 15m, 2h).",
    )] = None
    until: Annotated[Until, typer.Option(
        "--until", "-u", case_sensitive=False,
        help="accepted (default), delivered or acknowledged: escalate to the next channel "
        "when it does not come in time.",
    )] = Until.accepted
    json_output: JsonFlag = False
    template: Annotated[str | None, TemplateOption] = None
    var: Annotated[list[str] | None, VarOption] = None
    dry_run: Annotated[bool, DryRunOption] = False
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Do not ask before sending to more than [routing] confirm_above.",
    )] = False


@incident_app.command("open")
@gathered(StepArgs)
def open_(
    args: StepArgs,
    title: str = typer.Option(..., "--title", help="What is happening, for the team (never "
                              "published)."),
    group: list[str] = typer.Option(..., "--group", "-g", help="Who to alert (repeat for "
                                    "more groups)."),
    owner: str | None = typer.Option(None, "--owner", help="The contact who answers for it "
                                     "(default: [incidents] owner)."),
    severity: Severity = typer.Option("major", "--severity", help="minor, major or critical."),
    next_update: NextUpdate = None,
) -> None:
    """Open an incident and alert its groups: the first notice of its timeline."""
    promise = parse_duration(next_update, "--next-update")
    expiry = parse_duration(args.expires_after, "--expires-after")
    words = _words(args)

    async def prepare(router: Router) -> Step:
        incidents = router.incidents
        context = incidents.opening_context(title=title, severity=severity,
                                            next_update=promise)
        found = words.rendered(router.settings, context, args.public_text)
        return await incidents.prepare_open(
            found.message, title=title, group=group, owner=owner, severity=severity,
            next_update=promise, public_text=found.public, variables=words.variables,
            until=args.until.value, expires_after=expiry)

    _step(args, prepare)


@incident_app.command()
@gathered(StepArgs)
def update(
    args: StepArgs,
    incident_id: IncidentId,
    next_update: NextUpdate = None,
    owner: str | None = typer.Option(None, "--owner", help="Hand the incident over to this "
                                     "contact."),
) -> None:
    """Send an update to everyone the incident has reached so far, and record it.

    Each is tried first on the channel that last worked for them in this incident."""
    promise = parse_duration(next_update, "--next-update")
    expiry = parse_duration(args.expires_after, "--expires-after")
    words = _words(args)

    async def prepare(router: Router) -> Step:
        incidents = router.incidents
        context = await incidents.context(incident_id, next_update=promise)
        found = words.rendered(router.settings, context, args.public_text)
        return await incidents.prepare_update(
            incident_id, found.message, next_update=promise, public_text=found.public,
            owner=owner, until=args.until.value, expires_after=expiry)

    _step(args, prepare)


@incident_app.command()
@gathered(StepArgs)
def resolve(args: StepArgs, incident_id: IncidentId) -> None:
    """Close the incident: stop its escalations, send the all-clear to those it reached."""
    expiry = parse_duration(args.expires_after, "--expires-after")
    words = _words(args)

    async def prepare(router: Router) -> Step:
        incidents = router.incidents
        found = words.rendered(router.settings, await incidents.context(incident_id),
                               args.public_text)
        return await incidents.prepare_resolve(
            incident_id, found.message, public_text=found.public, until=args.until.value,
            expires_after=expiry)

    _step(args, prepare)


def _words(args: StepArgs) -> Wording:
    return wording(args.text, args.template, args.var or [], args.subject, args.sms_text,
                   args.voice_text)


def _step(args: StepArgs, prepare: Callable[[Router], Awaitable[Step]]) -> None:
    """What the three steps share: check, preview or confirm, carry out, follow, report."""
    goal = args.until.value

    async def job() -> int:
        settings = load(args.config)
        async with open_router(settings) as router:
            step = await prepare(router)
            if args.dry_run:
                return _preview(router, step, args)
            confirm_broadcast(settings, _audience_name(step), step.size, yes=args.yes)
            with ResultProgress(step.size, label=step.kind, failed="unreached",
                                enabled=not args.json_output) as tick:
                result = await router.incidents.carry_out(step, on_result=tick)
            if not args.json_output:  # first: the id is what the crisis cell needs next
                stdout_console().print(headline(result, step))
            if result.broadcast is not None:
                final = await follow(router, result.broadcast, goal, stdout_console(),
                                     quiet=args.json_output)
                result = dataclasses.replace(result, broadcast=final)
            reached = result.broadcast is not None and goal_met(router, result.broadcast, goal)
            servers = await servers_running(router.store)
            # Inside the router: a large result is read back from the store as it prints.
            report_step(result, step, args.json_output, servers=bool(servers),
                        face=router.incidents.clockface)
        return EXIT_OK if reached else EXIT_UNREACHED

    run(job())


def _audience_name(step: Step) -> str:
    if step.incident is None:
        return "+".join(step.groups)
    return f"reached by {step.incident.incident_id}"


def _preview(router: Router, step: Step, args: StepArgs) -> int:
    """A dry run: what would be sent to whom, and published; nothing recorded or sent."""
    if not step.size:
        if args.json_output:
            print_json({"dry_run": True, "contacts": 0, "channels": [], "unreachable": [],
                        "public_text": step.public})
        else:
            stdout_console().print("dry run: the incident has reached nobody so far: the "
                                   "step would be recorded (and published), sent to nobody")
        return EXIT_UNREACHED
    if not args.json_output:
        public = step.public if step.public is not None else "(nothing: no public text)"
        stdout_console().print(Text("public status page: ") + outside(public))
    return show_preview(router, step.message, step.audience(), count=step.size,
                        template=args.template, json_output=args.json_output)


@incident_app.command("list")
def list_(
    config: Path | None = ConfigOption,
    open_only: bool = typer.Option(False, "--open", help="Only incidents not resolved."),
    limit: int = typer.Option(20, min=1, help="Open ones first, then the newest."),
    json_output: bool = JsonOption,
) -> None:
    """Incidents, open ones first; a promised update that is late is flagged OVERDUE."""

    async def job() -> int:
        async with open_router(load(config)) as router:
            found = await router.incidents.recent(limit=limit, open_only=open_only)
            face = router.incidents.clockface
        now = time.time()
        if json_output:
            print_json({"incidents": [summary_json(incident, now) for incident in found]})
            return EXIT_OK
        stdout_console().print(incidents_table(found, face, now))
        return EXIT_OK

    run(job())


@incident_app.command()
def show(incident_id: IncidentId, config: Path | None = ConfigOption,
         json_output: bool = JsonOption) -> None:
    """The incident's timeline in order, who was reached and acknowledged, who never was."""

    async def job() -> int:
        async with open_router(load(config)) as router:
            report = await router.incidents.report(incident_id)
            face = router.incidents.clockface
        if json_output:
            print_json(report.to_json())
        else:
            show_report(report, face)
        return EXIT_OK

    run(job())


@status_page_app.command("export")
def export(
    directory: Path = typer.Argument(..., metavar="DIR", help="Where to write index.html "
                                     "and feed.atom (created if missing)."),
    config: Path | None = ConfigOption,
) -> None:
    """Write the public status page and its Atom feed as static files, for a cron job or a
    hook to publish outside your failure domains. Reads the store only: no provider is
    contacted."""

    async def job() -> int:
        settings = load(config)
        store = open_store(settings.store)
        try:
            await store.open()
        except Exception as exc:
            await store.close()
            problem = unusable(exc, settings.store)
            if problem is None:
                raise
            raise problem from None
        try:
            book = IncidentBook.of(store)
            assert book is not None
            public = settings.webhooks.public_url
            page = StatusPage(book, settings.incidents, SystemClock(),
                              public_url=None if public is None else str(public))
            try:
                written = await page.export(directory)
            except OSError as exc:
                raise BadInput(f"DIR: cannot write {directory}: {exc.strerror}") from None
        finally:
            await store.close()
        for path in written:
            stdout_console().print(f"wrote {path}", highlight=False)
        return EXIT_OK

    run(job())
