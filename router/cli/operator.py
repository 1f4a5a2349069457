"""``reachability`` and ``audit``: knowing before the crisis who can be reached.

``reachability`` is made for cron: its exit status is its own (0 every contact
redundant, 1 someone on a single failure domain or a channel down, 2 bad
config, 3 someone unreachable), it can write a node_exporter textfile, and it
reports to a dead man's switch, so that a cron job that stops running, or keeps
failing, is noticed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer
from rich.markup import escape

from config.settings import ConfigError
from router.cli.app import app
from router.cli.common import ConfigOption, JsonOption, load, open_router, parse_duration, run
from router.cli.operator_output import print_audit, print_reachability, progress_of_tests
from router.cli.output import print_json, stderr_console, stdout_console
from router.core import Router
from router.model.channel import CHANNEL_NAMES
from router.model.errors import BadInput
from router.model.text import terminal_safe
from router.ops.audit import audit as run_audit
from router.ops.ping import check_ping_url, ping
from router.ops.reachability import (
    EXIT_DEGRADED,
    Reach,
    ReachabilityReport,
    SendTestOptions,
    check_message,
    check_reachability,
)

GroupOption = typer.Option(None, "--group", "-g", help="Only this group's members.")


@app.command()
def reachability(
    config: Path | None = ConfigOption,
    group: str | None = GroupOption,
    send_test: bool = typer.Option(
        False, "--send-test",
        help="Also send a short test message to each contact on each of their channels.",
    ),
    skip: list[str] = typer.Option(
        [], "--skip", metavar="CHANNEL", help="With --send-test: do not test this channel.",
    ),
    ack_wait: str | None = typer.Option(
        None, "--ack-wait", metavar="DURATION",
        help="With --send-test: each test asks to be acknowledged (reply code, button, "
        "keypress); wait this long (90s, 15m) and report who answered, on which channel.",
    ),
    prometheus: Path | None = typer.Option(
        None, "--prometheus", metavar="FILE",
        help="Write a node_exporter textfile (atomically) with the run's figures.",
    ),
    ping_url: str | None = typer.Option(
        None, "--ping-url", metavar="URL",
        help="Dead man's switch: the URL on exit 0, URL/fail otherwise.",
    ),
    json_output: bool = JsonOption,
) -> None:
    """Probe every channel and check every contact has two independent ones (for cron).

    Exit status: 0 every contact reachable on two channels sharing no failure domain;
    1 someone reachable on one failure domain only, or a channel down; 2 bad config;
    3 someone reachable on no channel at all.
    """
    unknown = sorted(set(skip) - set(CHANNEL_NAMES))
    if unknown:
        raise typer.BadParameter(f"unknown channel {unknown[0]!r}", param_hint="--skip")
    if ping_url is not None:
        try:
            check_ping_url(ping_url)
        except BadInput as exc:
            raise typer.BadParameter(str(exc).removeprefix("--ping-url: "),
                                     param_hint="--ping-url") from None  # fmt: skip
    wait = parse_duration(ack_wait, "--ack-wait")
    if wait is not None and not send_test:
        raise typer.BadParameter("needs --send-test", param_hint="--ack-wait")
    summary: list[str] = []

    async def job() -> int:
        settings = load(config)
        if prometheus is not None:
            _check_writable(prometheus)
        async with open_router(settings) as router:
            await router.book()  # the files' contacts are checked too
            options = SendTestOptions(skip=frozenset(skip)) if wait is None else \
                SendTestOptions(skip=frozenset(skip), until="acknowledged", ack_wait=wait)
            total = _tests_planned(router, group, options) if send_test else 0
            with progress_of_tests(total, enabled=not json_output) as tick:
                report = await check_reachability(
                    router, group=group, send_test=send_test, options=options, on_test=tick
                )
        summary.append(_ping_summary(report))
        status = report.exit_status
        if json_output:
            print_json(report.to_json())
        else:
            print_reachability(report, stdout_console())
        if prometheus is not None:
            from router.ops.metrics import write_metrics  # prometheus-client only when asked

            try:
                write_metrics(report, prometheus)
            except OSError as exc:
                _warn(f"--prometheus: cannot write {prometheus}: {exc.strerror or exc}")
                status = max(status, EXIT_DEGRADED)
        return status

    try:
        run(job())
    except typer.Exit as done:
        if ping_url is not None:
            status = done.exit_code
            problem = asyncio.run(ping(ping_url, ok=status == 0,
                                       body=summary[0] if summary else f"exit {status}"))
            if problem is not None:
                # The run's own status stands: cron mails it, the switch will notice.
                _warn(problem)
        raise


@app.command(name="audit")
def audit_command(
    config: Path | None = ConfigOption,
    group: str | None = GroupOption,
    json_output: bool = JsonOption,
) -> None:
    """Contacts whose channels share one failure domain, each group's weakest member,
    and what to add. Reads the config only: probes nothing, sends nothing.

    Exit status: 0 every contact has two independent channels, 1 otherwise, 2 bad config.
    """

    async def job() -> int:
        async with open_router(load(config)) as router:
            await router.book()  # the files' contacts are audited too
            report = run_audit(router, group=group)
        if json_output:
            print_json(report.to_json())
        else:
            print_audit(report, stdout_console())
        return report.exit_status

    run(job())


def _check_writable(path: Path) -> None:
    # Found before anything is probed: a cron line with a typo must fail loudly, at once.
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"--prometheus: {path} is a directory")
    if not directory.is_dir() or not os.access(directory, os.W_OK):
        raise ConfigError(f"--prometheus: cannot write in {directory}")


def _tests_planned(router: Router, group: str | None, options: SendTestOptions) -> int:
    contacts = router.group(group) if group is not None else list(router.everyone())
    routes = router.plan(check_message("sms"), contacts)
    return sum(1 for route in routes for step in route.steps if step.channel not in options.skip)


def _ping_summary(report: ReachabilityReport) -> str:
    # Counts only: the switch's log is outside our control, names and numbers stay here.
    return (
        f"exit {report.exit_status}: {len(report.contacts)} contacts, "
        f"{report.count(Reach.REDUNDANT)} redundant, "
        f"{report.count(Reach.SINGLE_DOMAIN)} on one failure domain, "
        f"{report.count(Reach.UNREACHABLE)} unreachable; "
        f"channels down: {', '.join(report.down) or 'none'}"
    )


def _warn(text: str) -> None:
    stderr_console().print(f"[bold yellow]warning:[/] {escape(terminal_safe(text))}",
                           highlight=False,
                           soft_wrap=True)  # fmt: skip
