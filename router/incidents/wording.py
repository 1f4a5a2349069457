"""The words an incident needs beyond the operator's: times people read, the owner's
reminder and announcement, and the checks on a title and a public text."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from router.model.errors import BadInput
from router.model.message import Message
from router.model.text import header_problem, text_problem

TITLE_MAX = 200
PUBLIC_MAX = 2000
"""Characters a public text may have: a status page is read in a hurry."""
CHANNEL_WORDS = {"whatsapp": "WhatsApp", "telegram": "Telegram", "sms": "SMS",
                 "voice": "a call", "email": "email"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Clockface:
    """Times as people read them, in ``[incidents] timezone`` (default: this host's)."""

    zone: tzinfo | None = None

    @classmethod
    def named(cls, name: str | None) -> Clockface:
        return cls(zoneinfo.ZoneInfo(name) if name else None)

    def local(self, timestamp: float) -> datetime:
        moment = datetime.fromtimestamp(timestamp, UTC)
        return moment.astimezone(self.zone) if self.zone is not None else moment.astimezone()

    def hhmm(self, timestamp: float) -> str:
        return f"{self.local(timestamp):%H:%M}"

    def short(self, timestamp: float) -> str:
        """``06-14 14:05``: a date and time in a narrow column."""
        return f"{self.local(timestamp):%m-%d %H:%M}"

    def stamp(self, timestamp: float) -> str:
        """``14 Jun 2026, 14:05 CEST``: a zone name or, failing one, its offset."""
        moment = self.local(timestamp)
        zone = moment.tzname() or f"{moment:%z}"
        return f"{moment.day} {moment:%b %Y, %H:%M} {zone}"

    def iso(self, timestamp: float) -> str:
        return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def clean_title(title: str) -> str:
    text = title.strip()
    if not text:
        raise BadInput("--title: is empty")
    if len(text) > TITLE_MAX:
        raise BadInput(f"--title: longer than {TITLE_MAX} characters")
    if problem := header_problem(text):
        raise BadInput(f"--title: {problem}")
    return text


def clean_public(text: str | None) -> str | None:
    """A public text, or None to publish nothing; bad input if it cannot be published."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if len(text) > PUBLIC_MAX:
        raise BadInput(f"--public-text: longer than {PUBLIC_MAX} characters")
    if problem := text_problem(text):
        raise BadInput(f"--public-text: {problem}")
    return text


def reminder(incident_id: str, title: str, promised: str, last: str) -> Message:
    """To the owner, when the update they promised is late."""
    return Message(
        text=(f"Reminder: the update on incident {incident_id} ({title}) was promised by"
              f" {promised}; the last one went out at {last}. Send it: backchannel incident"
              f" update {incident_id} TEXT"),
        subject=f"Update overdue: {title}",
        by_channel={"voice": f"Reminder: the update on the incident {title} was promised by"
                             f" {promised}, and has not been sent."},
    )


def announcement(incident_id: str, title: str, contact: str, channel: str,
                 at: str) -> Message:
    """To the owner, at the incident's first acknowledgement."""
    how = CHANNEL_WORDS.get(channel, channel)
    return Message(
        text=f"{contact} acknowledged incident {incident_id} ({title}) on {how} at {at}.",
        subject=f"Acknowledged: {title}",
    )
