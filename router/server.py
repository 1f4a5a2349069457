"""The web server: every provider's webhooks under ``/webhooks/<provider>/``,
``/healthz``, the public status page (``/status``, ``/status/feed.atom``), and,
with ``[board]`` in the config, the crisis board (``/board``, ``/api``).

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
from starlette.routing import BaseRoute, Route

from config.twoway import WebhookSettings
from router.board import Board, Planner, Topology
from router.core import Router
from router.incidents import StatusPage, status_routes
from router.model.inbound import WebhookRequest
from router.sending.outbox import contact_from_json, message_from_json
from router.store import SqlStore
from router.store.incidents import IncidentBook


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

    board = _board(router)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if manage:
                await stack.enter_async_context(router)
            if board is not None:
                await board.start()
                stack.push_async_callback(board.aclose)
            yield

    routes: list[BaseRoute] = [
        Route("/webhooks/{provider}/{rest:path}", provider_webhook, methods=["POST"]),
        Route("/webhooks/{provider}", provider_webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    app = Starlette(routes=routes + (board.routes() if board is not None else [])
                    + _status(router), lifespan=lifespan)
    app.state.board = board
    return app


def _board(router: Router) -> Board | None:
    """The crisis board, when ``[board]`` is configured (without it, no route exists)."""
    settings = router.settings
    if settings.board is None:
        return None
    if not isinstance(router.store, SqlStore):
        raise TypeError("the crisis board reads an SQL store (SQLite or PostgreSQL)")
    public = settings.webhooks.public_url
    return Board(settings.board, router.store, lambda: _describe(router),
                 secure_cookies=public is not None and public.scheme == "https")


def _describe(router: Router) -> tuple[Topology, Planner]:
    channels = tuple(router.ranking())
    health = router.health
    lanes = {name: health.lanes(name) for name in channels}
    breakers = {*channels, *(lane for found in lanes.values() for lane in found)}
    topology = Topology(
        channels=channels,
        dependencies={name: health.dependencies(name) for name in breakers},
        lanes=lanes,
        domains={name: channel.capabilities.failure_domains
                 for name, channel in router.channels.items()},
        repeats=router.settings.escalation.repeats,
    )
    routing = router.parts.routing

    def plan(body_json: str, contact: str, addresses_json: str) -> list[str]:
        route = routing.planner(message_from_json(body_json))(
            contact_from_json(contact, addresses_json))
        return [step.channel for step in route.steps]

    return topology, plan


def _status(router: Router) -> list[BaseRoute]:
    """The public status page and feed (no login: they show only public words)."""
    book = IncidentBook.of(router.store)
    if book is None:
        return []
    public = router.settings.webhooks.public_url
    return status_routes(StatusPage(book, router.settings.incidents, router.clock,
                                    public_url=None if public is None else str(public)))


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
