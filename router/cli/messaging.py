"""``send`` and ``broadcast``."""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from router.cli.app import app
from router.cli.common import (
    EXIT_OK,
    EXIT_UNREACHED,
    ConfigOption,
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
    YesOption,
    confirm_broadcast,
    show_preview,
    wording,
)
from router.cli.output import (
    ResultProgress,
    print_json,
    results_table,
    stdout_console,
    summary_line,
)
from router.cli.waiting import follow, goal_met
from router.model.results import BroadcastResult, Queued


class Until(enum.StrEnum):
    accepted = "accepted"
    delivered = "delivered"
    acknowledged = "acknowledged"


SubjectOption = typer.Option(None, "--subject", "-s", help="Email subject.")
SmsOption = typer.Option(None, "--sms-text", help="Shorter words for SMS.")
VoiceOption = typer.Option(None, "--voice-text", help="Words to speak on a call.")
KeyOption = typer.Option(
    None, "--idempotency-key", "-k",
    help="Repeating a key returns the first run's results and sends nothing new.",
)
UntilOption = typer.Option(
    "accepted", "--until", "-u", case_sensitive=False,
    help="accepted (default), delivered (a receipt) or acknowledged (a person answered): "
    "escalate to the next channel when it does not come in time.",
)
QueueOption = typer.Option(
    False, "--queue",
    help="Record the work and return at once; `backchannel worker` processes send it.",
)
ExpiresOption = typer.Option(
    None, "--expires-after", metavar="DURATION",
    help="Give up on contacts not reached by then (90s, 15m, 2h): late is worse than never.",
)


@app.command()
def send(
    text: str | None = typer.Argument(None, help="The message (or --template)."),
    to: str = typer.Option(..., "--to", "-t", help="Contact name from the config."),
    config: Path | None = ConfigOption,
    subject: str | None = SubjectOption,
    sms_text: str | None = SmsOption,
    voice_text: str | None = VoiceOption,
    idempotency_key: str | None = KeyOption,
    expires_after: str | None = ExpiresOption,
    until: Until = UntilOption,
    json_output: bool = JsonOption,
    template: str | None = TemplateOption,
    var: list[str] = VarOption,
    dry_run: bool = DryRunOption,
    queue: bool = QueueOption,
) -> None:
    """Send a message to one contact, falling back along their channels."""
    expiry = parse_duration(expires_after, "--expires-after")
    words = wording(text, template, var, subject, sms_text, voice_text)

    async def job() -> int:
        settings = load(config)
        message = words.message(settings)
        async with open_router(settings) as router:
            contact = router.contact(to)
            if dry_run:
                return show_preview(router, message, [contact], template=template,
                                    json_output=json_output)
            if queue:
                queued = await router.send(
                    message, to=contact, idempotency_key=idempotency_key,
                    expires_after=expiry, until=until.value, queue=True,
                )
                return _report_queued(queued, 1, json_output)
            result = await router.send(
                message, to=contact, idempotency_key=idempotency_key, expires_after=expiry,
                until=until.value,
            )
            final = await follow(router, BroadcastResult(result.message_id, (result,)),
                                 until.value, stdout_console(), quiet=json_output)
            met = goal_met(router, final, until.value)
        _report(final, json_output)
        return EXIT_OK if met else EXIT_UNREACHED

    run(job())


@app.command()
def broadcast(
    text: str | None = typer.Argument(None, help="The message (or --template)."),
    group: str = typer.Option(..., "--group", "-g", help="Group name from the config."),
    config: Path | None = ConfigOption,
    subject: str | None = SubjectOption,
    sms_text: str | None = SmsOption,
    voice_text: str | None = VoiceOption,
    idempotency_key: str | None = KeyOption,
    expires_after: str | None = ExpiresOption,
    until: Until = UntilOption,
    json_output: bool = JsonOption,
    template: str | None = TemplateOption,
    var: list[str] = VarOption,
    dry_run: bool = DryRunOption,
    yes: bool = YesOption,
    queue: bool = QueueOption,
) -> None:
    """Send a message to every member of a group, each over their best working channel."""
    expiry = parse_duration(expires_after, "--expires-after")
    words = wording(text, template, var, subject, sms_text, voice_text)

    async def job() -> int:
        settings = load(config)
        message = words.message(settings)
        async with open_router(settings) as router:
            members = router.group(group)
            if dry_run:
                return show_preview(router, message, members, template=template,
                                    json_output=json_output)
            confirm_broadcast(settings, group, len(members), yes=yes)
            if queue:
                queued = await router.broadcast(
                    message, group=group, idempotency_key=idempotency_key,
                    expires_after=expiry, until=until.value, queue=True,
                )
                return _report_queued(queued, len(members), json_output)
            with ResultProgress(len(members), label="broadcast", failed="unreached",
                                enabled=not json_output) as tick:
                result = await router.broadcast(
                    message, group=group, on_result=tick,
                    idempotency_key=idempotency_key, expires_after=expiry, until=until.value,
                )
            final = await follow(router, result, until.value, stdout_console(),
                                 quiet=json_output)
            met = goal_met(router, final, until.value)
        _report(final, json_output)
        return EXIT_OK if met else EXIT_UNREACHED

    run(job())


def _report_queued(queued: Queued, contacts: int, json_output: bool) -> int:
    if json_output:
        print_json(queued.to_json())
    else:
        stdout_console().print(
            f"queued {queued.message_id} for {contacts} contact(s): workers will send it"
        )
    return EXIT_OK


def _report(result: BroadcastResult, json_output: bool) -> None:
    if json_output:
        print_json(result.to_json())
        return
    console = stdout_console()
    console.print(results_table(result))
    console.print(summary_line(result))
