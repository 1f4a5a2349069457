"""Row 5: rate adherence. Telegram limited to 30 messages/s in the router's config, the
Telegram peer answering 429 above 110 % of that over any sliding second.

    python -m bench.rate [--seconds 60] [--limit 30] [--runs 3]

Each run broadcasts to ``limit * seconds`` contacts (one chat each, so only the
overall limit binds) and reads back from the peer what it accepted and what it
refused: the achieved rate is accepted messages over the span from the first
to the last, and every 429 is counted. Real clock, peers in their own process.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import TEXT, median, router_config, router_settings, with_store
from bench.peerproc import Peers, peer_process
from bench.peers import control
from config import Settings
from router import Message, Router


@dataclass(frozen=True, slots=True)
class RateRun:
    limit: float
    accepted: int
    span: float
    rejected: int
    busiest_second: int
    reached: int
    contacts: int
    longest_gap: float
    """The longest pause between two accepted requests: a stall in the sender."""

    @property
    def rate(self) -> float:
        return (self.accepted - 1) / self.span if self.span > 0 else 0.0


def busiest_second(times: list[float]) -> int:
    """The most requests in any sliding one-second window."""
    most, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


async def one_run(peers: Peers, settings: Settings, contacts: int, limit: float) -> RateRun:
    since = time.time()
    async with Router(settings) as router:
        result = await router.broadcast(Message(TEXT), group="all")
    # The peer logs every request with its answer; only this run's count.
    requests = [
        r for r in await asyncio.to_thread(control, peers.telegram_url, "/_sandbox/requests")
        if r["time"] >= since and r["path"].endswith("/sendMessage")
    ]
    accepted = sorted(r["time"] for r in requests if r["answer"] == 200)
    rejected = sum(1 for r in requests if r["answer"] == 429)
    return RateRun(
        limit, len(accepted), accepted[-1] - accepted[0] if accepted else 0.0, rejected,
        busiest_second(accepted), sum(1 for r in result.results if r.reached), contacts,
        max((b - a for a, b in itertools.pairwise(accepted)), default=0.0),
    )


async def measure(peers: Peers, workdir: Path, seconds: float, limit: float,
                  runs: int) -> list[RateRun]:
    contacts = max(2, round(limit * seconds))
    config = router_config(
        peers.config, "telegram", contacts, workdir / "unused.db",
        limits={"per_second": limit, "per_recipient_per_second": 1},
    )
    settings = router_settings(config)
    found = []
    for index in range(runs):
        store = workdir / f"rate-{index}-{time.monotonic_ns()}.db"
        found.append(await one_run(peers, with_store(settings, store), contacts, limit))
        await asyncio.sleep(1.1)  # let the peer's sliding window empty between runs
    return found


async def main(seconds: float, limit: float, runs: int) -> list[RateRun]:
    with tempfile.TemporaryDirectory(prefix="bench-rate-") as tmp:
        flood = (round(limit), 1)
        async with peer_process(Path(tmp), telegram_flood=flood) as peers:
            return await measure(peers, Path(tmp), seconds, limit, runs)


def summary(runs: list[RateRun]) -> tuple[float, int, int, float]:
    """Median achieved rate, total 429s, the busiest second and the longest gap."""
    return (median([r.rate for r in runs]), sum(r.rejected for r in runs),
            max(r.busiest_second for r in runs), max(r.longest_gap for r in runs))


def report(runs: list[RateRun]) -> str:
    rate, rejected, busiest, gap = summary(runs)
    first = runs[0]
    return (
        f"Telegram limited to {first.limit:g}/s, peer refusing above 110% in any second,"
        f" {first.contacts} contacts x {len(runs)} runs:\n"
        f"  achieved {rate:.2f}/s ({rate / first.limit:.1%} of the limit), {rejected} x 429,"
        f" busiest second {busiest} requests, longest pause between requests"
        f" {gap * 1000:.0f} ms, reached {min(r.reached for r in runs)}/{first.contacts}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--limit", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(report(asyncio.run(main(args.seconds, args.limit, args.runs))))
