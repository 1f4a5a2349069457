"""Twilio resources as the sandbox stores them, and their JSON as Twilio renders it.

Records are immutable: a status follows from the record's timeline and the clock,
so that what a client reads back never moves backwards and needs no background task.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import TypeVar
from urllib.parse import urlencode

API = "/2010-04-01"
E164 = re.compile(r"\+[1-9][0-9]{1,14}")

# GSM 03.38: the basic set costs one septet, the extension set two (escape + char).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")

UNDELIVERED_TEXT: Mapping[int, str] = {
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
    63016: (
        "Failed to send freeform message because you are outside the allowed window. "
        "If you are using WhatsApp, please use a Message Template."
    ),
}


@dataclass(frozen=True, slots=True)
class Timeline:
    """When each status begins, in seconds of the peer's monotonic clock."""

    steps: tuple[tuple[float, str], ...]

    def status(self, now: float) -> str:
        return self.step(now)[1]

    def step(self, now: float) -> tuple[float, str]:
        current = self.steps[0]
        for step in self.steps[1:]:
            if step[0] > now:
                break
            current = step
        return current

    def reached(self, status: str, now: float) -> float | None:
        """The clock time ``status`` began, if it has."""
        return next((t for t, s in self.steps if s == status and t <= now), None)


@dataclass(frozen=True, slots=True)
class Timing:
    """How long a provider takes to move a message or call along, in seconds."""

    sent_after: float = 0.05
    delivered_after: float = 0.1
    call_duration: float = 0.1

    def message(self, t0: float, error_code: int | None = None) -> Timeline:
        """queued -> sent -> delivered; with an error code, undelivered (or failed,
        never sent, for the 63xxx channel errors such as WhatsApp's 63016)."""
        done = t0 + max(self.delivered_after, self.sent_after)
        if error_code is not None and 63000 <= error_code < 64000:
            return Timeline(((t0, "queued"), (done, "failed")))
        final = "delivered" if error_code is None else "undelivered"
        return Timeline(((t0, "queued"), (t0 + self.sent_after, "sent"), (done, final)))

    def call(self, t0: float, *, failed: bool = False) -> Timeline:
        if failed:
            return Timeline(((t0, "queued"), (t0 + self.sent_after, "failed")))
        answered = t0 + max(self.delivered_after, self.sent_after)
        return Timeline(
            (
                (t0, "queued"),
                (t0 + self.sent_after, "ringing"),
                (answered, "in-progress"),
                (answered + self.call_duration, "completed"),
            )
        )


@dataclass(frozen=True, slots=True)
class TwilioMessage:
    """A Message resource: outbound (sent through the API) or inbound (a reply)."""

    sid: str
    seq: int
    channel: str
    """"sms" or "whatsapp"."""
    direction: str
    to: str
    from_: str | None
    body: str
    created: datetime
    born: float
    timeline: Timeline
    error_code: int | None = None
    error_message: str | None = None
    status_callback: str | None = None
    messaging_service_sid: str | None = None
    content_sid: str | None = None
    content_variables: str | None = None

    def status(self, now: float) -> str:
        return self.timeline.status(now)


@dataclass(frozen=True, slots=True)
class TwilioCall:
    """A Call resource; ``twiml`` is kept verbatim as the client sent it."""

    sid: str
    seq: int
    to: str
    from_: str
    twiml: str | None
    url: str | None
    created: datetime
    born: float
    timeline: Timeline
    error_code: int | None = None
    status_callback: str | None = None
    status_callback_events: tuple[str, ...] = ("completed",)

    channel = "voice"

    def status(self, now: float) -> str:
        return self.timeline.status(now)


R = TypeVar("R", TwilioMessage, TwilioCall)


def rfc2822(when: datetime) -> str:
    """Twilio's date format: ``Thu, 24 Aug 2023 05:01:45 +0000``."""
    return format_datetime(when.astimezone(UTC).replace(microsecond=0))


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def error_body(status: int, code: int, message: str) -> dict[str, object]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def num_segments(body: str, channel: str) -> int:
    if channel == "whatsapp" or not body:
        return 1
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in body):
        units, single, multi = sum(2 if c in _GSM_EXTENDED else 1 for c in body), 160, 153
    else:
        units, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def _at(record: TwilioMessage | TwilioCall, clock_time: float) -> str:
    return rfc2822(record.created + timedelta(seconds=clock_time - record.born))


def account_json(sid: str, created: datetime, friendly_name: str) -> dict[str, object]:
    base = f"{API}/Accounts/{sid}"
    return {
        "date_created": rfc2822(created),
        "date_updated": rfc2822(created),
        "friendly_name": friendly_name,
        "owner_account_sid": sid,
        "sid": sid,
        "status": "active",
        "subresource_uris": {
            name: f"{base}/{path}.json"
            for name, path in (
                ("calls", "Calls"),
                ("messages", "Messages"),
                ("addresses", "Addresses"),
                ("incoming_phone_numbers", "IncomingPhoneNumbers"),
                ("usage", "Usage"),
                ("balance", "Balance"),
            )
        },
        "type": "Full",
        "uri": f"{base}.json",
    }


def message_json(m: TwilioMessage, account_sid: str, now: float) -> dict[str, object]:
    uri = f"{API}/Accounts/{account_sid}/Messages/{m.sid}"
    since, status = m.timeline.step(now)
    failed = status in ("undelivered", "failed")
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": m.body,
        "date_created": rfc2822(m.created),
        "date_sent": rfc2822(m.created),
        "date_updated": _at(m, since),
        "direction": m.direction,
        "error_code": m.error_code if failed else None,
        "error_message": m.error_message if failed else None,
        "from": m.from_,
        "messaging_service_sid": m.messaging_service_sid,
        "num_media": "0",
        "num_segments": str(num_segments(m.body, m.channel)),
        "price": None,
        "price_unit": "USD",
        "sid": m.sid,
        "status": status,
        "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
        "to": m.to,
        "uri": f"{uri}.json",
    }


def call_json(c: TwilioCall, account_sid: str, now: float) -> dict[str, object]:
    uri = f"{API}/Accounts/{account_sid}/Calls/{c.sid}"
    since, status = c.timeline.step(now)
    answered = c.timeline.reached("in-progress", now)
    ended = c.timeline.reached("completed", now)
    duration = None if answered is None or ended is None else str(round(ended - answered))
    return {
        "account_sid": account_sid,
        "annotation": None,
        "answered_by": None,
        "api_version": "2010-04-01",
        "caller_name": None,
        "date_created": rfc2822(c.created),
        "date_updated": _at(c, since),
        "direction": "outbound-api",
        "duration": duration,
        "end_time": None if ended is None else _at(c, ended),
        "forwarded_from": None,
        "from": c.from_,
        "from_formatted": c.from_,
        "group_sid": None,
        "parent_call_sid": None,
        "phone_number_sid": None,
        "price": None,
        "price_unit": "USD",
        "queue_time": "0",
        "sid": c.sid,
        "start_time": None if answered is None else _at(c, answered),
        "status": status,
        "subresource_uris": {
            name: f"{uri}/{path}.json"
            for name, path in (
                ("notifications", "Notifications"),
                ("recordings", "Recordings"),
                ("payments", "Payments"),
                ("events", "Events"),
                ("siprec", "Siprec"),
                ("streams", "Streams"),
                ("user_defined_message_subscriptions", "UserDefinedMessageSubscriptions"),
                ("user_defined_messages", "UserDefinedMessages"),
            )
        },
        "to": c.to,
        "to_formatted": c.to,
        "trunk_sid": None,
        "uri": f"{uri}.json",
    }


def _date_bounds(value: str) -> tuple[datetime, datetime]:
    """A ``DateSent`` value as a half-open interval: a whole day for ``YYYY-MM-DD``,
    one second for the ``YYYY-MM-DDTHH:MM:SSZ`` twilio-python sends for datetimes."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start, start + timedelta(days=1)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"Invalid date: {value!r}; expected YYYY-MM-DD") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    start = moment.astimezone(UTC).replace(microsecond=0)
    return start, start + timedelta(seconds=1)


def filter_records(records: Sequence[R], query: Mapping[str, str]) -> list[R]:
    """Apply To, From, DateSent, DateSent> (on or after) and DateSent< (on or before)."""
    bounds = {
        k: _date_bounds(query[k]) for k in ("DateSent", "DateSent>", "DateSent<") if k in query
    }

    def keep(record: R) -> bool:
        if "To" in query and record.to != query["To"]:
            return False
        if "From" in query and record.from_ != query["From"]:
            return False
        if (
            "DateSent" in bounds
            and not bounds["DateSent"][0] <= record.created < bounds["DateSent"][1]
        ):
            return False
        if "DateSent>" in bounds and record.created < bounds["DateSent>"][0]:
            return False
        return not ("DateSent<" in bounds and record.created >= bounds["DateSent<"][1])

    return [r for r in records if keep(r)]


def page(
    records: Sequence[R], query: Mapping[str, str], *, path: str, key: str, filters: Sequence[str]
) -> tuple[list[R], dict[str, object]]:
    """One page of ``records`` (newest first) and its metadata, in Twilio's list shape.

    Paging tokens are ``PA<sid>`` (the records after that one) and ``PB<sid>`` (the
    records before it), as Twilio's are, so pages stay stable while new records arrive.
    Returns the page's records and the envelope (whose record list is left empty).
    """
    ordered = sorted(records, key=lambda r: r.seq, reverse=True)
    try:
        size = int(query.get("PageSize", "50"))
        number = int(query.get("Page", "0"))
    except ValueError:
        raise ValueError("PageSize and Page must be integers") from None
    if not 1 <= size <= 1000 or number < 0:
        raise ValueError("PageSize must be between 1 and 1000 and Page not negative")
    token = query.get("PageToken")
    if token:
        where = next((n for n, r in enumerate(ordered) if r.sid == token[2:]), None)
        if where is None or token[:2] not in ("PA", "PB"):
            raise ValueError(f"Invalid PageToken: {token}")
        start = where + 1 if token[:2] == "PA" else max(0, where - size)
        stop = start + size if token[:2] == "PA" else where
    else:
        start, stop = number * size, number * size + size
    chosen = ordered[start:stop]
    kept: list[tuple[str, str]] = [(k, query[k]) for k in filters if k in query]

    def uri(extra: list[tuple[str, str]]) -> str:
        return f"{path}?{urlencode([*kept, ('PageSize', str(size)), *extra])}"

    next_uri = previous_uri = None
    if chosen and stop < len(ordered):
        next_uri = uri([("Page", str(number + 1)), ("PageToken", f"PA{chosen[-1].sid}")])
    if chosen and start > 0:
        previous_uri = uri([("Page", str(max(0, number - 1))), ("PageToken", f"PB{chosen[0].sid}")])
    current = [("Page", str(number))] + ([("PageToken", token)] if token else [])
    return chosen, {
        key: [],
        "end": start + len(chosen) - 1 if chosen else start,
        "first_page_uri": uri([("Page", "0")]),
        "next_page_uri": next_uri,
        "page": number,
        "page_size": size,
        "previous_page_uri": previous_uri,
        "start": start,
        "uri": uri(current),
    }
