"""Rows 1 and 3: router throughput and CPU per message against direct client-library loops.

    python -m bench.throughput [--channel telegram,sms,sms-vonage,email] [--messages 5000]
                               [--runs 3]

For each channel, ``Router.broadcast`` to ``--messages`` contacts (durable SQLite
store on, rate limits raised out of the way) and the direct loop of
``bench/direct.py`` over the same client library, at the same concurrency,
against the same peers (in their own process). The two sides run alternately,
run after run (router first on even runs, direct first on odd ones), so that a
noisy machine slows both. Only the sending is timed: opening the router (store,
channels) and opening the clients are not. CPU is this process's user + system
time over the same span (every thread, the store's writer included).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    CHANNELS,
    CONCURRENCY,
    SUBJECT,
    TEXT,
    address,
    median,
    router_config,
    router_settings,
    with_store,
)
from bench.direct import DirectEmail, DirectSms, DirectTelegram, DirectVonageSms
from bench.peerproc import Peers, cpu_seconds, peer_process
from config import Settings
from router import Message, Router


@dataclass(frozen=True, slots=True)
class Sample:
    messages: int
    seconds: float
    cpu: float
    peer_cpu: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.messages * 1e6

    @property
    def peer_load(self) -> float:
        """The peers' CPU over the wall time: 1.0 would be one core flat out."""
        return self.peer_cpu / self.seconds


@dataclass(slots=True)
class Comparison:
    channel: str
    messages: int
    router: list[Sample] = field(default_factory=list)
    direct: list[Sample] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Median of the per-run ratios (each pair ran back to back)."""
        return median([r.rate / d.rate for r, d in zip(self.router, self.direct, strict=True)])

    @property
    def router_rate(self) -> float:
        return median([s.rate for s in self.router])

    @property
    def direct_rate(self) -> float:
        return median([s.rate for s in self.direct])

    @property
    def overhead_us(self) -> float:
        """Router CPU per message minus the direct loop's (medians)."""
        return median([s.cpu_us for s in self.router]) - median([s.cpu_us for s in self.direct])

    @property
    def peer_load(self) -> float:
        return max(s.peer_load for s in [*self.router, *self.direct])


Hook = Callable[[], Awaitable[None]] | None
"""Awaited with everything open, just before the timed span (``bench.profile`` starts
its sampler there)."""


async def _measure(
    peers: Peers, messages: int, send: Callable[[], Awaitable[int]], before: Hook = None
) -> Sample:
    if before is not None:
        await before()
    cpu, peer_cpu, started = cpu_seconds(), peers.cpu(), time.perf_counter()
    reached = await send()
    seconds = time.perf_counter() - started
    sample = Sample(messages, seconds, cpu_seconds() - cpu, peers.cpu() - peer_cpu)
    if reached != messages:
        raise RuntimeError(f"only {reached} of {messages} messages were accepted")
    return sample


async def router_run(
    peers: Peers, settings: Settings, messages: int, before: Hook = None
) -> Sample:
    """Broadcast to the first ``messages`` contacts of the config (all of them, usually)."""
    names = list(settings.contacts)[:messages]
    async with Router(settings) as router:
        async def send() -> int:
            message = Message(TEXT, subject=SUBJECT)
            if len(names) == len(settings.contacts):
                result = await router.broadcast(message, group="all")
            else:
                result = await router.broadcast(message, to=names)
            return sum(1 for r in result.results if r.reached)

        return await _measure(peers, messages, send, before)


async def direct_run(
    peers: Peers, channel: str, messages: int, concurrency: int, before: Hook = None
) -> Sample:
    addresses = [address(channel, i) for i in range(messages)]
    if channel == "sms":
        async with DirectSms(peers.config) as sms:
            return await _measure(
                peers, messages, lambda: sms.run([str(a) for a in addresses], TEXT, concurrency),
                before,
            )
    if channel == "sms-vonage":
        async with DirectVonageSms(peers.config, concurrency) as vonage:
            return await _measure(
                peers, messages,
                lambda: vonage.run([str(a) for a in addresses], TEXT, concurrency), before,
            )
    if channel == "telegram":
        async with DirectTelegram(peers.config, concurrency) as telegram:
            chats = [int(a) for a in addresses]
            return await _measure(
                peers, messages, lambda: telegram.run(chats, TEXT, concurrency), before
            )
    async with DirectEmail(peers.config) as email:
        return await _measure(
            peers, messages, lambda: email.run([str(a) for a in addresses], TEXT, SUBJECT),
            before,
        )


async def compare(
    peers: Peers, workdir: Path, channel: str, messages: int, runs: int,
    concurrency: int = CONCURRENCY,
) -> Comparison:
    """Both sides ``runs`` times, alternately."""
    settings = router_settings(
        router_config(peers.config, channel, messages, workdir / "unused.db",
                      concurrency=concurrency)
    )
    result = Comparison(channel, messages)
    # Warm-up, not measured: lazy imports, first connections, the first TLS context.
    warm = min(messages, 200)
    await router_run(peers, with_store(settings, workdir / f"warm-{channel}.db"), warm)
    await direct_run(peers, channel, warm, concurrency)
    for index in range(runs):
        store = workdir / f"throughput-{channel}-{index}-{time.monotonic_ns()}.db"
        sides = ["router", "direct"] if index % 2 == 0 else ["direct", "router"]
        for side in sides:
            if side == "router":
                result.router.append(await router_run(peers, with_store(settings, store), messages))
            else:
                result.direct.append(await direct_run(peers, channel, messages, concurrency))
    return result


async def main(channels: list[str], messages: int, runs: int) -> list[Comparison]:
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        async with peer_process(Path(tmp)) as peers:
            return [await compare(peers, Path(tmp), c, messages, runs) for c in channels]


def report(rows: list[Comparison]) -> str:
    lines = [
        f"{'channel':<10}{'msgs':>6}{'router/s':>10}{'direct/s':>10}{'ratio':>7}"
        f"{'router us':>11}{'direct us':>11}{'overhead':>10}{'peer load':>10}"
    ]
    for row in rows:
        lines.append(
            f"{row.channel:<10}{row.messages:>6}{row.router_rate:>10.0f}{row.direct_rate:>10.0f}"
            f"{row.ratio:>7.2f}{median([s.cpu_us for s in row.router]):>11.0f}"
            f"{median([s.cpu_us for s in row.direct]):>11.0f}{row.overhead_us:>10.0f}"
            f"{row.peer_load:>9.0%}"
        )
    lines.append("us: CPU microseconds per message (this process); overhead = router - direct;"
                 " peer load: the peers' busiest run, in cores")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channel", default=",".join(CHANNELS))
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(report(asyncio.run(main(args.channel.split(","), args.messages, args.runs))))
