"""``send`` and ``broadcast``: one set of options and one body, two audiences."""

from __future__ import annotations

import enum
import functools
import inspect
import itertools
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, get_type_hints

import typer

from router.cli.app import app
from router.cli.common import (
    EXIT_OK,
    EXIT_UNREACHED,
    ConfigPath,
    JsonFlag,
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
    print_broadcast_json,
    print_json,
    print_json_line,
    results_table,
    stderr_console,
    stdout_console,
    summary_json,
    summary_line,
)
from router.cli.waiting import follow, goal_met
from router.model.options import SendKeywords, SendOptions
from router.model.results import BroadcastResult, DeliveryResult, Queued

TABLE_ROWS = 100
"""A larger audience's table shows only who was not reached (``--json`` has everyone)."""


class Until(enum.StrEnum):
    accepted = "accepted"
    delivered = "delivered"
    acknowledged = "acknowledged"


@dataclass(frozen=True, slots=True)
class SendArgs:
    """What ``send`` and ``broadcast`` both take from the command line."""

    text: Annotated[str | None, typer.Argument(
        metavar="TEXT", help="The message (or --template).")] = None
    config: ConfigPath = None
    subject: Annotated[str | None, typer.Option(
        "--subject", "-s", metavar="TEXT", help="Email subject.")] = None
    sms_text: Annotated[str | None, typer.Option(
        metavar="TEXT", help="Shorter words for SMS.")] = None
    voice_text: Annotated[str | None, typer.Option(
        metavar="TEXT", help="Words to speak on a call.")] = None
    idempotency_key: Annotated[str | None, typer.Option(
        "--idempotency-key", "-k", metavar="KEY",
        help="Repeating a key returns the first run's results and sends nothing new.",
    )] = None
    expires_after: Annotated[str | None, typer.Option(
        metavar="DURATION",
        help="Give up on contacts not reached by then (90s, 15m, 2h): late is worse than never.",
    )] = None
    until: Annotated[Until, typer.Option(
        "--until", "-u", case_sensitive=False,
        help="accepted (default), delivered (a receipt) or acknowledged (a person answered): "
        "escalate to the next channel when it does not come in time.",
    )] = Until.accepted
    json_output: JsonFlag = False
    json_lines: Annotated[bool, typer.Option(
        "--json-lines",
        help="One JSON object per line for each contact as its result comes, then a summary"
        " line: for large groups and pipelines.",
    )] = False
    template: Annotated[str | None, TemplateOption] = None
    var: Annotated[list[str] | None, VarOption] = None
    dry_run: Annotated[bool, DryRunOption] = False
    queue: Annotated[bool, typer.Option(
        "--queue",
        help="Record the work and return at once; `backchannel worker` processes send it.",
    )] = False


def gathered(args_type: type[Any]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A decorator giving a command every option of the dataclass ``args_type``, gathered
    into its ``args`` parameter (Typer reads the signature built here). The command's own
    arguments come first, then the dataclass's first field (the text), then the options."""
    hints = get_type_hints(args_type, include_extras=True)
    names = [field.name for field in fields(args_type)]
    shared = [inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY,
                                annotation=hints[field.name], default=field.default)
              for field in fields(args_type)]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.name != "args"]
        positional = [p for p in own if _is_argument(p)]

        @functools.wraps(command)
        def with_args(**values: Any) -> None:
            command(args_type(**{name: values.pop(name) for name in names}), **values)

        text, rest = shared[0], shared[1:]
        parameters = [*positional, text,
                      *(p for p in own if p not in positional), *rest]
        with_args.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
             if p in positional or p is text else p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
             for p in parameters]
        )
        with_args.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_args

    return decorate


def _is_argument(parameter: inspect.Parameter) -> bool:
    """A positional command-line argument (``typer.Argument``), however it is declared."""
    marks = [parameter.default, *getattr(parameter.annotation, "__metadata__", ())]
    return any(isinstance(mark, typer.models.ArgumentInfo) for mark in marks)


sending_command = gathered(SendArgs)


@app.command()
@sending_command
def send(
    args: SendArgs,
    to: str = typer.Option(
        ..., "--to", "-t", metavar="CONTACT", help="Contact name from the config."),
) -> None:
    """Send a message to one contact, falling back along their channels."""
    _send(args, to=to)


@app.command()
@sending_command
def broadcast(
    args: SendArgs,
    group: str = typer.Option(
        ..., "--group", "-g", metavar="GROUP", help="Group name from the config."),
    yes: bool = YesOption,
) -> None:
    """Send a message to every member of a group, each over their best working channel."""
    _send(args, group=group, yes=yes)


def _send(args: SendArgs, *, to: str | None = None, group: str | None = None,
          yes: bool = False) -> None:
    """The body both commands share: the audience is one contact or one group."""
    expiry = parse_duration(args.expires_after, "--expires-after")
    words = wording(args.text, args.template, args.var or [], args.subject, args.sms_text,
                    args.voice_text)
    options: SendKeywords = {"idempotency_key": args.idempotency_key, "expires_after": expiry,
                             "until": args.until.value}
    goal = args.until.value

    async def job() -> int:
        settings = load(args.config)
        message = words.message(settings)
        SendOptions(**options)  # bad options are found before the store is opened
        async with open_router(settings) as router:
            await router.book()  # a bad contact file is exit 2 before anything is recorded
            if group is not None:
                count = router.group_size(group)
                members = router.members(group)
            else:
                one_contact = router.contact(str(to))
                count, members = 1, lambda: (one_contact,)
            if args.dry_run:
                return show_preview(router, message, members(), count=count,
                                    template=args.template, json_output=args.json_output)
            if group is not None:
                confirm_broadcast(settings, group, count, yes=yes)
            if args.queue:
                queued = await (
                    router.broadcast(message, group=group, queue=True, **options)
                    if group is not None
                    else router.send(message, to=one_contact, queue=True, **options)
                )
                return _report_queued(queued, count, args.json_output)
            quiet = args.json_output or args.json_lines
            if group is not None:
                with ResultProgress(count, label="broadcast", failed="unreached",
                                    enabled=not quiet) as tick:
                    result = await router.broadcast(
                        message, group=group, **options,
                        on_result=_line if args.json_lines else tick,
                    )
            else:
                one = await router.send(message, to=one_contact, **options)
                if args.json_lines:
                    _line(one)
                result = BroadcastResult(one.message_id, (one,))
            final = await follow(router, result, goal, stdout_console(), quiet=quiet)
            met = goal_met(router, final, goal)
            # Inside the router: a large result is read back from the store as it prints.
            _report(final, args)
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


def _line(result: DeliveryResult) -> None:
    print_json_line(result.to_json())


def _report(result: BroadcastResult, args: SendArgs) -> None:
    if result.taken_over:
        stderr_console().print(
            f"this process stalled past its lease and another took {result.message_id} over:"
            " it finishes the message (`backchannel history --message ...` shows how)"
        )
    if args.json_lines:
        print_json_line(summary_json(result))
        return
    if args.json_output:
        print_broadcast_json(result)
        return
    console = stdout_console()
    if len(result) <= TABLE_ROWS:
        console.print(results_table(result))
    else:
        unreached = list(itertools.islice((r for r in result if not r.reached), TABLE_ROWS))
        if unreached:
            console.print(results_table(unreached, title=f"not reached (the first {TABLE_ROWS})"
                                        if len(unreached) == TABLE_ROWS else "not reached"))
    console.print(summary_line(result))
