"""Tables for ``reachability`` and ``audit``, readable at 80 columns."""

from __future__ import annotations

import time
from datetime import datetime

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from router.cli.output import ResultProgress, outside
from router.ops.audit import FINDING_TEXT, AuditReport
from router.ops.reachability import Reach, ReachabilityReport

REACH_STYLE = {Reach.REDUNDANT: "green", Reach.SINGLE_DOMAIN: "yellow",
               Reach.UNREACHABLE: "bold red"}  # fmt: skip
REACH_TEXT = {Reach.REDUNDANT: "redundant", Reach.SINGLE_DOMAIN: "one domain",
              Reach.UNREACHABLE: "UNREACHABLE"}  # fmt: skip


def print_reachability(report: ReachabilityReport, console: Console) -> None:
    health = Table(title="channel health", box=box.SIMPLE_HEAD, title_justify="left")
    health.add_column("channel", no_wrap=True)
    health.add_column("state", no_wrap=True)
    health.add_column("probe", justify="right", no_wrap=True)
    health.add_column("last error", overflow="fold")
    for row in report.channels:
        state = Text("up", style="green") if row.up else Text(
            "down" if row.blocked_by in (None, row.name) else f"down ({row.blocked_by})",
            style="bold red",
        )
        probe = f"via {row.probed_by}" if row.probed_by != row.name else "-"
        if row.latency is not None and row.probed_by == row.name:
            probe = f"{row.latency * 1000:.0f} ms"
        if row.probe is not None and not row.probe.ok:
            probe += " ✗"
        error = "" if row.up else row.last_error
        health.add_row(row.name, state, probe, outside(error or "", "dim"))
    console.print(health)

    contacts = Table(title="contacts", box=box.SIMPLE_HEAD, title_justify="left")
    contacts.add_column("contact", no_wrap=True, max_width=16, overflow="ellipsis")
    contacts.add_column("independent", no_wrap=True)
    contacts.add_column("channel", no_wrap=True)
    contacts.add_column("domains", overflow="fold")
    contacts.add_column("reach", no_wrap=True)
    contacts.add_column("last test ok", no_wrap=True)
    for contact in report.contacts:
        reach = Text(f"{len(contact.independent)} {REACH_TEXT[contact.reach]}",
                     style=REACH_STYLE[contact.reach])  # fmt: skip
        if contact.reach is Reach.SINGLE_DOMAIN and contact.survives_provider_outage:
            reach.append(f"\n{contact.redundancy}", style="dim")
        if not contact.checks:
            contacts.add_row(outside(contact.contact), reach, "-",
                             outside("; ".join(contact.notes), "dim"), "", "",
                             end_section=True)  # fmt: skip
            continue
        for index, check in enumerate(contact.checks):
            if check.test is not None:
                mark = Text("✓ test", style="green") if check.test.ok else Text(
                    "✗ test", style="bold red")
                if check.acknowledged is not None:
                    mark.append(" ✓ answered" if check.acknowledged else " no answer",
                                style="green" if check.acknowledged else "yellow")
            else:
                mark = Text("✓", style="green") if check.up else Text("✗ down", style="bold red")
            last = contact.last_success.get(check.channel)
            label = check.channel
            if len(check.providers) > 1:
                label += " via " + "+".join(check.providers)
            contacts.add_row(
                outside(contact.contact) if index == 0 else "",
                reach if index == 0 else "",
                label,
                Text(", ".join(sorted(check.domains)), style="dim"),
                mark,
                _when(last),
                end_section=index == len(contact.checks) - 1,
            )
    console.print(contacts)
    console.print(summary(report))


def summary(report: ReachabilityReport) -> Text:
    """One line: the same counts as the metrics and the exit status."""
    total = len(report.contacts)
    line = Text(f"{total} contacts: ")
    line.append(f"{report.count(Reach.REDUNDANT)} redundant", style="green")
    for reach, label in ((Reach.SINGLE_DOMAIN, "on one failure domain"),
                         (Reach.UNREACHABLE, "unreachable")):  # fmt: skip
        names = [c.contact for c in report.contacts if c.reach is reach]
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            line.append_text(outside(f", {len(names)} {label} ({shown})", REACH_STYLE[reach]))
    if report.down:
        line.append(f"; down: {', '.join(report.down)}", style="bold red")
    line.append(f"; exit {report.exit_status}")
    return line


def print_audit(report: AuditReport, console: Console) -> None:
    if report.findings:
        table = Table(title="contacts without two independent channels", box=box.SIMPLE_HEAD,
                      title_justify="left")  # fmt: skip
        table.add_column("contact", no_wrap=True, max_width=16, overflow="ellipsis")
        table.add_column("problem", overflow="fold")
        table.add_column("what to add", overflow="fold")
        for contact in report.findings:
            assert contact.finding is not None
            problem = Text(FINDING_TEXT[contact.finding], style="bold")
            if contact.survives_provider_outage:
                # Provider redundancy, told apart from domain independence.
                problem = Text(contact.redundancy, style="bold")
            if contact.channels:
                problem.append("\n" + " ".join(contact.channels), style="dim")
            if contact.shared:
                problem.append(f"\nall on {', '.join(contact.shared)}", style="dim")
            table.add_row(outside(contact.contact), problem, "\n".join(contact.advice),
                          end_section=True)  # fmt: skip
        console.print(table)
    else:
        console.print(Text("every contact has two independent channels", style="green"))
    if report.groups:
        groups = Table(title="groups", box=box.SIMPLE_HEAD, title_justify="left")
        groups.add_column("group", no_wrap=True)
        groups.add_column("members", justify="right", no_wrap=True)
        groups.add_column("weakest member", overflow="fold")
        groups.add_column("independent", justify="right", no_wrap=True)
        for group in report.groups:
            style = "green" if group.independent >= 2 else (
                "yellow" if group.independent == 1 else "bold red")
            weakest = ", ".join(group.weakest[:4]) + (
                f" +{len(group.weakest) - 4}" if len(group.weakest) > 4 else "")
            groups.add_row(outside(group.group), str(group.members), outside(weakest),
                           Text(str(group.independent), style=style))  # fmt: skip
        console.print(groups)
    if report.internal_email:
        names = report.internal_email
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        console.print(outside(
            f"email on an internal domain (.local, .internal, .lan, .home.arpa: delivered by "
            f"your own relay only, so it fails with your network): {shown}", "yellow"))
    console.print(f"{len(report.contacts)} contacts, {len(report.findings)} without two "
                  f"independent channels; channels enabled: {', '.join(report.enabled)}")


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    if time.time() - timestamp > 180 * 86_400:
        return f"{datetime.fromtimestamp(timestamp):%Y-%m-%d}"
    return f"{datetime.fromtimestamp(timestamp):%m-%d %H:%M}"


def progress_of_tests(total: int, *, enabled: bool) -> ResultProgress:
    """A progress bar on stderr while test messages go out; nothing off a terminal."""
    return ResultProgress(total, label="test messages", failed="failed", enabled=enabled)
