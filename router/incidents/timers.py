"""The promised next update, and the first acknowledgement: timers kept in the store.

``backchannel serve`` and ``backchannel worker`` run them (as they run escalation), so a
restarted server keeps them. Each timer fires once however many processes watch it: a
compare-and-set claim in the store picks one, and the owner's message carries an
idempotency key, so a process that dies mid-way leaves it to the next without a second
message ever going out (the outbox attaches to it or resumes it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable

from config.contacts import Contact
from config.incidents import IncidentSettings
from router.incidents import wording
from router.incidents.wording import Clockface
from router.model.clock import Clock
from router.model.message import Message
from router.model.options import Goal, IncidentTag, SendOptions
from router.sending.dispatch import Dispatcher
from router.store.incidents import Acknowledgement, EntryRecord, IncidentBook, IncidentRecord

log = logging.getLogger("backchannel.incidents")
TICK = 1.0
"""Upper bound between looks at the store: another process may add an earlier timer."""
CLAIM = 120.0
"""Seconds a claim on a timer holds: after that, a process that died holding it is
replaced (its message, keyed, is attached to or resumed, never sent twice)."""


class IncidentTimers:
    """Reminds owners of late updates and tells them of the first acknowledgement."""

    def __init__(
        self,
        *,
        book: IncidentBook | None,
        dispatcher: Dispatcher,
        find: Callable[[str], Awaitable[Contact | None]],
        settings: IncidentSettings,
        clock: Clock,
    ) -> None:
        self._book = book
        self._dispatcher = dispatcher
        self._find = find
        self._settings = settings
        self._clock = clock
        self._face = Clockface.named(settings.timezone)

    async def run(self) -> None:
        """Until cancelled: fire what is due, then sleep until the next one may be."""
        if self._book is None:
            return
        while True:
            pause = TICK
            try:
                await self.fire_due()
                due = await self._book.next_reminder()
                if due is not None:
                    pause = min(pause, max(0.05, due - self._clock.time()))
            except Exception:  # the next tick tries again; a timer is never dropped
                log.exception("incident timers failed; retrying")
            await asyncio.sleep(pause)

    async def fire_due(self) -> int:
        """Send every reminder and announcement that is due; returns how many this
        process sent (another may have sent the others)."""
        if self._book is None:
            return 0
        sent = 0
        now = self._clock.time()
        for incident in await self._book.due_reminders(now):
            sent += await self._remind(incident, now)
        if self._settings.announce_acks:
            for incident, ack in await self._book.unannounced(now):
                sent += await self._announce(incident, ack, now)
        return sent

    async def _remind(self, incident: IncidentRecord, now: float) -> int:
        book, promised = self._require(), incident.next_update_at
        assert promised is not None
        if not await book.claim_reminder(incident.incident_id, promised, now=now,
                                         until=now + CLAIM):
            return 0  # another process has it
        message = wording.reminder(incident.incident_id, incident.title,
                                   self._face.hhmm(promised), self._face.hhmm(incident.updated_at))
        key = f"incident:{incident.incident_id}:reminder:{promised!r}"
        sent = await self._tell_owner(incident, "reminder", message, key, "acknowledged", now)
        await book.reminded(incident.incident_id, promised, self._clock.time())
        return sent

    async def _announce(self, incident: IncidentRecord, ack: Acknowledgement,
                        now: float) -> int:
        book = self._require()
        if not await book.claim_announcement(incident.incident_id, now=now, until=now + CLAIM):
            return 0
        message = wording.announcement(incident.incident_id, incident.title, ack.contact,
                                       ack.channel, self._face.hhmm(ack.at))
        key = f"incident:{incident.incident_id}:first-ack"
        sent = await self._tell_owner(incident, "announcement", message, key, "accepted", now)
        await book.announced(incident.incident_id, self._clock.time())
        return sent

    async def _tell_owner(self, incident: IncidentRecord, kind: str, message: Message,
                          key: str, until: Goal, now: float) -> int:
        """The message to the owner, through the router like any alert: their own ranked
        channels, escalated until ``until``."""
        owner = await self._find(incident.owner) if incident.owner else None
        entry_id = "ent_" + hashlib.sha256(key.encode()).hexdigest()[:26]
        entry = await self._require().note(EntryRecord(entry_id, incident.incident_id, kind,
                                                       now, message.text))
        if owner is None or entry is None:
            log.warning("%s: no owner to send the %s to (%r is not a contact)",
                        incident.incident_id, kind, incident.owner)
            return 0
        result = await self._dispatcher.run(
            message, lambda: [owner], audience={"incident": incident.incident_id, "to": owner.name},
            options=SendOptions(idempotency_key=key, until=until,
                                incident=IncidentTag(incident.incident_id, entry.entry_id)),
        )
        log.info("%s: %s sent to %s (%s)", incident.incident_id, kind, owner.name,
                 result.results[0].status.value if result.results else "nothing")
        return 1

    def _require(self) -> IncidentBook:
        assert self._book is not None
        return self._book
