"""The web server: every provider's webhooks under ``/webhooks/<provider>/``, and
``/healthz``.

``create_app(router)`` is an ASGI app (Starlette) that ``backchannel serve`` runs
under uvicorn and that users can mount in their own app. Each provider's inbound
side (``channels/<provider>/``) authenticates and parses its own requests; this
module only routes them, caps their bodies (over ``[webhooks] max_body``: refused
unread) and hands the provider the public URL it signed, so that a forged, unsigned
or replayed request changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from config.twoway import WebhookSettings
from router.core import Router
from router.model.inbound import WebhookRequest


class _TooLarge(Exception):
    pass


def create_app(router: Router, *, manage: bool = True) -> Starlette:
    """The ASGI app. With ``manage``, its lifespan starts and closes ``router``."""
    webhooks = router.settings.webhooks

    async def provider_webhook(request: Request) -> Response:
        # Looked up per request: the endpoints are the ones the started router opened.
        endpoint = next((e for e in router.webhooks if e.path == request.url.path), None)
        if endpoint is None:
            return PlainTextResponse("not found", status_code=404)
        try:
            raw = await _body(request, webhooks.max_body)
        except _TooLarge:
            return PlainTextResponse("request body too large", status_code=413)
        answer = await endpoint.handle(_neutral(request, raw, webhooks), router.inbound.apply)
        return Response(answer.body, status_code=answer.status, media_type=answer.media_type)

    async def healthz(request: Request) -> Response:
        channels = {row.name: row.up for row in router.health_report()}
        return JSONResponse({"status": "ok", "channels": channels})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not manage:
            yield
            return
        async with router:
            yield

    return Starlette(
        routes=[
            Route("/webhooks/{provider}/{rest:path}", provider_webhook, methods=["POST"]),
            Route("/webhooks/{provider}", provider_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def _neutral(request: Request, raw: bytes, webhooks: WebhookSettings) -> WebhookRequest:
    public = webhooks.url(request.url.path)
    if public is not None and request.url.query:
        public += f"?{request.url.query}"
    return WebhookRequest(
        path=request.url.path, headers={k.lower(): v for k, v in request.headers.items()},
        body=raw, public_url=public,
    )


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)
