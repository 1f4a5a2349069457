"""The webhook server: receipts, replies and keypresses from Twilio, updates from Telegram.

``create_app(router)`` is an ASGI app (Starlette) that ``backchannel serve`` runs
under uvicorn and that users can mount in their own app. Every Twilio request
must carry a valid ``X-Twilio-Signature`` over ``[webhooks] public_url`` plus the
path; every Telegram one the secret token. Anything else gets 403 and changes
nothing. A replayed request (same idempotency token, SID or update id) gets
200 and has no second effect. Bodies over ``max_body`` are refused unread.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from router.core import Router
from router.twoway.polling import handle_update

log = logging.getLogger("backchannel.server")
Handler = Callable[[Request], Awaitable[Response]]


class _TooLarge(Exception):
    pass


def create_app(router: Router, *, manage: bool = True) -> Starlette:
    """The ASGI app. With ``manage``, its lifespan starts and closes ``router``."""
    settings = router.settings
    webhooks = settings.webhooks
    validator = RequestValidator(
        settings.twilio.auth_token.get_secret_value() if settings.twilio else ""
    )
    telegram_secret = (
        webhooks.telegram_secret.get_secret_value() if webhooks.telegram_secret else None
    )

    async def body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > webhooks.max_body:
            raise _TooLarge
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > webhooks.max_body:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def twilio_form(request: Request) -> dict[str, str] | None:
        """The form, if the signature is Twilio's over our public URL; else None."""
        raw = await body(request)
        form = _parse_form(raw)
        public = webhooks.url(request.url.path)
        signature = request.headers.get("x-twilio-signature", "")
        if public is None or settings.twilio is None or not signature:
            return None
        url = public + (f"?{request.url.query}" if request.url.query else "")
        return form if validator.validate(url, form, signature) else None

    async def first_time(request: Request, *keys: str) -> bool:
        token = request.headers.get("i-twilio-idempotency-token")
        key = f"twilio:{token}" if token else ":".join(("twilio", *keys))
        return await router.store.first_time(key, router.clock.time())

    async def twilio_status(request: Request) -> Response:
        form = await twilio_form(request)
        if form is None:
            return _forbidden()
        sid = form.get("MessageSid") or form.get("CallSid")
        status = form.get("MessageStatus") or form.get("CallStatus")
        if sid and status and await first_time(request, sid, status):
            await router.inbound.receipt(sid, status)
        return Response(status_code=204)

    async def twilio_inbound(request: Request) -> Response:
        form = await twilio_form(request)
        if form is None:
            return _forbidden()
        sender, sid = form.get("From", ""), form.get("MessageSid", "")
        channel = "whatsapp" if sender.startswith("whatsapp:") else "sms"
        reply = None
        if sid and await first_time(request, sid):
            reply = await router.inbound.text(
                channel, sender.removeprefix("whatsapp:"), form.get("Body", ""), sid
            )
        answer = MessagingResponse()
        if reply is not None and reply.kind == "ack":
            answer.message("Acknowledged, thank you.")
        return Response(str(answer), media_type="application/xml")

    async def twilio_gather(request: Request) -> Response:
        form = await twilio_form(request)
        if form is None:
            return _forbidden()
        call_sid, digits = form.get("CallSid", ""), form.get("Digits", "")
        reply = None
        if call_sid and await first_time(request, call_sid, "digits", digits):
            reply = await router.inbound.keypress(call_sid, form.get("To", ""), digits)
        answer = VoiceResponse()
        answer.say("Acknowledged. Thank you." if reply and reply.kind == "ack" else "Goodbye.")
        return Response(str(answer), media_type="application/xml")

    async def telegram(request: Request) -> Response:
        given = request.headers.get("x-telegram-bot-api-secret-token", "")
        if telegram_secret is None or not hmac.compare_digest(given, telegram_secret):
            return _forbidden()
        try:
            update = json.loads(await body(request))
        except ValueError:
            return PlainTextResponse("not JSON", status_code=400)
        bot = router.telegram_bot
        if not isinstance(update, dict) or bot is None:
            return PlainTextResponse("not an update", status_code=400)
        await handle_update(router.inbound, bot, update)
        return Response(status_code=200)

    async def healthz(request: Request) -> Response:
        channels = {row.name: row.up for row in router.health_report()}
        return JSONResponse({"status": "ok", "channels": channels})

    def guarded(handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except _TooLarge:
                return PlainTextResponse("request body too large", status_code=413)

        return run

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not manage:
            yield
            return
        async with router:
            yield

    return Starlette(
        routes=[
            Route("/webhooks/twilio/status", guarded(twilio_status), methods=["POST"]),
            Route("/webhooks/twilio/inbound", guarded(twilio_inbound), methods=["POST"]),
            Route("/webhooks/twilio/gather", guarded(twilio_gather), methods=["POST"]),
            Route("/webhooks/telegram", guarded(telegram), methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def _parse_form(raw: bytes) -> dict[str, str]:
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def _forbidden() -> Response:
    # Deliberately vague: a forger learns nothing about what was wrong.
    return PlainTextResponse("forbidden", status_code=403)
