"""Incidents in the store: the incident, its timeline, and what its messages came to.

Kept beside the store's protocol, like the reachability log: only the incidents part
(:mod:`router.incidents`) reads and writes these tables. Every operation is one
transaction; one that adds to an incident's timeline locks the incident's row first
(PostgreSQL), so that two processes never number two entries alike. Resolving is one
transaction too: the incident closes, and every message sent for it stops (no attempt
starts after it, no wait starts again) with its waiting deliveries settled.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from router.store.base import Store
from router.store.incident_records import (
    INCIDENT_COLUMNS,
    Acknowledgement,
    EntryRecord,
    IncidentClosed,
    IncidentRecord,
    PublicIncident,
    Trace,
    UnknownIncident,
    incident_from_row,
)
from router.store.ops_twoway import NOTHING_MAYBE_SENT
from router.store.sql import Tx
from router.store.sqlstore import SqlStore

NOTICES = ("opened", "update", "resolved")
"""Entries that go to the incident's audience (the others go to its owner)."""
_FEED_KEY = "status-feed.id"


class IncidentBook:
    """Reads and writes the incident tables of one store."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    @classmethod
    def of(cls, store: Store) -> IncidentBook | None:
        """The book of ``store``, or None when its backend keeps no incidents."""
        return cls(store) if isinstance(store, SqlStore) else None

    # -- the lifecycle -------------------------------------------------------------------

    async def open(self, incident: IncidentRecord, entry: EntryRecord) -> bool:
        """The incident and its first entry, in one commit; False (nothing written) when
        its id is taken already."""
        async def write(tx: Tx) -> bool:
            inserted = await tx.execute(
                f"INSERT INTO incidents ({INCIDENT_COLUMNS})"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, NULL, NULL)"
                " ON CONFLICT (id) DO NOTHING",
                incident.incident_id, incident.title, incident.severity, incident.owner,
                json.dumps({"groups": list(incident.groups)}),
                json.dumps(dict(incident.variables), sort_keys=True), incident.opened_at,
                incident.opened_at, entry.next_update_at,
            )
            if inserted:
                await _insert_entry(tx, entry, 1)
            return bool(inserted)

        opened: bool = await self._store.run(write)
        return opened

    async def update(self, entry: EntryRecord, *, owner: str | None = None) -> EntryRecord:
        """Add an update to an open incident. Its promise (or none) replaces the last one,
        and the owner's reminders of the old one stop: an update is what they asked for.
        ``owner`` hands the incident over. Raises UnknownIncident, IncidentClosed."""
        async def write(tx: Tx) -> EntryRecord:
            seq = await _next_seq(tx, entry.incident_id, open_only=True)
            await _insert_entry(tx, entry, seq)
            await tx.execute(
                "UPDATE incidents SET updated_at = ?, next_update_at = ?, reminded_at = NULL,"
                " reminder_claimed_until = NULL, owner = COALESCE(?, owner) WHERE id = ?",
                entry.at, entry.next_update_at, owner, entry.incident_id,
            )
            await _stop(tx, entry.incident_id, entry.at, kinds=("reminder",))
            return _numbered(entry, seq)

        written: EntryRecord = await self._store.run(write)
        return written

    async def resolve(self, entry: EntryRecord) -> tuple[EntryRecord, int]:
        """Close the incident and stop every message sent for it, in one transaction:
        nothing of it is sent after this (not a first attempt, not an escalation, not a
        repeat), and deliveries never begun are expired. Returns the entry and how many
        deliveries stopped waiting. Raises UnknownIncident, IncidentClosed."""
        async def write(tx: Tx) -> tuple[EntryRecord, int]:
            seq = await _next_seq(tx, entry.incident_id, open_only=True)
            await _insert_entry(tx, entry, seq)
            await tx.execute(
                "UPDATE incidents SET resolved_at = ?, updated_at = ?, next_update_at = NULL"
                " WHERE id = ?", entry.at, entry.at, entry.incident_id,
            )
            stopped = await _stop(tx, entry.incident_id, entry.at, kinds=None)
            return _numbered(entry, seq), stopped

        result: tuple[EntryRecord, int] = await self._store.run(write)
        return result

    async def note(self, entry: EntryRecord) -> EntryRecord | None:
        """A reminder or an announcement in the timeline, once: a timer that fires again
        after a crash finds its entry there already (its id is derived from what it is).
        None when the incident is gone."""
        async def write(tx: Tx) -> EntryRecord | None:
            found = await tx.fetchone("SELECT seq FROM incident_entries WHERE id = ?",
                                      entry.entry_id)
            if found is not None:
                return _numbered(entry, int(found[0]))
            try:
                seq = await _next_seq(tx, entry.incident_id, open_only=False)
            except UnknownIncident:
                return None
            await _insert_entry(tx, entry, seq)
            return _numbered(entry, seq)

        written: EntryRecord | None = await self._store.run(write)
        return written

    # -- reading -------------------------------------------------------------------------

    async def load(self, incident_id: str) -> IncidentRecord | None:
        row = await self._store.run(lambda tx: tx.fetchone(
            f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?", incident_id  # noqa: S608
        ))
        return None if row is None else incident_from_row(row)

    async def incidents(self, *, limit: int = 50, open_only: bool = False) -> list[IncidentRecord]:
        """Open incidents first, then the newest."""
        found: list[IncidentRecord] = await self._store.run(
            lambda tx: read_incidents(tx, limit=limit, open_only=open_only))
        return found

    async def entries(self, incident_id: str) -> list[EntryRecord]:
        """The timeline, in order, each entry with the message that carried it."""
        rows = await self._store.run(lambda tx: tx.fetchall(
            "SELECT e.id, e.incident_id, e.kind, e.at, e.text, e.public_text, e.next_update_at,"
            " e.seq, (SELECT MIN(m.id) FROM messages m WHERE m.incident_entry = e.id)"
            " FROM incident_entries e WHERE e.incident_id = ? ORDER BY e.seq", incident_id,
        ))
        return [EntryRecord(*row) for row in rows]

    async def traces(self, incident_id: str) -> list[Trace]:
        """Every delivery of every message sent for the incident, oldest message first."""
        rows = await self._store.run(lambda tx: tx.fetchall(
            "SELECT d.message_id, e.kind, d.contact, d.status, d.channel, d.addresses,"
            " m.created_at, CASE WHEN d.status = 'pending' AND EXISTS (SELECT 1 FROM attempts a"
            " WHERE a.message_id = d.message_id AND a.contact = d.contact AND (a.state ="
            " 'sending' OR a.verdict IN ('accepted', 'unknown'))) THEN 1 ELSE 0 END"
            " FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " LEFT JOIN incident_entries e ON e.id = m.incident_entry"
            " WHERE m.incident_id = ? ORDER BY m.created_at, d.position", incident_id,
        ))
        return [Trace(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))
                for row in rows]

    async def acknowledgements(self, incident_id: str) -> list[Acknowledgement]:
        """Who acknowledged a message of the incident, where and when, in order."""
        rows = await self._store.run(lambda tx: tx.fetchall(
            "SELECT n.contact, n.channel, n.received_at, n.message_id, e.kind FROM inbound n"
            " JOIN messages m ON m.id = n.message_id"
            " LEFT JOIN incident_entries e ON e.id = m.incident_entry"
            " WHERE m.incident_id = ? AND n.kind = 'ack' AND n.contact IS NOT NULL"
            " ORDER BY n.received_at, n.id", incident_id,
        ))
        return [Acknowledgement(*row) for row in rows]

    # -- timers: the promised update, the first acknowledgement -------------------------

    async def due_reminders(self, now: float) -> list[IncidentRecord]:
        """Open incidents whose promised update is late and whose owner was not reminded
        (nor is being, by another process whose claim still holds)."""
        rows = await self._store.run(lambda tx: tx.fetchall(
            f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE resolved_at IS NULL"  # noqa: S608
            " AND next_update_at IS NOT NULL AND next_update_at <= ? AND reminded_at IS NULL"
            " AND (reminder_claimed_until IS NULL OR reminder_claimed_until < ?)"
            " ORDER BY next_update_at LIMIT 100", now, now,
        ))
        return [incident_from_row(row) for row in rows]

    async def claim_reminder(self, incident_id: str, promised: float, *, now: float,
                             until: float) -> bool:
        """Compare-and-set: of several processes, one reminds the owner of this promise.
        The claim lapses at ``until``: a process that died holding it leaves the reminder
        to the next (whose send is idempotent: it never goes out twice)."""
        changed = await self._store.run(lambda tx: tx.execute(
            "UPDATE incidents SET reminder_claimed_until = ? WHERE id = ? AND next_update_at = ?"
            " AND reminded_at IS NULL AND resolved_at IS NULL"
            " AND (reminder_claimed_until IS NULL OR reminder_claimed_until < ?)",
            until, incident_id, promised, now,
        ))
        return bool(changed)

    async def reminded(self, incident_id: str, promised: float, at: float) -> None:
        await self._store.run(lambda tx: tx.execute(
            "UPDATE incidents SET reminded_at = ?, reminder_claimed_until = NULL WHERE id = ?"
            " AND next_update_at = ?", at, incident_id, promised,
        ))

    async def next_reminder(self) -> float | None:
        """The earliest time a reminder could be due (a claimed one: when its claim lapses)."""
        row = await self._store.run(lambda tx: tx.fetchone(
            "SELECT MIN(CASE WHEN reminder_claimed_until > next_update_at"
            " THEN reminder_claimed_until ELSE next_update_at END) FROM incidents"
            " WHERE resolved_at IS NULL AND reminded_at IS NULL AND next_update_at IS NOT NULL"
        ))
        return None if row is None or row[0] is None else float(row[0])

    async def unannounced(self, now: float) -> list[tuple[IncidentRecord, Acknowledgement]]:
        """Open incidents with an owner, acknowledged by someone else and not announced:
        each with its first acknowledgement of a notice (an acknowledgement of the owner's
        own reminder is not one)."""
        columns = ", ".join(f"i.{c.strip()}" for c in INCIDENT_COLUMNS.split(","))
        rows = await self._store.run(lambda tx: tx.fetchall(
            f"SELECT {columns}, n.contact, n.channel, n.received_at, n.message_id, e.kind"  # noqa: S608
            " FROM incidents i JOIN messages m ON m.incident_id = i.id"
            " JOIN incident_entries e ON e.id = m.incident_entry"
            " JOIN inbound n ON n.message_id = m.id"
            " WHERE i.resolved_at IS NULL AND i.ack_announced_at IS NULL AND i.owner IS NOT NULL"
            " AND (i.announce_claimed_until IS NULL OR i.announce_claimed_until < ?)"
            " AND n.kind = 'ack' AND n.contact IS NOT NULL AND n.contact <> i.owner"
            " AND e.kind IN ('opened', 'update') ORDER BY n.received_at, n.id", now,
        ))
        first: dict[str, tuple[IncidentRecord, Acknowledgement]] = {}
        for row in rows:
            incident = incident_from_row(row[:12])
            first.setdefault(incident.incident_id, (incident, Acknowledgement(*row[12:])))
        return list(first.values())

    async def claim_announcement(self, incident_id: str, *, now: float, until: float) -> bool:
        changed = await self._store.run(lambda tx: tx.execute(
            "UPDATE incidents SET announce_claimed_until = ? WHERE id = ?"
            " AND ack_announced_at IS NULL"
            " AND (announce_claimed_until IS NULL OR announce_claimed_until < ?)",
            until, incident_id, now,
        ))
        return bool(changed)

    async def announced(self, incident_id: str, at: float) -> None:
        await self._store.run(lambda tx: tx.execute(
            "UPDATE incidents SET ack_announced_at = ?, announce_claimed_until = NULL"
            " WHERE id = ?", at, incident_id,
        ))

    # -- the public page -----------------------------------------------------------------

    async def public(self, limit: int) -> list[PublicIncident]:
        """Incidents with something public to say, open ones first, then the newest; each
        with its public entries only (nothing else of the incident is read)."""
        async def read(tx: Tx) -> list[PublicIncident]:
            incidents = await tx.fetchall(
                "SELECT i.id, i.opened_at, i.resolved_at, i.next_update_at FROM incidents i"
                " WHERE EXISTS (SELECT 1 FROM incident_entries e WHERE e.incident_id = i.id"
                " AND e.public_text IS NOT NULL)"
                " ORDER BY CASE WHEN i.resolved_at IS NULL THEN 0 ELSE 1 END, i.opened_at DESC"
                " LIMIT ?", limit,
            )
            if not incidents:
                return []
            marks = ", ".join("?" for _ in incidents)
            rows = await tx.fetchall(
                "SELECT id, incident_id, kind, at, public_text, next_update_at, seq"  # noqa: S608
                f" FROM incident_entries WHERE incident_id IN ({marks})"
                " AND public_text IS NOT NULL ORDER BY seq",
                *[row[0] for row in incidents],
            )
            entries: dict[str, list[EntryRecord]] = {}
            for entry_id, incident_id, kind, at, public_text, promised, seq in rows:
                # The internal text is not even read: nothing here can publish it.
                entries.setdefault(incident_id, []).append(EntryRecord(
                    entry_id, incident_id, kind, at, "", public_text, promised, seq))
            return [PublicIncident(row[0], row[1], row[2], row[3], tuple(entries[row[0]]))
                    for row in incidents]

        found: list[PublicIncident] = await self._store.run(read)
        return found

    async def feed_id(self) -> uuid.UUID:
        """This store's status feed identity, made once: entry ids derive from it, so a
        feed reader sees the same entry as the same, served or exported, forever."""
        async def read(tx: Tx) -> str:
            await tx.execute(
                "INSERT INTO settings_kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                _FEED_KEY, str(uuid.uuid4()),
            )
            row = await tx.fetchone("SELECT value FROM settings_kv WHERE key = ?", _FEED_KEY)
            return str(row[0]) if row else ""

        return uuid.UUID(await self._store.run(read))


async def read_incidents(tx: Tx, *, limit: int, open_only: bool = False,
                         resolved_since: float | None = None) -> list[IncidentRecord]:
    """Open incidents first, then the newest: all of them, only the open ones, or the open
    ones and those resolved since ``resolved_since`` (what the crisis board lists)."""
    where, params = "", list[object]()
    if open_only:
        where = " WHERE resolved_at IS NULL"
    elif resolved_since is not None:
        where, params = " WHERE resolved_at IS NULL OR resolved_at >= ?", [resolved_since]
    rows = await tx.fetchall(
        f"SELECT {INCIDENT_COLUMNS} FROM incidents{where}"  # noqa: S608
        " ORDER BY CASE WHEN resolved_at IS NULL THEN 0 ELSE 1 END, opened_at DESC LIMIT ?",
        *params, limit,
    )
    return [incident_from_row(row) for row in rows]


async def _next_seq(tx: Tx, incident_id: str, *, open_only: bool) -> int:
    """Lock the incident (PostgreSQL) and number its next entry."""
    lock = " FOR UPDATE" if tx.dialect == "postgres" else ""
    row = await tx.fetchone(f"SELECT resolved_at FROM incidents WHERE id = ?{lock}",  # noqa: S608
                            incident_id)
    if row is None:
        raise UnknownIncident(incident_id)
    if open_only and row[0] is not None:
        raise IncidentClosed(incident_id)
    last = await tx.fetchone("SELECT MAX(seq) FROM incident_entries WHERE incident_id = ?",
                             incident_id)
    return int(last[0] or 0) + 1 if last else 1


async def _insert_entry(tx: Tx, entry: EntryRecord, seq: int) -> None:
    await tx.execute(
        "INSERT INTO incident_entries (id, incident_id, seq, kind, at, text, public_text,"
        " next_update_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        entry.entry_id, entry.incident_id, seq, entry.kind, entry.at, entry.text,
        entry.public_text, entry.next_update_at,
    )


async def _stop(tx: Tx, incident_id: str, at: float, *, kinds: Sequence[str] | None) -> int:
    """Stop the incident's messages (those carrying entries of ``kinds``, or all): no attempt
    starts and no wait starts again after this; deliveries that nothing may have reached
    yet expire, waiting ones are settled. Returns how many deliveries stopped."""
    chosen = "SELECT id FROM messages WHERE incident_id = ? AND stopped_at IS NULL"
    params: list[object] = [incident_id]
    if kinds is not None:
        marks = ", ".join("?" for _ in kinds)
        chosen += (" AND incident_entry IN (SELECT id FROM incident_entries"  # noqa: S608
                   f" WHERE incident_id = ? AND kind IN ({marks}))")
        params += [incident_id, *kinds]
    ids = [str(row[0]) for row in await tx.fetchall(chosen, *params)]
    if not ids:
        return 0
    marks = ", ".join("?" for _ in ids)
    await tx.execute(f"UPDATE messages SET stopped_at = ? WHERE id IN ({marks})",  # noqa: S608
                     at, *ids)
    await tx.execute(
        "UPDATE deliveries SET status = 'expired', updated_at = ?"  # noqa: S608
        f" WHERE message_id IN ({marks}) AND status = 'pending' AND {NOTHING_MAYBE_SENT}",
        at, *ids,
    )
    stopped = await tx.execute(
        "UPDATE deliveries SET done = 1, next_action_at = NULL, waiting_for = NULL"  # noqa: S608
        f" WHERE message_id IN ({marks}) AND done = 0", *ids,
    )
    # A message still being recorded stops too: its recorder records no more of it.
    await tx.execute(
        "UPDATE messages SET state = 'done', finished_at = COALESCE(finished_at, ?)"  # noqa: S608
        f" WHERE id IN ({marks}) AND state IN ('recording', 'pending', 'waiting', 'queued')",
        at, *ids,
    )
    return stopped


def _numbered(entry: EntryRecord, seq: int) -> EntryRecord:
    return EntryRecord(entry.entry_id, entry.incident_id, entry.kind, entry.at, entry.text,
                       entry.public_text, entry.next_update_at, seq, entry.message_id)


__all__ = [
    "NOTICES",
    "Acknowledgement",
    "EntryRecord",
    "IncidentBook",
    "IncidentClosed",
    "IncidentRecord",
    "PublicIncident",
    "Trace",
    "UnknownIncident",
    "read_incidents",
]
