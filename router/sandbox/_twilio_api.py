"""Request parsing, validation and error answers of the Twilio peer, as Twilio words them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from http import HTTPStatus

from aiohttp import web

from router.sandbox._twilio_model import (
    E164,
    TwilioCall,
    TwilioMessage,
    error_body,
    now_utc,
    num_segments,
    rfc2822,
)
from router.sandbox.faults import Fault


def bare(address: str) -> str:
    """The phone number without the ``whatsapp:`` channel prefix."""
    return address.removeprefix("whatsapp:")


def fault_answer(fault: Fault, to: str) -> web.Response | None:
    """The error answer of a fault that fails the request outright, or None."""
    if fault.kind == "http":
        text = fault.message or HTTPStatus(fault.status).phrase
        return error(fault.status, fault.code or 20000 + fault.status, text)
    if fault.kind == "rate_limited":
        return rate_limited(fault.retry_after_seconds)
    if fault.kind == "reject_recipient":
        text = fault.message or f"The 'To' number {to} is not a valid phone number."
        return error(400, fault.code or 21211, text)
    return None


def status_params(
    account_sid: str, record: TwilioMessage | TwilioCall, status: str, sequence: int,
    call_duration: int,
) -> dict[str, str]:  # fmt: skip
    """The form fields of a status callback, as Twilio posts them."""
    params = {
        "AccountSid": account_sid, "ApiVersion": "2010-04-01", "From": record.from_ or "",
        "To": record.to,
    }  # fmt: skip
    if record.error_code is not None and status in ("failed", "undelivered"):
        params["ErrorCode"] = str(record.error_code)
    if isinstance(record, TwilioMessage):
        params |= {"MessageSid": record.sid, "MessageStatus": status}
        return params | {"SmsSid": record.sid, "SmsStatus": status}
    params |= call_callback(record, "initiated" if status == "queued" else status)
    params |= {"SequenceNumber": str(sequence), "Timestamp": rfc2822(now_utc())}
    if status == "completed":
        params["CallDuration"] = params["Duration"] = str(call_duration)
    return params


def inbound_params(account_sid: str, message: TwilioMessage) -> dict[str, str]:
    """The form fields of an incoming-message webhook."""
    params = {
        "AccountSid": account_sid, "ApiVersion": "2010-04-01", "Body": message.body,
        "From": message.from_ or "", "MessageSid": message.sid, "NumMedia": "0",
        "NumSegments": str(num_segments(message.body, message.channel)),
        "SmsMessageSid": message.sid, "SmsSid": message.sid, "SmsStatus": "received",
        "To": message.to,
    }  # fmt: skip
    if message.channel == "whatsapp":
        params |= {"ProfileName": "Sandbox User", "WaId": bare(params["From"]).lstrip("+")}
    return params


def call_callback(call: TwilioCall, status: str) -> dict[str, str]:
    return {
        "CallSid": call.sid, "CallStatus": status, "Called": call.to, "Caller": call.from_,
        "Direction": "outbound-api", "CallbackSource": "call-progress-events",
    }  # fmt: skip


def gather_action(twiml: str) -> str | None:
    try:
        # The TwiML comes from the application under test; expat in Python >= 3.7.1
        # refuses entity expansion bombs.
        root = ET.fromstring(twiml)  # noqa: S314
    except ET.ParseError:
        return None
    action = next((g.get("action") for g in root.iter("Gather") if g.get("action")), None)
    return action if action and action.startswith(("http://", "https://")) else None


async def read_form(request: web.Request) -> dict[str, str]:
    """Form fields, first value each; repeated ones (StatusCallbackEvent) space-joined."""
    data = await request.post()
    form: dict[str, str] = {}
    for key in data:
        values = [v for v in data.getall(key) if isinstance(v, str)]
        form[key] = " ".join(values) if key == "StatusCallbackEvent" else values[0]
    return form


def message_problem(form: Mapping[str, str]) -> tuple[int, str] | None:
    to, sender = form.get("To", ""), form.get("From", "")
    if not to:
        return 21604, "A 'To' phone number is required."
    if not E164.fullmatch(bare(to)):
        return 21211, f"The 'To' number {to} is not a valid phone number."
    if not sender and not form.get("MessagingServiceSid"):
        return 21603, "A 'From' phone number is required."
    if sender and to.startswith("whatsapp:") != sender.startswith("whatsapp:"):
        return 63007, "Twilio could not find a Channel with the specified From address"
    if not form.get("Body") and not form.get("ContentSid"):
        return 21602, "Message body is required."
    if len(form.get("Body", "")) > 1600:
        return 21617, "The concatenated message body exceeds the 1600 character limit."
    if not url_ok(form.get("StatusCallback")):
        return 21609, "Invalid StatusCallback url"
    return None


def call_problem(form: Mapping[str, str]) -> tuple[int, str] | None:
    to = form.get("To", "")
    if not to:
        return 21201, "No 'To' number is specified"
    if not E164.fullmatch(to):
        return 21211, f"The 'To' number {to} is not a valid phone number."
    if not form.get("From"):
        return 21213, "No 'From' number is specified"
    if not form.get("Twiml") and not form.get("Url"):
        return 21205, "Url parameter is required."
    if not url_ok(form.get("Url")) or not url_ok(form.get("StatusCallback")):
        return 21205, "Invalid URL"
    return None


def url_ok(url: str | None) -> bool:
    return url is None or url.startswith(("http://", "https://"))


def error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(error_body(status, code, message), status=status)


def rate_limited(retry_after: int) -> web.Response:
    response = error(429, 20429, "Too Many Requests")
    response.headers["Retry-After"] = str(retry_after)
    return response


def not_found(request: web.Request) -> web.Response:
    return error(404, 20404, f"The requested resource {request.path} was not found")
