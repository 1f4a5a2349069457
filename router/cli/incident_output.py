"""How the incident commands look on a terminal: each step's report, the incident list,
and an incident's story. Outside text (titles, names, message words) goes through
:func:`~router.cli.output.outside`: shown, never obeyed."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from router.cli.output import (
    outside,
    print_json,
    results_table,
    stderr_console,
    stdout_console,
    summary_line,
)
from router.incidents import Event, IncidentReport, IncidentResult, Step
from router.incidents.wording import Clockface
from router.store.incidents import IncidentRecord


def headline(result: IncidentResult, step: Step) -> Text:
    incident = Text(f"incident {result.incident_id} ", style="bold")
    if step.kind == "opened":
        owner = f", owner {step.owner}" if step.owner else ""
        return (incident + Text("opened: ", style="bold") + outside(step.title)
                + Text(f" ({step.severity}{owner})"))
    if step.kind == "update":
        return incident + Text("updated", style="bold") + Text(
            f": to the {step.size} contact(s) it has reached")
    return incident + Text("resolved", style="bold") + Text(
        f": {result.stopped} pending escalation(s) stopped; the all-clear goes to the"
        f" {step.size} contact(s) it reached")


def report_step(result: IncidentResult, step: Step, json_output: bool, *, servers: bool,
            face: Clockface) -> None:
    broadcast = result.broadcast
    if broadcast is not None and broadcast.taken_over:
        stderr_console().print(
            f"this process stalled past its lease and another took {broadcast.message_id}"
            " over: it finishes the message")
    if broadcast is not None and broadcast.stopped:
        stderr_console().print(f"{broadcast.message_id} was stopped: the incident was "
                               "resolved while it was being sent")
    if json_output:
        print_json(result.to_json())
        return
    console = stdout_console()
    entry = result.entry
    if broadcast is None:
        console.print("the incident has reached nobody so far: recorded, sent to nobody",
                      style="bold red")
    else:
        console.print(results_table(broadcast))
        console.print(summary_line(broadcast))
    console.print("published on the status page" if entry.public_text is not None
                  else "nothing published (no public text)", style="dim")
    if entry.next_update_at is not None:
        line = (f"next update promised by {face.hhmm(entry.next_update_at)}: "
                f"{step.owner} is reminded if none is sent by then")
        console.print(line)
        if not servers:
            console.print("no backchannel serve or worker runs on this store: start one, or "
                          "nobody sends that reminder", style="bold yellow")


def incidents_table(found: Sequence[IncidentRecord], face: Clockface, now: float) -> Table:
    """``incident list``: one row an incident, OVERDUE when a promised update is late."""
    table = Table(title="incidents, open ones first")
    for column in ("id", "state", "opened", "updated", "next", "owner"):
        table.add_column(column, no_wrap=True)
    table.add_column("title", overflow="fold")
    for incident in found:
        state = Text("OVERDUE", style="bold red") if incident.overdue(now) else Text(
            incident.state, style="yellow" if incident.resolved_at is None else "green")
        table.add_row(
            incident.incident_id, state, face.short(incident.opened_at),
            face.hhmm(incident.updated_at),
            "-" if incident.next_update_at is None else face.hhmm(incident.next_update_at),
            outside(incident.owner or "-"),
            outside(incident.title) + Text(f" ({incident.severity})", style="dim"),
        )
    return table


def show_report(report: IncidentReport, face: Clockface) -> None:
    console = stdout_console()
    incident = report.incident
    head = Text(f"{incident.incident_id} ", style="bold") + outside(incident.title)
    head.append(f"  {incident.severity}, {incident.state}", style="dim")
    console.print(head)
    promise = ("-" if incident.next_update_at is None
               else face.hhmm(incident.next_update_at))
    line = Text(f"opened {face.stamp(incident.opened_at)}, owner ") + outside(
        incident.owner or "-") + Text(f", groups {', '.join(incident.groups)}, next update "
                                      f"{promise}")
    if report.overdue:
        line.append("  OVERDUE: the promised update is late", style="bold red")
    console.print(line)
    timeline = Table(title="timeline", show_lines=False)
    timeline.add_column("when", no_wrap=True)
    timeline.add_column("what", no_wrap=True)
    timeline.add_column("detail", overflow="fold")
    for event in report.timeline:
        timeline.add_row(face.hhmm(event.at), event.kind, detail(event, face))
    console.print(timeline)
    people = Table(title="people")
    for column in ("contact", "status", "via", "acknowledged"):
        people.add_column(column, no_wrap=True)
    for person in report.people:
        answered = ("-" if person.acknowledged_at is None else
                    f"{face.hhmm(person.acknowledged_at)} on {person.acknowledged_on}")
        style = "green" if person.reached else "bold red"
        people.add_row(outside(person.contact), Text(person.status, style=style),
                       person.channel or "-", answered)
    console.print(people)
    reached = sum(1 for person in report.people if person.reached)
    acked = sum(1 for person in report.people if person.acknowledged_at is not None)
    summary = Text(f"{reached} reached, {acked} acknowledged, "
                   f"{len(report.never_reached)} never reached")
    if report.never_reached:
        summary += Text(": ") + outside(", ".join(report.never_reached))
    console.print(summary)


def detail(event: Event, face: Clockface) -> Text:
    if event.ack is not None:
        return outside(event.ack.contact) + Text(f" on {event.ack.channel}")
    entry = event.entry
    assert entry is not None
    detail = outside(entry.text)
    if entry.message_id is not None:
        detail.append(f"\nsent to {event.sent_to}, reached {event.reached}", style="dim")
    if entry.public_text is not None:
        detail.append("\npublic: ", style="dim")
        detail += outside(entry.public_text)
    if entry.next_update_at is not None:
        detail.append(f"\nnext update by {face.hhmm(entry.next_update_at)}", style="dim")
    return detail
