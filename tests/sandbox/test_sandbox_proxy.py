"""The TCP fault proxy in front of real peers (HTTP and SMTP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import aiosmtplib
import pytest
from sandbox_helpers import eventually

from router.sandbox.proxy import TcpProxy
from router.sandbox.smtp import SmtpPeer
from router.sandbox.telegram import TelegramPeer


@pytest.fixture
async def proxy(telegram_peer: TelegramPeer) -> AsyncIterator[TcpProxy]:
    async with TcpProxy("127.0.0.1", telegram_peer.port, latency=0.2) as tcp_proxy:
        yield tcp_proxy


async def get_me(proxy: TcpProxy, peer: TelegramPeer, within: float = 2.0) -> dict[str, object]:
    url = f"http://127.0.0.1:{proxy.port}/bot{peer.bot_token}/getMe"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within)) as session,
        session.get(url) as resp,
    ):
        body: dict[str, object] = await resp.json()
        return body


async def test_pass(proxy: TcpProxy, telegram_peer: TelegramPeer) -> None:
    assert (await get_me(proxy, telegram_peer))["ok"] is True
    assert proxy.connections["pass"] == 1


async def test_latency_delays_without_breaking(
    proxy: TcpProxy, telegram_peer: TelegramPeer
) -> None:
    proxy.mode = "latency"
    with pytest.raises(TimeoutError):
        await get_me(proxy, telegram_peer, within=0.1)
    assert (await get_me(proxy, telegram_peer, within=5))["ok"] is True
    assert proxy.connections["latency"] == 2


async def test_blackhole_reads_and_never_answers(
    proxy: TcpProxy, telegram_peer: TelegramPeer
) -> None:
    proxy.mode = "blackhole"
    with pytest.raises(TimeoutError):
        await get_me(proxy, telegram_peer, within=0.3)
    assert telegram_peer.requests == []
    assert proxy.connections["blackhole"] == 1


async def test_reset(proxy: TcpProxy, telegram_peer: TelegramPeer) -> None:
    proxy.mode = "reset"
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    with pytest.raises(ConnectionResetError):
        await reader.read()
    writer.close()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get_me(proxy, telegram_peer)
    assert proxy.connections["reset"] >= 2  # aiohttp retries an idempotent GET once


async def test_down_refuses_then_comes_back_on_the_same_port(
    proxy: TcpProxy, telegram_peer: TelegramPeer
) -> None:
    port = proxy.port
    proxy.mode = "down"
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    proxy.mode = "pass"
    assert proxy.port == port
    assert (await get_me(proxy, telegram_peer))["ok"] is True


async def test_switching_resets_open_connections(
    proxy: TcpProxy, telegram_peer: TelegramPeer
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    await eventually(lambda: proxy.connections["pass"] == 1)
    proxy.mode = "down"
    with pytest.raises(ConnectionResetError):
        await reader.read()
    writer.close()


async def test_connect_timeout_really_hangs_connect(proxy: TcpProxy) -> None:
    proxy.mode = "connect_timeout"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", proxy.port), 0.5)
    proxy.mode = "pass"
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.close()


async def test_connect_timeout_reaches_http_clients(
    proxy: TcpProxy, telegram_peer: TelegramPeer
) -> None:
    proxy.mode = "connect_timeout"
    url = f"http://127.0.0.1:{proxy.port}/bot{telegram_peer.bot_token}/getMe"
    timeout = aiohttp.ClientTimeout(total=5, connect=0.3)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(aiohttp.ConnectionTimeoutError):
            await session.get(url)


async def test_target_down_resets_the_client(telegram_peer: TelegramPeer) -> None:
    async with TcpProxy("127.0.0.1", telegram_peer.port) as proxy:
        await telegram_peer.refuse()
        with pytest.raises(aiohttp.ClientConnectionError):
            await get_me(proxy, telegram_peer)


async def test_smtp_with_starttls_through_the_proxy() -> None:
    async with (
        SmtpPeer(tls="starttls", auth=("demo", "pw")) as peer,
        TcpProxy("127.0.0.1", peer.port) as proxy,
    ):
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=proxy.port, start_tls=True, timeout=2,
            tls_context=peer.client_context(), username="demo", password="pw",
        )  # fmt: skip
        async with smtp:
            await smtp.sendmail("a@b.test", ["c@d.test"], b"Subject: hi\r\n\r\nbody\r\n")
            proxy.mode = "blackhole"
            with pytest.raises(aiosmtplib.SMTPTimeoutError):
                await smtp.noop(timeout=0.3)
        assert len(peer.received) == 1
