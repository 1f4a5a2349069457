"""An incident from the first alert to the all-clear: open, update, resolve, and read back.

Each step is recorded on the incident's timeline, then sent through the router like any
broadcast (routing, fallback, escalation, the durable outbox), its message naming the
incident and the entry it carries. An update and the all-clear go to exactly those the
incident has reached so far, each on the channel that last worked for them first; the
all-clear stops every escalation of the incident in the same transaction that closes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from config.contacts import Contact
from config.directory import Directory
from config.incidents import SEVERITIES, IncidentSettings
from router.incidents.audience import reached
from router.incidents.report import IncidentReport, IncidentResult, build_report
from router.incidents.timers import IncidentTimers
from router.incidents.wording import Clockface, clean_public, clean_title
from router.model.clock import Clock
from router.model.errors import BadInput
from router.model.ids import new_id
from router.model.message import Message
from router.model.options import Goal, IncidentTag, SendOptions
from router.rules.routing import Routing
from router.sending.dispatch import Dispatcher, ResultHook
from router.store.base import Store
from router.store.incidents import (
    EntryRecord,
    IncidentBook,
    IncidentClosed,
    IncidentRecord,
)

_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
"""Typed in a hurry, read aloud on a call: no 0/o, 1/l/i."""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of an incident, checked, nothing recorded or sent yet: what a dry run
    shows, and what :meth:`Incidents.carry_out` does."""

    kind: str
    """opened, update or resolved."""
    message: Message
    audience: Callable[[], Iterable[Contact]]
    """Who it goes to, read again each time it is called: the groups for the opening
    (streamed from the contact files), then those the incident reached."""
    size: int
    """How many that is (at most, for several groups that share members)."""
    public: str | None
    options: SendOptions
    incident: IncidentRecord | None
    """None for the opening."""
    title: str = ""
    severity: str = "major"
    owner: str | None = None
    groups: tuple[str, ...] = ()
    variables: Mapping[str, str] = field(default_factory=dict)
    next_update: float | None = None
    """Seconds from when it is carried out until the next update is due."""


class Incidents:
    """``router.incidents``: the incident lifecycle over one router's parts."""

    def __init__(
        self,
        *,
        store: Store,
        dispatcher: Dispatcher,
        routing: Routing,
        contacts: Mapping[str, Contact],
        directory: Directory,
        groups: Mapping[str, Sequence[str]],
        settings: IncidentSettings,
        clock: Clock,
    ) -> None:
        """``contacts``: the config's own; ``directory``: the whole book (with the files')."""
        self._book = IncidentBook.of(store)
        self._dispatcher = dispatcher
        self._routing = routing
        self._directory = directory
        self._contacts = contacts
        self._groups = groups
        self.settings = settings
        self._clock = clock
        self.clockface = Clockface.named(settings.timezone)
        self.timers = IncidentTimers(book=self._book, dispatcher=dispatcher,
                                     find=self._find, settings=settings, clock=clock)
        """The owner's reminders and announcements (run by serve and worker)."""

    @property
    def book(self) -> IncidentBook:
        if self._book is None:
            raise BadInput("incidents: this store keeps no incidents (SQLite or PostgreSQL do)")
        return self._book

    # -- the three steps -----------------------------------------------------------------

    async def open(self, message: Message, *, title: str, group: str | Sequence[str],
                   owner: str | None = None, severity: str = "major",
                   next_update: float | None = None, public_text: str | None = None,
                   variables: Mapping[str, str] | None = None, until: Goal = "accepted",
                   expires_after: float | None = None,
                   on_result: ResultHook | None = None) -> IncidentResult:
        """Open an incident for ``group`` (a group, or several) and broadcast its first
        notice. ``next_update``: seconds until the next update is due (the owner is
        reminded when it is late; needs an owner, ``owner`` or ``[incidents] owner``).
        ``variables``: the template variables it was opened with, reused by later steps.
        Raises BadInput before anything is recorded or sent."""
        step = await self.prepare_open(
            message, title=title, group=group, owner=owner, severity=severity,
            next_update=next_update, public_text=public_text, variables=variables,
            until=until, expires_after=expires_after)
        return await self.carry_out(step, on_result=on_result)

    async def update(self, incident_id: str, message: Message, *,
                     next_update: float | None = None, public_text: str | None = None,
                     owner: str | None = None, until: Goal = "accepted",
                     expires_after: float | None = None,
                     on_result: ResultHook | None = None) -> IncidentResult:
        """Send an update to everyone the incident has reached so far, and record it. Its
        ``next_update`` (or none) replaces the promise made before; ``owner`` hands the
        incident over to another contact."""
        step = await self.prepare_update(incident_id, message, next_update=next_update,
                                         public_text=public_text, owner=owner, until=until,
                                         expires_after=expires_after)
        return await self.carry_out(step, on_result=on_result)

    async def resolve(self, incident_id: str, message: Message, *,
                      public_text: str | None = None, until: Goal = "accepted",
                      expires_after: float | None = None,
                      on_result: ResultHook | None = None) -> IncidentResult:
        """Close the incident: stop every escalation of its messages, then send the
        all-clear to exactly those it reached."""
        step = await self.prepare_resolve(incident_id, message, public_text=public_text,
                                          until=until, expires_after=expires_after)
        return await self.carry_out(step, on_result=on_result)

    # -- each step checked first (a dry run stops there), then carried out -------------

    async def prepare_open(self, message: Message, *, title: str, group: str | Sequence[str],
                           owner: str | None = None, severity: str = "major",
                           next_update: float | None = None, public_text: str | None = None,
                           variables: Mapping[str, str] | None = None,
                           until: Goal = "accepted",
                           expires_after: float | None = None) -> Step:
        title = clean_title(title)
        if severity not in SEVERITIES:
            raise BadInput(f"--severity: must be one of {', '.join(SEVERITIES)}")
        groups = (group,) if isinstance(group, str) else tuple(group)
        audience, size = await self._members(groups)
        return self._checked(Step(
            "opened", message, audience, size, clean_public(public_text),
            _options(until, expires_after), None, title, severity,
            await self._owner(owner, next_update), groups, dict(variables or {}), next_update))

    async def prepare_update(self, incident_id: str, message: Message, *,
                             next_update: float | None = None,
                             public_text: str | None = None, owner: str | None = None,
                             until: Goal = "accepted",
                             expires_after: float | None = None) -> Step:
        incident = await self._open_incident(incident_id, "update")
        people = await self.audience(incident.incident_id)
        return self._checked(Step(
            "update", message, lambda: people, len(people), clean_public(public_text),
            _options(until, expires_after), incident,
            owner=await self._owner(owner or incident.owner, next_update),
            next_update=next_update))

    async def prepare_resolve(self, incident_id: str, message: Message, *,
                              public_text: str | None = None, until: Goal = "accepted",
                              expires_after: float | None = None) -> Step:
        incident = await self._open_incident(incident_id, "resolved")
        people = await self.audience(incident.incident_id)
        return self._checked(Step(
            "resolved", message, lambda: people, len(people), clean_public(public_text),
            _options(until, expires_after), incident))

    def _fitting(self, message: Message, contacts: Sequence[Contact]) -> list[Contact]:
        """Those of ``contacts`` some channel can carry ``message`` to (the others were
        checked before, or joined the audience since: the incident is resolved already)."""
        planner = self._routing.planner(message)
        return [contact for contact in contacts if not planner.too_long_everywhere(contact)]

    def _checked(self, step: Step) -> Step:
        self._routing.refuse_unfit(self._routing.planner(step.message), step.audience())
        return step

    async def carry_out(self, step: Step, *, on_result: ResultHook | None = None,
                        ) -> IncidentResult:
        """Record the step on the timeline, then send it (the all-clear first stops the
        incident's escalations, in the transaction that closes it)."""
        now = self._clock.time()
        promised = None if step.next_update is None else now + step.next_update
        stopped = 0
        contacts, size = step.audience, step.size
        if step.incident is None:
            entry = await self._create(step, now, promised)
            audience: dict[str, object] = {"incident": entry.incident_id,
                                           "groups": list(step.groups)}
        else:
            incident_id = step.incident.incident_id
            entry = EntryRecord(new_id("ent"), incident_id, step.kind, now, step.message.text,
                                step.public, promised)
            try:
                if step.kind == "resolved":
                    entry, stopped = await self.book.resolve(entry)
                    # Who it reached is read again now that nothing of it can start: a
                    # first notice still going out may have reached more since the check.
                    people = self._fitting(step.message, await self.audience(incident_id))
                    contacts, size = (lambda: people), len(people)
                else:
                    entry = await self.book.update(entry, owner=step.owner)
            except IncidentClosed:
                raise _closed(incident_id, step.kind) from None
            audience = {"incident": incident_id, "to": [c.name for c in contacts()]}
        result = None
        if size:
            result = await self._dispatcher.run(
                step.message, contacts, audience=audience, on_result=on_result,
                options=dataclasses.replace(step.options, incident=IncidentTag(
                    entry.incident_id, entry.entry_id)),
            )
        return IncidentResult(entry.incident_id, entry, result, stopped=stopped)

    async def _create(self, step: Step, now: float, promised: float | None) -> EntryRecord:
        while True:  # a new id on the rare collision: ids are short, to be typed
            incident_id = "inc-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))
            entry = EntryRecord(new_id("ent"), incident_id, "opened", now, step.message.text,
                                step.public, promised, seq=1)
            record = IncidentRecord(incident_id, step.title, step.severity, step.owner,
                                    step.groups, step.variables, now, updated_at=now,
                                    next_update_at=promised)
            if await self.book.open(record, entry):
                return entry

    # -- reading -------------------------------------------------------------------------

    async def get(self, incident_id: str) -> IncidentRecord:
        """The incident; BadInput if there is none by that id."""
        incident = await self.book.load(incident_id.strip())
        if incident is None:
            raise BadInput(f"incident: no incident {incident_id!r} (see `backchannel incident"
                           " list`)")
        return incident

    async def recent(self, *, limit: int = 50,
                     open_only: bool = False) -> list[IncidentRecord]:
        """Open incidents first, then the newest."""
        return await self.book.incidents(limit=limit, open_only=open_only)

    async def report(self, incident_id: str) -> IncidentReport:
        """Its timeline in order, who was reached and acknowledged, who never was."""
        incident = await self.get(incident_id)
        book = self.book
        return build_report(incident, await book.entries(incident.incident_id),
                            await book.traces(incident.incident_id),
                            await book.acknowledgements(incident.incident_id),
                            self._clock.time())

    async def audience(self, incident_id: str) -> list[Contact]:
        """Everyone the incident has reached so far (accepted, delivered, acknowledged, or
        maybe arrived), each with the channel that last worked for them ranked first."""
        book = self.book
        return reached(await book.traces(incident_id), await book.acknowledgements(incident_id),
                       self._contacts, self._routing.ranking)

    def opening_context(self, *, title: str, severity: str,
                        next_update: float | None) -> dict[str, str]:
        """Template variables known when an incident opens (no ``--var`` needed)."""
        now = self._clock.time()
        found = {"title": title.strip(), "severity": severity, "opened_at":
                 self.clockface.hhmm(now), "last_update": self.clockface.hhmm(now)}
        if next_update is not None:
            found["next_update"] = self.clockface.hhmm(now + next_update)
        return found

    async def context(self, incident_id: str, *,
                      next_update: float | None = None) -> dict[str, str]:
        """Template variables an update or the all-clear gets without ``--var``: the ones
        the incident was opened with, its title, severity, id, when it opened and when it
        was last updated (and the next update's time, when one is promised)."""
        incident = await self.get(incident_id)
        face = self.clockface
        found = {**incident.variables, "incident": incident.incident_id,
                 "title": incident.title, "severity": incident.severity,
                 "opened_at": face.hhmm(incident.opened_at),
                 "last_update": face.hhmm(incident.updated_at)}
        if next_update is not None:
            found["next_update"] = face.hhmm(self._clock.time() + next_update)
        return found

    # -- checks --------------------------------------------------------------------------

    async def _find(self, name: str) -> Contact | None:
        """A contact by name: the config's, else the contact files' (read in a thread)."""
        found = self._contacts.get(name)
        if found is None and self._directory.files:
            found = await asyncio.to_thread(self._directory.find, name)
        return found

    async def _owner(self, owner: str | None, next_update: float | None) -> str | None:
        """The owner (``owner``, else ``[incidents] owner``); a promise needs one."""
        chosen = owner or self.settings.owner
        if chosen is not None and await self._find(chosen) is None:
            where = "--owner" if owner else "incidents.owner"
            raise BadInput(f"{where}: unknown contact {chosen!r}")
        if next_update is not None:
            if next_update <= 0:
                raise BadInput("--next-update: must be longer than zero")
            if chosen is None:
                raise BadInput("--next-update: needs an owner to remind when it is late:"
                               " give --owner CONTACT, or set [incidents] owner")
        return chosen

    async def _members(
        self, groups: Sequence[str]
    ) -> tuple[Callable[[], Iterable[Contact]], int]:
        """The groups' members, streamed (a contact in two groups once), and how many."""
        if not groups:
            raise BadInput("--group: give at least one group")
        for name in groups:
            if name not in self._groups:
                raise BadInput(f"--group: unknown group {name!r}")
        # The contact files are checked once (a ConfigError lists every bad line).
        summary = await asyncio.to_thread(self._directory.summary)
        size = sum(summary.groups[name] for name in dict.fromkeys(groups))
        if size == 0:
            raise BadInput("--group: no contacts")
        directory = self._directory

        def members() -> Iterator[Contact]:
            if len(groups) == 1:
                yield from directory.group(groups[0])
                return
            seen: set[str] = set()
            for name in dict.fromkeys(groups):
                for contact in directory.group(name):
                    if contact.name not in seen:
                        seen.add(contact.name)
                        yield contact

        return members, size

    async def _open_incident(self, incident_id: str, kind: str) -> IncidentRecord:
        incident = await self.get(incident_id)
        if incident.resolved_at is not None:
            raise _closed(incident.incident_id, kind, self.clockface.stamp(incident.resolved_at))
        return incident


def _closed(incident_id: str, kind: str, when: str | None = None) -> BadInput:
    at = f" at {when}" if when else ""
    if kind == "resolved":
        return BadInput(f"incident {incident_id} is resolved already{at}: nothing was sent")
    return BadInput(f"incident {incident_id} was resolved{at}: it takes no more updates"
                    " (open a new incident); nothing was sent")


def _options(until: Goal, expires_after: float | None) -> SendOptions:
    try:
        return SendOptions(until=until, expires_after=expires_after)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


