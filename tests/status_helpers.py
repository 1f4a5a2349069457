"""A router for the status page's tests, and its ASGI app served on a real socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import uvicorn
from scripted import FakeClock, ScriptedChannel

from config import settings_from_mapping
from router import Router
from router.server import create_app

SECRETS = {
    # Contact data: names, numbers (E.164 and without the plus), addresses, chat ids.
    "zebulon_quill": {"phone": "+33612345678", "email": "zebulon.quill@example.com",
                      "telegram": 987654321},
    "ottoline_vance": {"phone": "+14155552671", "email": "ottoline@corp.example"},
}


def router_for(store: dict[str, Any], clock: FakeClock | None = None,
               **incidents: Any) -> Router:
    config = {
        "routing": {"order": ["sms", "email"], "retry_backoff": 0.01},
        "store": store, "contacts": SECRETS, "groups": {"ops": list(SECRETS)},
        "incidents": {"owner": "zebulon_quill", "timezone": "UTC",
                      "status_title": "Example Corp status", **incidents},
        "webhooks": {"public_url": "https://alerts.example.com"},
    }
    return Router(settings_from_mapping(config),
                  channels={"sms": ScriptedChannel("sms"), "email": ScriptedChannel("email")},
                  clock=clock or FakeClock())


@asynccontextmanager
async def serving(router: Router) -> AsyncIterator[str]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = uvicorn.Server(uvicorn.Config(create_app(router, manage=False),
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        listener.close()


async def fetch(url: str) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        headers = {name.lower(): value for name, value in answer.headers.items()}
        return answer.status, headers, await answer.text()
