"""``[incidents]``: who answers for an incident, and how its public page reads."""

from __future__ import annotations

import zoneinfo
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

Severity = Literal["minor", "major", "critical"]
SEVERITIES: tuple[Severity, ...] = ("minor", "major", "critical")


class IncidentSettings(BaseModel):
    """``[incidents]``: defaults for ``backchannel incident`` and the public status page."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    owner: str | None = None
    """The contact who answers for an incident unless ``--owner`` names another: they get
    the reminder when a promised update is late, and the acknowledgement announcement."""
    announce_acks: bool = False
    """Tell the owner who acknowledged first ("alice acknowledged on telegram at 14:09")."""
    timezone: str | None = None
    """IANA zone for times people read (reminders, the status page); default: this host's."""
    status_title: str = Field(default="Service status", min_length=1, max_length=200)
    """The heading of the public status page and the title of its feed."""
    status_url: AnyHttpUrl | None = None
    """Where the public page is published (the exported copy, or serve's ``/status``): the
    feed links to it. Default: ``[webhooks] public_url`` + ``/status``."""
    public_incidents: int = Field(default=20, ge=1, le=1000)
    """How many incidents the public page and feed show, newest first."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str | None) -> str | None:
        if name is not None:
            try:
                zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError("is not a known IANA time zone (e.g. Europe/Paris)") from None
        return name

    @field_validator("status_title")
    @classmethod
    def _one_line(cls, title: str) -> str:
        if any(ord(char) < 0x20 for char in title):
            raise ValueError("must be one line of printable text")
        return title
