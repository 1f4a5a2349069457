"""What Twilio sends back: signed status callbacks, replies and key presses, and the
status of a message or call when asked (no public URL to call back).

Every request must carry ``X-Twilio-Signature``, HMAC-SHA1 with the auth token over
the public URL Twilio was given plus the sorted POST parameters; anything else gets
403 and changes nothing. Twilio's statuses become neutral receipt states here, so
that the core and the store never learn Twilio's words.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs, parse_qsl, urlsplit

from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from channels.twilio.account import ATTEMPT_PARAMETER, TwilioAccount
from router.model.inbound import (
    FORBIDDEN,
    Apply,
    Endpoint,
    KeyPressed,
    OptedOut,
    ReceiptEvent,
    ReceiptState,
    TextReceived,
    WebhookRequest,
    WebhookResponse,
)

RECEIPT_STATES: Mapping[str, ReceiptState] = {
    # Messages
    "accepted": ReceiptState.QUEUED, "scheduled": ReceiptState.QUEUED,
    "queued": ReceiptState.QUEUED, "sending": ReceiptState.SENDING,
    "sent": ReceiptState.SENT, "delivered": ReceiptState.DELIVERED,
    "undelivered": ReceiptState.FAILED, "failed": ReceiptState.FAILED,
    "read": ReceiptState.READ, "canceled": ReceiptState.FAILED,
    # Calls
    "initiated": ReceiptState.QUEUED, "ringing": ReceiptState.SENT,
    "in-progress": ReceiptState.ANSWERED, "completed": ReceiptState.DELIVERED,
    "busy": ReceiptState.FAILED, "no-answer": ReceiptState.FAILED,
}  # fmt: skip
"""Twilio's message and call statuses; anything else is ignored."""


def receipt_state(status: str | None) -> ReceiptState | None:
    return RECEIPT_STATES.get((status or "").lower())


class TwilioWebhooks:
    """``/webhooks/twilio/status``, ``/inbound`` and ``/gather``."""

    def __init__(self, auth_token: str) -> None:
        self._validator = RequestValidator(auth_token)

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("/webhooks/twilio/status", self._status),
            Endpoint("/webhooks/twilio/inbound", self._inbound),
            Endpoint("/webhooks/twilio/gather", self._gather),
        ]

    def _verified(self, request: WebhookRequest) -> dict[str, str] | None:
        """The form, if the signature is Twilio's over our public URL; else None."""
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        signature = request.headers.get("x-twilio-signature", "")
        if request.public_url is None or not signature:
            return None
        return form if self._validator.validate(request.public_url, form, signature) else None

    @staticmethod
    def _dedupe(request: WebhookRequest, *keys: str) -> str:
        # Twilio retries a webhook with the same idempotency token; without one, the
        # resource and what it reports identify the event.
        token = request.headers.get("i-twilio-idempotency-token")
        return f"twilio:{token}" if token else ":".join(("twilio", *keys))

    async def _status(self, request: WebhookRequest, apply: Apply) -> WebhookResponse:
        form = self._verified(request)
        if form is None:
            return FORBIDDEN
        sid = form.get("MessageSid") or form.get("CallSid")
        status = form.get("MessageStatus") or form.get("CallStatus")
        state = receipt_state(status)
        if sid and status and state is not None:
            await apply(ReceiptEvent(sid, state, self._dedupe(request, sid, status),
                                     attempt_id=_named_attempt(request.public_url)))
        return WebhookResponse(204)

    async def _inbound(self, request: WebhookRequest, apply: Apply) -> WebhookResponse:
        form = self._verified(request)
        if form is None:
            return FORBIDDEN
        sender, sid = form.get("From", ""), form.get("MessageSid", "")
        channel = "whatsapp" if sender.startswith("whatsapp:") else "sms"
        address, text = sender.removeprefix("whatsapp:"), form.get("Body", "")
        reply = None
        if sid:
            dedupe = self._dedupe(request, sid)
            # Twilio's Advanced Opt-Out has already blocked the number when it says STOP.
            if form.get("OptOutType", "").upper() == "STOP":
                reply = await apply(OptedOut(channel, address, text, sid, dedupe))
            else:
                reply = await apply(TextReceived(channel, address, text, sid, dedupe))
        answer = MessagingResponse()
        if reply is not None and reply.acknowledged:
            answer.message("Acknowledged, thank you.")
        return WebhookResponse(200, str(answer), "application/xml")

    async def _gather(self, request: WebhookRequest, apply: Apply) -> WebhookResponse:
        form = self._verified(request)
        if form is None:
            return FORBIDDEN
        call_sid, digits = form.get("CallSid", ""), form.get("Digits", "")
        reply = None
        if call_sid:
            reply = await apply(KeyPressed(
                "voice", call_sid, form.get("To", ""), digits, f"{call_sid}:digits:{digits}",
                self._dedupe(request, call_sid, "digits", digits),
            ))
        answer = VoiceResponse()
        answer.say("Acknowledged. Thank you." if reply and reply.acknowledged else "Goodbye.")
        return WebhookResponse(200, str(answer), "application/xml")


def _named_attempt(url: str | None) -> str | None:
    """The attempt our status callback URL named (covered by the signature)."""
    named = parse_qs(urlsplit(url or "").query).get(ATTEMPT_PARAMETER)
    return named[0] if named else None


class TwilioStatuses:
    """Asks Twilio how a message or call is doing, for deliveries waiting on a receipt."""

    def __init__(self, account: TwilioAccount) -> None:
        self._account = account

    async def status(self, provider_id: str) -> ReceiptState | None:
        return receipt_state(await self._account.status_of(provider_id))
