"""The peers alone: how fast each sandbox peer answers a lean client, and what it costs it.

    python -m bench.ceiling [--requests 3000]

Before any comparison, each peer is driven by the cheapest client at hand
(raw aiohttp with a 64-connection pool for the Twilio and Telegram APIs,
pre-built bytes over 8 aiosmtplib sessions for SMTP), at concurrency 64. The
client shares the machine with the peers, so the rate it reaches is only a lower
bound; the peers' own CPU per request gives their ceiling on one core
(``1 / CPU per request``). The benchmark rows show the peers' load during every
run next to their figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import aiosmtplib

from bench.common import CONCURRENCY, SUBJECT, TEXT, address, pool
from bench.direct import DirectEmail
from bench.peerproc import Peers, peer_process


@dataclass(frozen=True, slots=True)
class Ceiling:
    peer: str
    requests: int
    seconds: float
    peer_cpu: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def peer_us(self) -> float:
        return self.peer_cpu / self.requests * 1e6

    @property
    def ceiling(self) -> float:
        """Requests per second the peer could serve with one core to itself."""
        return 1e6 / self.peer_us if self.peer_us > 0 else float("inf")


async def _timed(peers: Peers, name: str, count: int,
                 blast: Callable[[], Awaitable[int]]) -> Ceiling:
    cpu, started = peers.cpu(), time.perf_counter()
    done = await blast()
    seconds = time.perf_counter() - started
    if done != count:
        raise RuntimeError(f"{name}: {done} of {count} requests succeeded")
    return Ceiling(name, count, seconds, peers.cpu() - cpu)


async def http_blast(peers: Peers, count: int) -> list[Ceiling]:
    twilio, telegram = peers.config["twilio"], peers.config["telegram"]
    credentials = f"{twilio['account_sid']}:{twilio['auth_token']}".encode()
    auth = {"Authorization": "Basic " + base64.b64encode(credentials).decode()}
    messages_url = f"{twilio['api_base']}/2010-04-01/Accounts/{twilio['account_sid']}/Messages.json"
    send_url = f"{telegram['api_base']}/bot{telegram['bot_token']}/sendMessage"
    sender = str(peers.config["channels"]["sms"]["sender"])
    found = []
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def twilio_post(index: int) -> bool:
            form = {"To": str(address("sms", index)), "From": sender, "Body": TEXT}
            async with session.post(messages_url, data=form, headers=auth) as response:
                await response.read()
                return response.status == 201

        async def telegram_post(index: int) -> bool:
            form = {"chat_id": str(address("telegram", index)), "text": TEXT}
            async with session.post(send_url, data=form) as response:
                await response.read()
                return response.status == 200

        for name, post in (("Twilio API", twilio_post), ("Telegram Bot API", telegram_post)):
            await pool(CONCURRENCY, range(50), post)  # warm-up: connections, imports
            found.append(await _timed(
                peers, name, count, functools.partial(pool, CONCURRENCY, range(count), post)
            ))
    return found


async def smtp_blast(peers: Peers, count: int) -> Ceiling:
    addresses = [str(address("email", i)) for i in range(count)]
    async with DirectEmail(peers.config, sessions=8) as email:
        await email.run(addresses[:50], TEXT, SUBJECT)
        return await _timed(peers, "SMTP relay", count,
                            lambda: email.run(addresses, TEXT, SUBJECT))


async def measure(peers: Peers, count: int) -> list[Ceiling]:
    try:
        return [*await http_blast(peers, count), await smtp_blast(peers, count)]
    except (aiohttp.ClientError, aiosmtplib.SMTPException) as exc:
        raise RuntimeError(f"a peer failed under load: {exc}") from exc


async def main(count: int) -> list[Ceiling]:
    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp:
        async with peer_process(Path(tmp)) as peers:
            return await measure(peers, count)


def report(rows: list[Ceiling]) -> str:
    lines = [f"{'peer':<18}{'requests':>9}{'lean client/s':>15}{'peer us/req':>13}"
             f"{'peer ceiling/s':>16}"]
    for row in rows:
        lines.append(f"{row.peer:<18}{row.requests:>9}{row.rate:>15.0f}{row.peer_us:>13.0f}"
                     f"{row.ceiling:>16.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    print(report(asyncio.run(main(args.requests))))
