"""What the incident tables hold, as the incidents part and the board read it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router.store.sql import Row

REACHED = ("accepted", "delivered", "acknowledged", "unknown")
"""A delivery that may have arrived: its contact counts as reached by the incident."""
INCIDENT_COLUMNS = (
    "id, title, severity, owner, audience, variables, opened_at, resolved_at, updated_at,"
    " next_update_at, reminded_at, ack_announced_at"
)


class UnknownIncident(Exception):
    """No incident has this id."""


class IncidentClosed(Exception):
    """The incident was resolved: it takes no update, and is not resolved twice."""


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """An incident as recorded."""

    incident_id: str
    title: str
    severity: str
    owner: str | None
    groups: tuple[str, ...]
    variables: Mapping[str, str]
    """The ``--var`` values it was opened with: updates and the all-clear reuse them."""
    opened_at: float
    resolved_at: float | None = None
    updated_at: float = 0.0
    next_update_at: float | None = None
    """The next update promised, while one is (and the incident is open)."""
    reminded_at: float | None = None
    """When the owner was reminded of that promise."""
    ack_announced_at: float | None = None

    @property
    def state(self) -> str:
        return "open" if self.resolved_at is None else "resolved"

    def overdue(self, now: float) -> bool:
        """A promised update is late."""
        return (self.resolved_at is None and self.next_update_at is not None
                and now > self.next_update_at)


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """One step of an incident's timeline: its opening, an update, a reminder, the end."""

    entry_id: str
    incident_id: str
    kind: str
    """opened, update, resolved (to the audience); reminder, announcement (to the owner)."""
    at: float
    text: str
    """The internal words (never published)."""
    public_text: str | None = None
    next_update_at: float | None = None
    seq: int = 0
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Trace:
    """One contact on one message of an incident."""

    message_id: str
    entry_kind: str | None
    contact: str
    status: str
    channel: str | None
    addresses_json: str
    sent_at: float
    maybe_sent: bool
    """A pending delivery with an attempt that may have arrived (in doubt, or taken)."""

    @property
    def reached(self) -> bool:
        return self.status in REACHED or self.maybe_sent


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    contact: str
    channel: str
    at: float
    message_id: str
    entry_kind: str | None


@dataclass(frozen=True, slots=True)
class PublicIncident:
    """What the public may see of an incident: times, state, and the public words."""

    incident_id: str
    opened_at: float
    resolved_at: float | None
    next_update_at: float | None
    entries: tuple[EntryRecord, ...] = field(default_factory=tuple)


def incident_from_row(row: Row | tuple[Any, ...]) -> IncidentRecord:
    """An incident from a row of :data:`INCIDENT_COLUMNS`."""
    audience = json.loads(row[4])
    return IncidentRecord(
        incident_id=row[0], title=row[1], severity=row[2], owner=row[3],
        groups=tuple(audience.get("groups", ())), variables=json.loads(row[5]),
        opened_at=row[6], resolved_at=row[7], updated_at=row[8], next_update_at=row[9],
        reminded_at=row[10], ack_announced_at=row[11],
    )
