"""What the board shows, as plain JSON-ready data: the API returns it, the page renders it.

Outside text (message bodies, replies, provider errors, contact names) is cleaned of
control and bidirectional-override characters and bounded in length here; HTML escaping
is the templates' job (autoescape). Addresses are masked as in the logs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from config.sections import HealthSettings
from router.model.clock import SystemClock
from router.model.health import Breaker
from router.model.redact import mask_address, mask_personal
from router.rules.domains import independent_channels
from router.rules.health import HealthBoard
from router.store.base import InboundEvent
from router.store.board_view import (
    STATUSES,
    DeliveryView,
    LastRun,
    MessageSummary,
    Page,
)
from router.store.incidents import IncidentRecord
from router.store.reachability_log import RunRecord

Json = dict[str, Any]
TEXT_LIMIT = 2000
"""Characters of a message or reply shown at most."""
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class Planner(Protocol):
    def __call__(self, body_json: str, contact: str, addresses_json: str) -> Sequence[str]:
        """The channels a delivery of this message to this contact would try, in order."""
        ...


@dataclass(frozen=True, slots=True)
class Topology:
    """What the board must know of the router, handed down by the server."""

    channels: tuple[str, ...]
    """Enabled channels, best first."""
    dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Channel or lane -> the shared provider accounts it hangs on (twilio)."""
    lanes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Channel -> the breakers of the providers carrying it, best first."""
    domains: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Channel -> its failure domains, to tell single-domain contacts."""
    repeats: int = 0
    """Rounds an unacknowledged chain is run again ([escalation] repeats)."""


def clean(text: str, limit: int = TEXT_LIMIT) -> str:
    """Outside text made safe to show: no control or direction-override characters."""
    text = _UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- health -------------------------------------------------------------------------------


def health(breakers: Sequence[Breaker], topology: Topology) -> list[Json]:
    """Every enabled channel (then its providers' lanes when it has several), then the
    provider accounts they share, then anything else recorded: judged by the same
    breaker rules as ``backchannel status``, from what every process wrote."""
    board = HealthBoard(HealthSettings(), SystemClock(), topology.dependencies,
                        lanes={c: lanes for c, lanes in topology.lanes.items() if len(lanes) > 1})
    for breaker in breakers:
        board.adopt(breaker)
    kinds: dict[str, str] = {}
    for channel in topology.channels:
        kinds[channel] = "channel"
        for lane in topology.lanes.get(channel, ()):
            kinds.setdefault(lane, "lane")
    for name in list(kinds):
        for dep in topology.dependencies.get(name, ()):
            kinds.setdefault(dep, "provider")
    for breaker in sorted(breakers, key=lambda b: b.name):
        kinds.setdefault(breaker.name, "other")
    rows = []
    for name, kind in kinds.items():
        row = board.status(name).to_json()
        row["kind"] = kind
        row["since"] = row["since"] or None
        row["last_error"] = clean(str(row["last_error"]), 300) if row["last_error"] else None
        row["warning"] = clean(str(row["warning"]), 300) if row["warning"] else None
        rows.append(row)
    return rows


# -- messages -----------------------------------------------------------------------------


def message(summary: MessageSummary) -> Json:
    body = _json(summary.body_json)
    audience = _json(summary.audience_json)
    names = audience.get("to")
    if isinstance(names, str):
        names = [names]
    groups = audience.get("groups")  # an incident's first notice
    if "group" in audience:
        shown: Json = {"group": clean(str(audience["group"]), 100)}
    elif isinstance(groups, list):
        shown = {"group": clean(", ".join(str(g) for g in groups), 100)}
    else:
        shown = {"to": [clean(str(n), 100) for n in (names or [])[:20]],
                 "count": len(names or [])}
    if "incident" in audience:
        shown["incident"] = clean(str(audience["incident"]), 40)
    return {
        "message_id": summary.message_id,
        "text": clean(str(body.get("text", ""))),
        "subject": clean(str(body["subject"]), 300) if body.get("subject") else None,
        "audience": shown,
        "created_at": summary.created_at,
        "state": summary.state,
        "goal": summary.goal,
        "counts": {status: summary.counts.get(status, 0) for status in STATUSES},
        "total": summary.total,
    }


def messages(page: Page[MessageSummary]) -> Json:
    return {"messages": [message(item) for item in page.items], "total": page.total,
            "offset": page.offset, "limit": page.limit}


def deliveries(page: Page[DeliveryView], summary: MessageSummary, planner: Planner,
               topology: Topology) -> Json:
    return {
        **message(summary),
        "deliveries": [delivery(item, summary, planner, topology) for item in page.items],
        "matching": page.total, "offset": page.offset, "limit": page.limit,
    }


def delivery(item: DeliveryView, summary: MessageSummary, planner: Planner,
             topology: Topology) -> Json:
    return {
        "contact": clean(item.contact, 100),
        "status": item.status,
        "channel": item.channel,
        "goal": item.goal,
        "round": item.round,
        "done": item.done,
        "waiting_for": None if item.done else item.waiting_for,
        "next_step": None if item.done else _next_step(item, summary, planner, topology),
        "next_action_at": None if item.done else item.next_action_at,
        "acknowledged_at": item.acknowledged_at,
        "acknowledged_on": item.acknowledged_on,
        "attempts": [{
            "channel": a.channel, "provider": a.provider, "kind": a.kind, "state": a.state,
            "several_providers": len(topology.lanes.get(a.channel, ())) > 1,
            "outcome": a.verdict or ("sending" if a.state == "sending" else None),
            "detail": clean(mask_personal(a.detail), 300) if a.detail else None,
            "address": mask_address(a.channel, a.address), "receipt": a.receipt,
            "round": a.round, "started_at": a.started_at, "finished_at": a.finished_at,
        } for a in item.attempts],
    }  # fmt: skip


def _next_step(item: DeliveryView, summary: MessageSummary, planner: Planner,
               topology: Topology) -> str | None:
    """What the escalation will do when ``next_action_at`` comes: the next channel of this
    round, a new round, or nothing (the chain ends)."""
    if item.next_action_at is None:
        return None
    try:
        route = list(planner(summary.body_json, item.contact, item.addresses_json))
    except Exception:  # an old record the planner cannot read: say nothing rather than fail
        return None
    if item.waiting_for == "repeat":
        return f"round {item.round + 1}: {route[0]}" if route else None
    tried = {a.channel for a in item.attempts if a.round == item.round}
    untried = [channel for channel in route if channel not in tried]
    if untried:
        return untried[0]
    if item.goal == "acknowledged" and item.round < topology.repeats:
        return f"round {item.round + 2}"
    return "give up"


# -- incidents ----------------------------------------------------------------------------


def incidents(records: Sequence[IncidentRecord], now: float) -> Json:
    """Open incidents first (a promised update that is late flagged ``overdue``), then
    those resolved lately."""
    return {"incidents": [{
        "incident_id": r.incident_id, "title": clean(r.title, 200), "severity": r.severity,
        "state": r.state, "owner": clean(r.owner, 100) if r.owner else None,
        "groups": [clean(g, 100) for g in r.groups], "opened_at": r.opened_at,
        "updated_at": r.updated_at, "resolved_at": r.resolved_at,
        "next_update_at": r.next_update_at, "overdue": r.overdue(now),
    } for r in records]}  # fmt: skip


# -- what comes back ----------------------------------------------------------------------


def inbox(events: Sequence[InboundEvent], opt_outs: Sequence[tuple[str, str, float]]) -> Json:
    return {
        "inbound": [{
            "received_at": e.received_at, "channel": e.channel,
            "contact": clean(e.contact, 100) if e.contact else None,
            "address": mask_address(e.channel, e.address), "kind": e.kind,
            "text": clean(e.text), "message_id": e.message_id,
        } for e in events],
        "opt_outs": [{"contact": clean(contact, 100), "channel": channel, "at": at}
                     for contact, channel, at in opt_outs],
    }  # fmt: skip


# -- reachability -------------------------------------------------------------------------


def reachability(runs: Sequence[RunRecord], last: LastRun | None,
                 last_passed: Mapping[str, float | None], topology: Topology) -> Json:
    single: list[str] = []
    unreachable: list[str] = []
    if last is not None:
        for contact, channels in sorted(last.reachable.items()):
            if not channels:
                unreachable.append(clean(contact, 100))
            elif len(independent_channels(channels, topology.domains)) < 2:
                single.append(clean(contact, 100))
    return {
        "runs": [{
            "run_id": run.run_id, "started_at": run.started_at, "finished_at": run.finished_at,
            "group": run.audience, "send_test": run.send_test, "exit_status": run.exit_status,
            "contacts": run.contacts, "redundant": run.redundant,
            "single_domain": run.single_domain, "unreachable": run.unreachable,
            "channels_down": list(run.channels_down),
        } for run in runs],
        "last": None if last is None else {
            "run_id": last.run.run_id, "single_domain_contacts": single,
            "unreachable_contacts": unreachable,
        },
        "last_passed": dict(last_passed),
    }  # fmt: skip


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
