"""Fixtures for the sandbox suite: the peers, and the official clients pointed at them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from sandbox_helpers import BotFactory, Receiver, SandboxTwilioHttpClient, TwilioFactory
from telegram import Bot
from telegram.request import HTTPXRequest
from twilio.rest import Client

from router.sandbox.smtp import SmtpPeer
from router.sandbox.telegram import TelegramPeer
from router.sandbox.twilio import TwilioPeer


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app_receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", app_receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    app_receiver.port = runner.addresses[0][1]
    yield app_receiver
    await runner.cleanup()


@pytest.fixture
async def twilio_peer() -> AsyncIterator[TwilioPeer]:
    async with TwilioPeer(sent_after=0.05, delivered_after=0.1) as peer:
        yield peer


@pytest.fixture
async def twilio_client_factory(twilio_peer: TwilioPeer) -> AsyncIterator[TwilioFactory]:
    clients: list[SandboxTwilioHttpClient] = []

    async def make(
        sid: str | None = None, token: str | None = None, *, client_timeout: float = 5.0,
        base_url: str | None = None,
    ) -> Client:  # fmt: skip
        http = SandboxTwilioHttpClient(base_url or twilio_peer.url, timeout=client_timeout)
        clients.append(http)
        return Client(
            sid or twilio_peer.account_sid, token or twilio_peer.auth_token, http_client=http
        )

    yield make
    for http in clients:
        await http.close()


@pytest.fixture
async def twilio(twilio_client_factory: TwilioFactory) -> Client:
    return await twilio_client_factory()


@pytest.fixture
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    # PTB 22.x warns (an error under this suite) when RetryAfter is built unless
    # time periods are opted into timedelta.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
async def telegram_peer() -> AsyncIterator[TelegramPeer]:
    async with TelegramPeer() as peer:
        yield peer


@pytest.fixture
async def bot_factory(
    telegram_peer: TelegramPeer, ptb_timedelta: None
) -> AsyncIterator[BotFactory]:
    bots: list[Bot] = []

    async def make(
        token: str | None = None, *, read_timeout: float = 5.0, base: str | None = None,
        initialize: bool = True,
    ) -> Bot:  # fmt: skip
        request = HTTPXRequest(read_timeout=read_timeout, connect_timeout=2.0)
        bot = Bot(
            token or telegram_peer.bot_token,
            base_url=f"{base or telegram_peer.url}/bot",
            request=request,
            get_updates_request=HTTPXRequest(read_timeout=read_timeout, connect_timeout=2.0),
        )
        bots.append(bot)
        if initialize:
            await bot.initialize()
        return bot

    yield make
    for bot in bots:
        await bot.shutdown()


@pytest.fixture
async def bot(bot_factory: BotFactory) -> Bot:
    return await bot_factory()


@pytest.fixture
async def smtp_peer() -> AsyncIterator[SmtpPeer]:
    async with SmtpPeer(tls="starttls", auth=("demo", "demo-password"), timeout=30) as peer:
        yield peer
