"""The crisis board on a real socket, beside the sandbox peers; an SSE reader; a browser."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import tempfile
import tomllib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn

from config import settings_from_mapping
from router import Router
from router.model.clock import Clock
from router.sandbox import Sandbox
from router.server import create_app

PASSWORD = "correct horse battery"
API_TOKEN = "api-token-0123456789abcdef"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]  # fmt: skip
HOW_TO = ("browser tests need Debian's chromium (apt-get install chromium) and the playwright "
          "package (pip install -e '.[test]')")


@dataclass
class BoardRig:
    sandbox: Sandbox
    router: Router
    url: str
    config: Path
    app: Any

    @property
    def board(self) -> Any:
        return self.app.state.board

    def at(self, path: str) -> str:
        return self.url + path


def free_socket() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


@asynccontextmanager
async def board_rig(
    tmp_path: Path, *, store: dict[str, Any] | None = None,
    board: dict[str, Any] | None = None, overrides: dict[str, dict[str, Any]] | None = None,
    contacts: dict[str, dict[str, object]] | None = None, clock: Clock | None = None,
    with_board: bool = True, public_url: str | None = None, vonage: bool = False,
) -> AsyncIterator[BoardRig]:
    with free_socket() as listener:
        async with _board_rig(listener, tmp_path, store=store, board=board, overrides=overrides,
                              contacts=contacts, clock=clock, with_board=with_board,
                              public_url=public_url, vonage=vonage) as rig:
            yield rig


@asynccontextmanager
async def _board_rig(
    listener: socket.socket, tmp_path: Path, *, store: dict[str, Any] | None,
    board: dict[str, Any] | None, overrides: dict[str, dict[str, Any]] | None,
    contacts: dict[str, dict[str, object]] | None, clock: Clock | None,
    with_board: bool, public_url: str | None, vonage: bool,
) -> AsyncIterator[BoardRig]:
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    async with Sandbox() as sandbox:
        tables: dict[str, dict[str, Any]] = {
            "routing": {"retry_backoff": 0.01},
            "store": store or {"path": str(tmp_path / "bc.db")},
            "limits.sms": {"per_second": 1000}, "limits.voice": {"per_second": 1000},
            "limits.telegram": {"per_second": 1000, "per_recipient_per_second": 1000},
            **(overrides or {}),
        }
        if with_board:
            chosen = {"password": PASSWORD, "api_token": API_TOKEN, **(board or {})}
            users = chosen.pop("users", None)
            tables["board"] = {key: value for key, value in chosen.items() if value is not None}
            if users:
                tables["board.users"] = users
        if public_url is not None:
            tables.setdefault("webhooks", {})["public_url"] = public_url
        text = sandbox.config_toml(contacts=contacts, overrides=tables, vonage=vonage)
        config = tmp_path / "backchannel.toml"
        config.write_text(text)
        router = Router(settings_from_mapping(tomllib.loads(text)), clock=clock,
                        long_running=True)
        app = create_app(router, manage=False)
        server = uvicorn.Server(uvicorn.Config(
            app, log_level="warning", lifespan="on",
            timeout_graceful_shutdown=1, proxy_headers=False,
        ))
        async with router:
            serving = asyncio.create_task(server.serve(sockets=[listener]))
            while not server.started:
                await asyncio.sleep(0.01)
            try:
                yield BoardRig(sandbox, router, url, config, app)
            finally:
                server.should_exit = True
                await serving


def login_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "the login form carries a CSRF token"
    return found.group(1)


async def log_in(http: aiohttp.ClientSession, rig: BoardRig, password: str = PASSWORD,
                 **form: str) -> aiohttp.ClientResponse:
    async with http.get(rig.at("/board/login")) as page:
        token = login_token(await page.text())
    answer = await http.post(rig.at("/board/login"), allow_redirects=False,
                             data={"csrf": token, "password": password, "next": "/board", **form})
    answer.release()
    return answer


async def sse(http: aiohttp.ClientSession, url: str,
              **kwargs: Any) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Server-sent events as (event, data) pairs, parsed the way a browser does."""
    async with http.get(url, **kwargs) as answer:
        assert answer.status == 200, answer.status
        assert answer.headers["content-type"].startswith("text/event-stream")
        event, data = "message", []
        async for raw in answer.content:
            line = raw.decode().rstrip("\n").rstrip("\r")
            if not line:
                if data:
                    yield event, json.loads("\n".join(data))
                event, data = "message", []
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())


async def part_where(events: AsyncIterator[tuple[str, dict[str, Any]]], part: str,
                     condition: Callable[[str], bool], limit: float = 15.0) -> str:
    """The first update of ``part`` whose HTML satisfies ``condition``."""
    async with asyncio.timeout(limit):
        async for event, data in events:
            if event == "part" and data["id"] == part and condition(data["html"]):
                return str(data["html"])
    raise AssertionError("the stream ended")


def require_browser() -> None:
    missing = not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing = True
    if missing:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(HOW_TO)
        pytest.skip(HOW_TO)


@asynccontextmanager
async def browser(**context: Any) -> AsyncIterator[Any]:
    """A fresh headless Chromium context (its own profile), on Debian's binary."""
    require_browser()
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="bc-chromium-")
    try:
        async with async_playwright() as driver:
            session = await driver.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS[1:],
                **context,
            )
            try:
                yield session
            finally:
                await session.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def client(**kwargs: Any) -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1, as a browser does."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), **kwargs)
