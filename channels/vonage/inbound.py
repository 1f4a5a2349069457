"""What Vonage sends back: signed SMS delivery receipts and replies, call events and
key presses, and the status of a call when asked (no public URL to call back).

SMS webhooks are signed with the account's signature secret (``sig`` over the sorted
parameters, by ``[vonage] signature_method``) and carry a ``timestamp``; voice webhooks
carry a JWT (HS256, the same secret) whose ``payload_hash`` is the SHA-256 of the body.
Anything unsigned, forged or more than five minutes off gets 403 and changes nothing.
Vonage's statuses become neutral receipt states here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl

from channels.vonage.voice import VonageVoiceChannel
from router.model.inbound import (
    FORBIDDEN,
    Apply,
    Endpoint,
    KeyPressed,
    ReceiptEvent,
    ReceiptState,
    TextReceived,
    WebhookRequest,
    WebhookResponse,
)

MAX_SKEW = 300.0
"""Seconds a signed webhook's timestamp may be off from our clock."""

SMS_RECEIPTS: Mapping[str, ReceiptState] = {
    "accepted": ReceiptState.SENT, "buffered": ReceiptState.SENT,
    "delivered": ReceiptState.DELIVERED,
    "expired": ReceiptState.FAILED, "failed": ReceiptState.FAILED,
    "rejected": ReceiptState.FAILED,
}  # fmt: skip
"""Vonage's delivery receipt statuses; ``unknown`` says nothing and is ignored."""
CALL_STATES: Mapping[str, ReceiptState] = {
    "started": ReceiptState.QUEUED, "ringing": ReceiptState.SENT,
    "answered": ReceiptState.ANSWERED, "completed": ReceiptState.DELIVERED,
    "busy": ReceiptState.FAILED, "cancelled": ReceiptState.FAILED,
    "failed": ReceiptState.FAILED, "rejected": ReceiptState.FAILED,
    "timeout": ReceiptState.FAILED, "unanswered": ReceiptState.FAILED,
}  # fmt: skip
"""Vonage's call statuses (``machine`` says who answered, not how far the call got)."""
_DIGESTS = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256,
            "sha512": hashlib.sha512}  # fmt: skip
_CALL_ID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
"""A call's uuid (an SMS id is not one: the SMS API keeps no status to ask for)."""


def sms_signature(params: Mapping[str, str], secret: str, method: str) -> str:
    """Vonage's signature of a parameter set (without ``sig``), as hex.

    The parameters are sorted and written ``&key=value``, with ``&`` and ``=`` in
    values replaced by ``_``; ``md5hash`` is the MD5 of that string followed by the
    secret, the others an HMAC keyed with it.
    """
    text = "".join(
        f"&{key}={str(value).replace('&', '_').replace('=', '_')}"
        for key, value in sorted(params.items()) if key != "sig"
    )
    if method == "md5hash":
        return hashlib.md5((text + secret).encode(), usedforsecurity=False).hexdigest()
    return hmac.new(secret.encode(), text.encode(), _DIGESTS[method]).hexdigest()


def _fresh(stamp: object, now: float) -> bool:
    try:
        when = float(str(stamp))
    except ValueError:
        return False
    return abs(now - when) <= MAX_SKEW


class VonageWebhooks:
    """``/webhooks/vonage/sms/status``, ``/sms/inbound`` and ``/voice/event``."""

    def __init__(self, signature_secret: str | None, signature_method: str | None) -> None:
        self._secret = signature_secret
        self._method = signature_method

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("/webhooks/vonage/sms/status", self._sms_status),
            Endpoint("/webhooks/vonage/sms/inbound", self._sms_inbound),
            Endpoint("/webhooks/vonage/voice/event", self._voice_event),
        ]

    # -- authentication ----------------------------------------------------------------

    def _signed_params(self, request: WebhookRequest) -> dict[str, str] | None:
        """The webhook's parameters if Vonage signed them recently; else None."""
        if self._secret is None or self._method is None:
            return None  # nothing to check a signature with: nothing is believed
        params = _params(request)
        if params is None:
            return None
        signature = params.get("sig", "").lower()
        if not signature or not _fresh(params.get("timestamp"), time.time()):
            return None
        expected = sms_signature(params, self._secret, self._method)
        return params if hmac.compare_digest(signature, expected) else None

    def _signed_body(self, request: WebhookRequest) -> dict[str, object] | None:
        """The voice event's JSON if its bearer JWT is Vonage's and matches the body."""
        if self._secret is None:
            return None
        import jwt  # PyJWT

        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            claims = jwt.decode(token.strip(), self._secret, algorithms=["HS256"],
                                options={"require": ["iat"], "verify_iat": False})
        except jwt.PyJWTError:
            return None
        if not _fresh(claims.get("iat"), time.time()):
            return None
        digest = hashlib.sha256(request.body).hexdigest()
        if not hmac.compare_digest(str(claims.get("payload_hash", "")).lower(), digest):
            return None
        try:
            body = json.loads(request.body)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    # -- SMS -------------------------------------------------------------------------------

    async def _sms_status(self, request: WebhookRequest, apply: Apply) -> WebhookResponse:
        params = self._signed_params(request)
        if params is None:
            return FORBIDDEN
        message, status = params.get("messageId", ""), params.get("status", "").lower()
        state = SMS_RECEIPTS.get(status)
        if message and state is not None:
            await apply(ReceiptEvent(
                message, state, f"vonage:dlr:{message}:{status}",
                attempt_id=params.get("client-ref") or None,
            ))
        return WebhookResponse(204)

    async def _sms_inbound(self, request: WebhookRequest, apply: Apply) -> WebhookResponse:
        params = self._signed_params(request)
        if params is None:
            return FORBIDDEN
        message, sender = params.get("messageId", ""), params.get("msisdn", "")
        if message and sender:
            address = "+" + sender.removeprefix("+")
            await apply(TextReceived("sms", address, params.get("text", ""), message,
                                     f"vonage:mo:{message}"))
        # Vonage retries anything but a 2xx for a day; an SMS webhook cannot reply inline.
        return WebhookResponse(204)

    # -- voice -----------------------------------------------------------------------------

    async def _voice_event(self, request: WebhookRequest, apply: Apply) -> WebhookResponse:
        event = self._signed_body(request)
        if event is None:
            return FORBIDDEN
        call = str(event.get("uuid", ""))
        if isinstance(event.get("dtmf"), dict):
            return await self._key_pressed(event, call, apply)
        status = str(event.get("status", "")).lower()
        state = CALL_STATES.get(status)
        if call and state is not None:
            await apply(ReceiptEvent(call, state, f"vonage:call:{call}:{status}"))
        return WebhookResponse(204)

    async def _key_pressed(
        self, event: Mapping[str, object], call: str, apply: Apply
    ) -> WebhookResponse:
        dtmf = event["dtmf"]
        assert isinstance(dtmf, dict)
        digits = str(dtmf.get("digits") or "")
        reply = None
        if call and digits:
            callee = "+" + str(event.get("to", "")).removeprefix("+")
            reply = await apply(KeyPressed(
                "voice", call, callee, digits, f"{call}:digits:{digits}",
                f"vonage:input:{call}:{digits}",
            ))
        words = "Acknowledged. Thank you." if reply and reply.acknowledged else "Goodbye."
        # The answer to an input event is the rest of the call: one more NCCO.
        return WebhookResponse(200, json.dumps([{"action": "talk", "text": words}]),
                               "application/json")


def _params(request: WebhookRequest) -> dict[str, str] | None:
    """A webhook's parameters: a form or a JSON object (Vonage's POST and POST-JSON)."""
    content = request.headers.get("content-type", "").split(";")[0].strip().lower()
    text = request.body.decode("utf-8", "replace")
    if content == "application/json":
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        return {str(k): "" if v is None else str(v) for k, v in data.items()}
    return dict(parse_qsl(text, keep_blank_values=True))


class VonageStatuses:
    """Asks Vonage how a call is doing, for deliveries waiting on it (no public URL).
    The SMS API keeps no status to ask for: SMS receipts come by webhook only."""

    def __init__(self, voice: VonageVoiceChannel | None) -> None:
        self._voice = voice

    async def status(self, provider_id: str) -> ReceiptState | None:
        if self._voice is None or not _CALL_ID.fullmatch(provider_id):
            return None
        return CALL_STATES.get((await self._voice.status_of(provider_id) or "").lower())
