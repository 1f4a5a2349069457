"""A router with its webhook server on a real socket, beside the sandbox peers."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from scripted import FakeClock

from config import settings_from_mapping
from router import Router
from router.sandbox import Sandbox
from router.server import create_app
from router.twoway.polling import UpdatePoller


@dataclass
class Rig:
    sandbox: Sandbox
    router: Router
    clock: FakeClock
    public: str
    store: Path

    def url(self, path: str) -> str:
        return self.public + path

    def delivery(self, contact: str) -> dict[str, Any]:
        with sqlite3.connect(self.store) as db:
            db.row_factory = sqlite3.Row
            row = db.execute(
                "SELECT * FROM deliveries WHERE contact = ? ORDER BY rowid DESC", (contact,)
            ).fetchone()
        return dict(row)

    def assert_still_waited_for(self, contact: str) -> None:
        """Nobody acknowledged: the delivery still waits for the person. Its status may be
        ``delivered`` as well as ``accepted``: the sandbox sends its own signed receipt a
        moment after each SMS (0.1 s), and a busy machine lets it arrive first."""
        delivery = self.delivery(contact)
        assert delivery["status"] in ("accepted", "delivered"), delivery
        assert (delivery["done"], delivery["waiting_for"]) == (0, "ack"), delivery

    def attempts(self, contact: str) -> list[dict[str, Any]]:
        with sqlite3.connect(self.store) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT * FROM attempts WHERE contact = ? ORDER BY started_at, rowid", (contact,)
            ).fetchall()
        return [dict(row) for row in rows]

    async def tick(self, seconds: float = 0.0) -> int:
        """Let fake time pass, then run what fell due (as the escalation loop would)."""
        self.clock.advance(seconds)
        return await self.router.escalator.run_due()

    async def poll_telegram(self) -> int:
        [feed] = self.router.parts.providers.feeds
        return await UpdatePoller(feed, self.router.inbound.apply, self.router.store).poll_once(0)

    async def until(self, condition: Any, what: str, limit: float = 10.0) -> None:
        """Wait for something the peers do over real sockets (a callback, a webhook)."""
        async with asyncio.timeout(limit):
            while not condition():
                await asyncio.sleep(0.02)


CONTACTS: dict[str, dict[str, object]] = {
    "alice": {"phone": "+33612345678", "telegram": 111111111, "email": "alice@example.com"},
    "bob": {"phone": "+14155552671", "telegram": 222222222},
}


@asynccontextmanager
async def rig(
    tmp_path: Path, *, order: list[str], escalation: dict[str, Any] | None = None,
    max_body: int = 64 * 1024, vonage: bool = False,
    channels: dict[str, dict[str, Any]] | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[Rig]:
    """``vonage``: Vonage carries SMS and voice too; ``channels`` overrides ``[channels.*]``
    keys (``{"sms": {"providers": ["vonage"]}}``)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    public = f"http://127.0.0.1:{listener.getsockname()[1]}"
    async with Sandbox(latency=0.0) as sandbox:
        sandbox.twilio.inbound_url = public + "/webhooks/twilio/inbound"
        sandbox.vonage.inbound_url = public + "/webhooks/vonage/sms/inbound"
        config = tomllib.loads(sandbox.config_toml(
            contacts=CONTACTS, store_path=str(tmp_path / "bc.db"), vonage=vonage,
            overrides={
                "routing": {"order": order, "retry_backoff": 0.01},
                "webhooks": {"public_url": public, "telegram_secret": "s3cret-webhook-token",
                             "max_body": max_body},
                "escalation": {"ack_wait": 60, "delivery_wait": 60, "repeats": 1,
                               "repeat_every": 120, **(escalation or {})},
                "limits.sms": {"per_second": 1000}, "limits.voice": {"per_second": 1000},
                **(extra or {}),
            },
        ))
        for name, keys in (channels or {}).items():
            config["channels"][name].update(keys)
        clock = FakeClock()
        router = Router(settings_from_mapping(config), clock=clock)
        server = uvicorn.Server(uvicorn.Config(
            create_app(router, manage=False), log_level="warning", lifespan="off",
        ))
        async with router:
            serving = asyncio.create_task(server.serve(sockets=[listener]))
            while not server.started:
                await asyncio.sleep(0.01)
            try:
                yield Rig(sandbox, router, clock, public, tmp_path / "bc.db")
            finally:
                server.should_exit = True
                await serving
    listener.close()
