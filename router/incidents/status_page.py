"""The public status page and its Atom feed: nothing but the incidents' public words.

Only what an operator wrote for the public (``--public-text``, a template's ``public``
field) is read from the store, with times and whether an incident is over; the internal
text, the title, contacts and addresses never are, so no template mistake can publish
them. Pages are rendered with their own Jinja2 environment, autoescaping (the message
templates are plain text and do not escape), from text cleaned of control and
direction-override characters (XML refuses most control characters even escaped).

``backchannel serve`` serves ``/status`` and ``/status/feed.atom``;
``backchannel status-page export DIR`` writes the same two files, so that a cron job can
publish them somewhere that does not fail with the systems they report on.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from jinja2 import Environment, PackageLoader, StrictUndefined

from config.incidents import IncidentSettings
from router.incidents.wording import Clockface
from router.model.clock import Clock
from router.store.incidents import EntryRecord, IncidentBook, PublicIncident

LABELS = {"opened": "Investigating", "update": "Update", "resolved": "Resolved"}
PAGE_FILE, FEED_FILE = "index.html", "feed.atom"
_UNSAFE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff\ufffe\uffff]"
)


def printable(text: str) -> str:
    """Text a page (and XML) can carry: control, direction-override and non-characters
    replaced, line breaks kept as ``\\n``."""
    return _UNSAFE.sub("\ufffd", text.replace("\r\n", "\n").replace("\r", "\n"))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The public incidents at one moment, and the feed's identity."""

    incidents: tuple[PublicIncident, ...]
    feed_id: uuid.UUID
    generated_at: float


@dataclass(frozen=True, slots=True)
class Rendered:
    html: str
    atom: str


class StatusPage:
    """Renders the page and the feed from one store."""

    def __init__(self, book: IncidentBook, settings: IncidentSettings, clock: Clock, *,
                 public_url: str | None = None) -> None:
        """``public_url``: where ``backchannel serve`` is reached (``[webhooks]``)."""
        self._book = book
        self._settings = settings
        self._clock = clock
        self._face = Clockface.named(settings.timezone)
        self._served = (public_url.rstrip("/") + "/status") if public_url else None
        self._environment = Environment(
            loader=PackageLoader("router.incidents", "templates"),
            autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    async def snapshot(self) -> Snapshot:
        incidents = await self._book.public(self._settings.public_incidents)
        return Snapshot(tuple(incidents), await self._book.feed_id(), self._clock.time())

    def served(self, snapshot: Snapshot) -> Rendered:
        """As ``backchannel serve`` answers ``/status`` and ``/status/feed.atom``."""
        page = str(self._settings.status_url) if self._settings.status_url else self._served
        feed = f"{self._served}/feed.atom" if self._served else None
        return self._render(snapshot, feed_href="/status/feed.atom", page_url=page,
                            self_url=feed)

    def exported(self, snapshot: Snapshot) -> Rendered:
        """As written by ``status-page export``: the feed beside the page."""
        page = str(self._settings.status_url) if self._settings.status_url else None
        return self._render(snapshot, feed_href=FEED_FILE, page_url=page,
                            self_url=urljoin(page, FEED_FILE) if page else None)

    async def export(self, directory: Path) -> list[Path]:
        """Write the page and the feed into ``directory``, each replaced atomically (a
        publisher copying them never reads half a file)."""
        rendered = self.exported(await self.snapshot())
        return await asyncio.to_thread(_write, directory, rendered)

    def _render(self, snapshot: Snapshot, *, feed_href: str, page_url: str | None,
                self_url: str | None) -> Rendered:
        title = printable(self._settings.status_title)
        incidents = [self._incident(snapshot.feed_id, incident)
                     for incident in snapshot.incidents]
        entries = sorted((entry for incident in incidents for entry in incident["entries"]),
                         key=lambda entry: entry["at"], reverse=True)
        face = self._face
        html = self._environment.get_template("status.html").render(
            title=title, incidents=incidents, feed_href=feed_href,
            ongoing=sum(1 for incident in incidents if incident["state"] == "ongoing"),
            generated=face.stamp(snapshot.generated_at),
        )
        atom = self._environment.get_template("feed.atom").render(
            title=title, feed_id=snapshot.feed_id.urn, page_url=page_url, self_url=self_url,
            updated=_rfc3339(entries[0]["at"] if entries else 0.0), entries=entries,
        )
        return Rendered(html, atom)

    def _incident(self, feed: uuid.UUID, incident: PublicIncident) -> dict[str, Any]:
        face = self._face
        anchor = "incident-" + uuid.uuid5(feed, incident.incident_id).hex[:12]
        ongoing = incident.resolved_at is None
        promised = incident.next_update_at if ongoing else None
        return {
            "anchor": anchor, "state": "ongoing" if ongoing else "resolved",
            "opened": face.stamp(incident.opened_at),
            "resolved": None if ongoing or incident.resolved_at is None
            else face.stamp(incident.resolved_at),
            "next_update": None if promised is None else face.hhmm(promised),
            "entries": [self._entry(feed, anchor, entry)
                        for entry in reversed(incident.entries)],
        }

    def _entry(self, feed: uuid.UUID, anchor: str, entry: EntryRecord) -> dict[str, Any]:
        face = self._face
        text = printable(entry.public_text or "")
        label = LABELS.get(entry.kind, "Update")
        content = text
        if entry.next_update_at is not None:
            content += f"\n\nNext update by {face.hhmm(entry.next_update_at)}."
        return {
            "id": uuid.uuid5(feed, entry.entry_id).urn, "anchor": anchor, "at": entry.at,
            "label": label, "text": text, "content": content,
            "stamp": face.stamp(entry.at), "iso": _rfc3339(entry.at),
            "title": f"{label}, {face.stamp(entry.at)}",
        }


def _rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write(directory: Path, rendered: Rendered) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [_replace(directory / PAGE_FILE, rendered.html),
            _replace(directory / FEED_FILE, rendered.atom)]


def _replace(path: Path, text: str) -> Path:
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # a static site: readable by the web server
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
