"""Helpers shared by the sandbox tests (imported as ``sandbox_helpers``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from telegram import Bot
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

TwilioFactory = Callable[..., Awaitable[Client]]
BotFactory = Callable[..., Awaitable[Bot]]


class SandboxTwilioHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """twilio-python has no base-URL setting: swap scheme and host, keep path and query.

    It also ignores its own ``timeout``: every call passes ``timeout=None``, which
    aiohttp reads as "no timeout at all", so a stalled provider would hang forever.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._base = urlsplit(base_url)

    async def request(
        self, method: str, url: str, params: Any = None, data: Any = None, headers: Any = None,
        auth: Any = None, timeout: float | None = None,  # noqa: ASYNC109 (twilio's signature)
        allow_redirects: bool = False,
    ) -> Any:  # fmt: skip
        parts = urlsplit(url)
        url = urlunsplit((self._base.scheme, self._base.netloc, parts.path, parts.query, ""))
        return await super().request(
            method, url, params, data, headers, auth, timeout or self.timeout, allow_redirects
        )


async def eventually(check: Callable[[], bool], within: float = 60.0) -> None:
    """Wait until ``check()`` holds; fail after ``within`` seconds (a bound against
    hanging, not a timing assertion)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class Receiver:
    """A small aiohttp app standing in for the application under test's webhooks."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[tuple[str, dict[str, str], dict[str, str], bytes]] = []
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.received.append((request.path, dict(request.headers), form, body))
        return web.Response(status=self.status, text="<Response/>")
