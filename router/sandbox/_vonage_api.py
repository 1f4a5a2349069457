"""Vonage's words, as the sandbox's Vonage peer speaks them: SMS API answers and status
codes, delivery receipt and inbound-message parameters, call events, and the two
signatures (the SMS API's ``sig`` and the Voice API's HS256 JWT with ``payload_hash``).

Checked against Vonage's public OpenAPI descriptions (SMS API 1.0.10, Voice API 1.3.7,
Account API): field names, status codes and their texts, and the call statuses.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

SMS_ERRORS: Mapping[int, str] = {
    1: "Throttled", 2: "Missing params", 3: "Invalid params", 4: "Bad Credentials",
    5: "Internal Error", 6: "Invalid Message", 7: "Number Barred",
    8: "Partner Account Barred", 9: "Partner Quota Violation", 10: "Too Many Existing Binds",
    11: "Account Not Enabled For HTTP", 12: "Message Too Long", 14: "Invalid Signature",
    15: "Invalid Sender Address", 22: "Invalid Network Code", 23: "Invalid Callback Url",
    29: "Non-Whitelisted Destination", 32: "Signature And API Secret Disallowed",
    33: "Number De-activated",
}  # fmt: skip
"""The SMS API's ``messages[].status`` codes and their ``error-text``."""
CALL_FLOW = ("started", "ringing", "answered", "completed")
DIGITS = "0123456789"

# GSM 03.38 (the sandbox imports nothing of the router's: the same table, kept apart).
_GSM = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€\f"
)


def parts(text: str, kind: str) -> int:
    """How many SMS parts Vonage splits a text into (GSM-7 160/153, UCS-2 70/67)."""
    if kind == "unicode" or any(char not in _GSM for char in text):
        units, single, multi = len(text.encode("utf-16-le")) // 2, 70, 67
    else:
        units, single, multi = len(text), 160, 153
    return 1 if units <= single else math.ceil(units / multi)


def message_id() -> str:
    """Vonage's SMS ids: 16 or so upper-case hex digits."""
    return secrets.token_hex(8).upper()


def sms_answer(entries: list[dict[str, str]]) -> web.Response:
    return web.json_response({"message-count": str(len(entries)), "messages": entries})


def sms_error(code: int, text: str = "") -> web.Response:
    return sms_answer([{"status": str(code), "error-text": text or SMS_ERRORS.get(code, "")}])


def problem(status: int, title: str, detail: str = "", **extra: object) -> web.Response:
    """The Voice and Account APIs' error shape (RFC 7807 problem details)."""
    body: dict[str, object] = {
        "type": f"https://developer.nexmo.com/api-errors#{status}", "title": title,
        "detail": detail or title, "instance": str(uuid.uuid4()), **extra,
    }
    return web.json_response(body, status=status)


def sms_signature(params: Mapping[str, str], secret: str, method: str) -> str:
    """The ``sig`` Vonage puts on a signed SMS webhook (its documented algorithm)."""
    text = "".join(f"&{k}={str(v).replace('&', '_').replace('=', '_')}"
                   for k, v in sorted(params.items()) if k != "sig")
    if method == "md5hash":
        return hashlib.md5((text + secret).encode(), usedforsecurity=False).hexdigest()
    digest = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256,
              "sha512": hashlib.sha512}[method]
    return hmac.new(secret.encode(), text.encode(), digest).hexdigest().upper()


def signed_params(params: Mapping[str, str], secret: str | None,
                  method: str | None) -> dict[str, str]:
    """A webhook's parameters, with ``timestamp``, ``nonce`` and ``sig`` when signing."""
    out = dict(params)
    if secret is None or method is None:
        return out
    out |= {"timestamp": str(int(time.time())), "nonce": str(uuid.uuid4())}
    out["sig"] = sms_signature(out, secret, method)
    return out


def voice_jwt(body: bytes, secret: str, api_key: str, application_id: str | None) -> str:
    """The bearer token on a signed voice webhook: HS256 with the signature secret."""
    import jwt

    claims: dict[str, object] = {
        "iat": int(time.time()), "jti": str(uuid.uuid4()), "iss": "Vonage",
        "payload_hash": hashlib.sha256(body).hexdigest(), "api_key": api_key,
    }
    if application_id:
        claims["application_id"] = application_id
    return jwt.encode(claims, secret, algorithm="HS256")


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class VonageSms:
    """One SMS the peer took: every part has its own id and its own receipt."""

    seq: int
    to: str
    from_: str
    text: str
    kind: str
    client_ref: str | None
    callback: str | None
    ids: tuple[str, ...]
    born: float
    failure: int | None = None
    """The delivery receipt's err-code when it is to fail (an ``undelivered`` fault)."""
    receipts: list[tuple[str, str]] = field(default_factory=list)
    """(part id, status) of every receipt posted."""

    @property
    def message_id(self) -> str:
        return self.ids[0]


@dataclass(slots=True)
class VonageCall:
    """One call the peer placed; its status moves along ``steps``."""

    seq: int
    uuid: str
    conversation_uuid: str
    to: str
    from_: str
    ncco: list[dict[str, object]]
    event_url: str | None
    born: float
    steps: tuple[tuple[float, str], ...]
    events: list[str] = field(default_factory=list)

    def status(self, now: float) -> str:
        current = self.steps[0][1]
        for when, status in self.steps:
            if when <= now:
                current = status
        return current

    def spoken(self) -> str:
        """The text of the first ``talk`` action: what the callee hears first."""
        talk = next((a for a in self.ncco if a.get("action") == "talk"), {})
        return str(talk.get("text", ""))

    def input_url(self) -> str | None:
        """Where the ``input`` action sends the key pressed, if the call asks for one."""
        action = next((a for a in self.ncco if a.get("action") == "input"), None)
        urls = action.get("eventUrl") if action else None
        return str(urls[0]) if isinstance(urls, list) and urls else None

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "uuid": self.uuid, "conversation_uuid": self.conversation_uuid,
            "to": {"type": "phone", "number": self.to},
            "from": {"type": "phone", "number": self.from_},
            "status": self.status(now), "direction": "outbound",
        }
