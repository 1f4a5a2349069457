"""``GET /status`` and ``GET /status/feed.atom``: public, without a login, cached briefly.

A status page is read by many at once in the worst hour: the store is asked at most
once a second, however many ask the server.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from router.incidents.status_page import Rendered, StatusPage

log = logging.getLogger("backchannel.status")
FRESH = 1.0
"""Seconds a rendered page is served again before the store is asked anew."""
HEADERS = {
    "Cache-Control": "public, max-age=15",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # No script, no outside resource: the page is static words and its own styles.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline';"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


class _Cache:
    def __init__(self, page: StatusPage) -> None:
        self._page = page
        self._rendered: Rendered | None = None
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self) -> Rendered:
        async with self._lock:  # one reader refreshes; the others wait and share it
            if self._rendered is None or time.monotonic() - self._at > FRESH:
                self._rendered = self._page.served(await self._page.snapshot())
                self._at = time.monotonic()
            return self._rendered


def status_routes(page: StatusPage) -> list[BaseRoute]:
    """The two public routes, for the server to mount."""
    cache = _Cache(page)

    async def current() -> Rendered | Response:
        try:
            return await cache.get()
        except Exception:  # the store is away: say so, never a traceback
            log.exception("status page: cannot read the store")
            return PlainTextResponse("status temporarily unavailable", status_code=503,
                                     headers={"Retry-After": "30"})

    async def html(request: Request) -> Response:
        found = await current()
        if isinstance(found, Response):
            return found
        return Response(found.html, media_type="text/html; charset=utf-8", headers=HEADERS)

    async def atom(request: Request) -> Response:
        found = await current()
        if isinstance(found, Response):
            return found
        return Response(found.atom, media_type="application/atom+xml; charset=utf-8",
                        headers=HEADERS)

    return [
        Route("/status", html, methods=["GET"]),
        Route("/status/", html, methods=["GET"]),
        Route("/status/feed.atom", atom, methods=["GET"]),
    ]
