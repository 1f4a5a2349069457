"""What the incident commands return: a step's results, and an incident's whole story."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from router.model.results import BroadcastResult, DeliveryResult
from router.store.incidents import Acknowledgement, EntryRecord, IncidentRecord, Trace

RANK = {"acknowledged": 5, "delivered": 4, "accepted": 3, "unknown": 2, "pending": 1}


@dataclass(frozen=True, slots=True)
class IncidentResult:
    """One step of an incident (its opening, an update, the all-clear): the entry it added
    to the timeline and the broadcast that carried it, with the same per-contact results
    as :meth:`Router.broadcast`. ``broadcast`` is None when nobody was left to send to
    (the incident had reached nobody): the entry is recorded, and published if public."""

    incident_id: str
    entry: EntryRecord
    broadcast: BroadcastResult | None
    stopped: int = 0
    """The all-clear: deliveries whose escalation it stopped."""

    @property
    def message_id(self) -> str | None:
        return None if self.broadcast is None else self.broadcast.message_id

    @property
    def results(self) -> tuple[DeliveryResult, ...]:
        """Every contact's result (read whole from the store for a large audience: prefer
        iterating)."""
        return () if self.broadcast is None else self.broadcast.results

    def __iter__(self) -> Iterator[DeliveryResult]:
        return iter(()) if self.broadcast is None else iter(self.broadcast)

    def __len__(self) -> int:
        return 0 if self.broadcast is None else len(self.broadcast)

    @property
    def reached_all(self) -> bool:
        """Everyone it went to was reached (and it went to someone)."""
        return self.broadcast is not None and self.broadcast.reached_all

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"incident_id": self.incident_id,
                                   "message_id": self.message_id}
        payload.update({key: value for key, value in (self.broadcast.to_json().items()
                        if self.broadcast is not None else ()) if key != "message_id"})
        payload.setdefault("results", [])
        payload["entry"] = {"kind": self.entry.kind, "at": _iso(self.entry.at),
                            "public": self.entry.public_text is not None}
        if self.entry.next_update_at is not None:
            payload["next_update_at"] = _iso(self.entry.next_update_at)
        if self.entry.kind == "resolved":
            payload["escalations_stopped"] = self.stopped
        return payload


@dataclass(frozen=True, slots=True)
class Person:
    """One contact of an incident: how far its messages got with them."""

    contact: str
    status: str
    """The furthest any message of the incident got: acknowledged, delivered, accepted,
    unknown (maybe arrived), or failed / expired (never reached)."""
    channel: str | None
    acknowledged_at: float | None = None
    acknowledged_on: str | None = None

    @property
    def reached(self) -> bool:
        return self.status in ("acknowledged", "delivered", "accepted", "unknown")

    def to_json(self) -> dict[str, Any]:
        return {"contact": self.contact, "reached": self.reached, "status": self.status,
                "channel": self.channel,
                "acknowledged_at": None if self.acknowledged_at is None
                else _iso(self.acknowledged_at), "acknowledged_on": self.acknowledged_on}


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the timeline: an entry (with what its message came to), or an
    acknowledgement."""

    at: float
    kind: str
    """opened, update, reminder, announcement, resolved; or acknowledged."""
    entry: EntryRecord | None = None
    sent_to: int = 0
    reached: int = 0
    ack: Acknowledgement | None = None

    def to_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {"at": _iso(self.at), "kind": self.kind}
        if self.entry is not None:
            item.update({"text": self.entry.text, "public_text": self.entry.public_text,
                         "message_id": self.entry.message_id, "sent_to": self.sent_to,
                         "reached": self.reached})
            if self.entry.next_update_at is not None:
                item["next_update_at"] = _iso(self.entry.next_update_at)
        if self.ack is not None:
            item.update({"contact": self.ack.contact, "channel": self.ack.channel,
                         "message_id": self.ack.message_id})
        return item


@dataclass(frozen=True, slots=True)
class IncidentReport:
    """An incident in full: its timeline in order, who was reached and who never was."""

    incident: IncidentRecord
    timeline: tuple[Event, ...]
    people: tuple[Person, ...]
    overdue: bool = False
    messages: int = 0

    @property
    def never_reached(self) -> list[str]:
        return [person.contact for person in self.people if not person.reached]

    def to_json(self) -> dict[str, Any]:
        incident = self.incident
        return {
            "incident_id": incident.incident_id, "title": incident.title,
            "severity": incident.severity, "state": incident.state, "owner": incident.owner,
            "groups": list(incident.groups), "opened_at": _iso(incident.opened_at),
            "resolved_at": None if incident.resolved_at is None else _iso(incident.resolved_at),
            "next_update_at": None if incident.next_update_at is None
            else _iso(incident.next_update_at),
            "overdue": self.overdue, "messages": self.messages,
            "timeline": [event.to_json() for event in self.timeline],
            "people": [person.to_json() for person in self.people],
            "reached": sum(1 for person in self.people if person.reached),
            "acknowledged": sum(1 for person in self.people if person.acknowledged_at),
            "never_reached": self.never_reached,
        }


def summary_json(incident: IncidentRecord, now: float) -> dict[str, Any]:
    """One incident in ``incident list --json``."""
    return {
        "incident_id": incident.incident_id, "title": incident.title,
        "severity": incident.severity, "state": incident.state, "owner": incident.owner,
        "groups": list(incident.groups), "opened_at": _iso(incident.opened_at),
        "updated_at": _iso(incident.updated_at),
        "resolved_at": None if incident.resolved_at is None else _iso(incident.resolved_at),
        "next_update_at": None if incident.next_update_at is None
        else _iso(incident.next_update_at),
        "overdue": incident.overdue(now),
    }


def build_report(incident: IncidentRecord, entries: Sequence[EntryRecord],
                 traces: Sequence[Trace], acks: Sequence[Acknowledgement],
                 now: float) -> IncidentReport:
    by_message: dict[str, list[Trace]] = {}
    for trace in traces:
        by_message.setdefault(trace.message_id, []).append(trace)
    events = [Event(entry.at, entry.kind, entry,
                    sent_to=len(by_message.get(entry.message_id or "", ())),
                    reached=sum(1 for t in by_message.get(entry.message_id or "", ()) if t.reached))
              for entry in entries]
    events += [Event(ack.at, "acknowledged", ack=ack) for ack in acks]
    # Entries keep their order among themselves (seq); an acknowledgement goes where its
    # time puts it.
    events.sort(key=lambda event: (event.at, 0 if event.entry is not None else 1))
    return IncidentReport(incident, tuple(events), tuple(_people(traces, acks)),
                          overdue=incident.overdue(now), messages=len(by_message))


def _people(traces: Sequence[Trace], acks: Sequence[Acknowledgement]) -> list[Person]:
    best: dict[str, tuple[int, str, str | None]] = {}
    for trace in traces:
        status = "unknown" if trace.status == "pending" and trace.maybe_sent else trace.status
        rank = RANK.get(status, 0)
        held = best.get(trace.contact)
        if held is None or rank > held[0] or (rank == held[0] and trace.channel):
            best[trace.contact] = (rank, status, trace.channel or (held[2] if held else None))
    first_ack: dict[str, Acknowledgement] = {}
    for ack in acks:
        first_ack.setdefault(ack.contact, ack)
    people = []
    for contact, (_, status, channel) in best.items():
        answered = first_ack.get(contact)
        people.append(Person(contact, "acknowledged" if answered else status, channel,
                             answered.at if answered else None,
                             answered.channel if answered else None))
    return people


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
