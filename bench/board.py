"""The crisis board under a broadcast: throughput with three live viewers vs none, update
latency, and the server's memory as updates go by.

    python -m bench.board [--contacts 10000] [--runs 2] [--quick]

Peers run in their own process (``backchannel sandbox``), the board in a real
``backchannel serve`` process, and each broadcast is a real ``backchannel broadcast``
process (Telegram, rate limits out of the way) on the same SQLite store. Runs alternate:
no viewer, three viewers, no viewer... Throughput is contacts per second of the broadcast
process's whole life (the same overhead on both sides).

Latency: every 0.5 s during a broadcast this process commits a marker to the store (an
inbound reply, through a store of its own, as any other process would) and times how long
until each viewer's event stream carries the re-rendered part showing it. Memory: the
serve process's RSS, sampled with the number of updates it has sent so far.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.peers import sandbox_process
from router.sandbox import toml_key, toml_value
from router.store import SqliteStore
from router.store.base import InboundEvent

VIEWERS = 3
PASSWORD = "bench-board-password"
MARK_EVERY = 0.5


@dataclass
class Viewer:
    """One SSE client: how many updates it got, and when each marker reached it."""

    updates: int = 0
    seen: dict[int, float] = field(default_factory=dict)


@dataclass
class Run:
    viewers: int
    seconds: float
    contacts: int
    latencies: list[float] = field(default_factory=list)
    updates: int = 0

    @property
    def rate(self) -> float:
        return self.contacts / self.seconds


@dataclass
class Result:
    runs: list[Run]
    rss: list[tuple[int, float]]
    """(updates sent to viewers so far, serve RSS in MB)."""

    def rate(self, viewers: int) -> float:
        return statistics.median(r.rate for r in self.runs if r.viewers == viewers)

    @property
    def ratio(self) -> float:
        return self.rate(VIEWERS) / self.rate(0)

    @property
    def latencies(self) -> list[float]:
        return sorted(x for r in self.runs for x in r.latencies)


def config_text(base: dict[str, Any], store: Path, port: int, count: int) -> str:
    people = {f"c{i:06d}": {"telegram": 700_000_000 + i} for i in range(count)}
    tables: dict[str, dict[str, object]] = {
        "routing": {"order": ["telegram"], "concurrency": 64, "confirm_above": 10_000_000},
        "telegram": base["telegram"], "store": {"path": str(store)},
        "limits.telegram": {"per_second": 1e9, "per_recipient_per_second": 1e9},
        "webhooks": {"port": port},
        "board": {"password": PASSWORD},
        **{f"contacts.{name}": fields for name, fields in people.items()},
        "groups": {"all": list(people)},
    }
    return "\n".join(
        f"[{header}]\n" + "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in body.items())
        for header, body in tables.items()
    )


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def cli(*args: str, config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", *args, "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


async def log_in(http: aiohttp.ClientSession, url: str) -> None:
    async with http.get(url + "/board/login") as page:
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', await page.text())
    assert found
    async with http.post(url + "/board/login", allow_redirects=False,
                         data={"csrf": found.group(1), "password": PASSWORD}) as answer:
        assert answer.status == 303, answer.status


async def watch(url: str, viewer: Viewer, ready: asyncio.Event) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await log_in(http, url)
        async with http.get(url + "/board/events", timeout=aiohttp.ClientTimeout()) as stream:
            ready.set()
            event = ""
            async for raw in stream.content:
                line = raw.decode().strip()
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "part":
                    data = json.loads(line[5:])
                    viewer.updates += 1
                    now = time.monotonic()
                    if data["id"] == "inbox":
                        for mark in re.findall(r"marker (\d+)", data["html"]):
                            viewer.seen.setdefault(int(mark), now)


async def broadcast(config: Path, store: SqliteStore, contacts: int,
                    viewers: list[Viewer]) -> Run:
    marks: dict[int, float] = {}
    started = time.monotonic()
    process = await cli("broadcast", "--group", "all", "--yes", "bench board", config=config)
    waiting = asyncio.create_task(process.wait())
    while not waiting.done():
        await asyncio.wait([waiting], timeout=MARK_EVERY)
        if waiting.done():
            break
        mark = len(marks) + int(time.time() * 1000) % 1_000_000 * 1000
        await store.record_inbound(InboundEvent(
            f"in_bench_{mark}", "telegram", f"bench-{mark}", "1", None, "reply",
            f"marker {mark}", None, time.time()))
        marks[mark] = time.monotonic()  # committed: the clock starts now
    seconds = time.monotonic() - started
    await asyncio.sleep(1.5)  # the last markers' updates
    latencies = [viewer.seen[mark] - at for mark, at in marks.items() for viewer in viewers
                 if mark in viewer.seen]
    missing = sum(1 for mark in marks for viewer in viewers if mark not in viewer.seen)
    if missing and viewers:
        latencies += [float("inf")] * missing
    return Run(len(viewers), seconds, contacts, latencies)


async def measure(workdir: Path, contacts: int, runs: int) -> Result:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with sandbox_process(workdir) as peers:
        config = workdir / "board.toml"
        config.write_text(config_text(peers, workdir / "board.db", port, contacts))
        server = await cli("serve", config=config)
        try:
            await up(url)
            store = SqliteStore(workdir / "board.db")
            await store.open()
            result = Result([], [(0, rss_mb(server.pid))])
            try:
                for index in range(runs * 2):
                    with_viewers = index % 2 == 1
                    viewers: list[Viewer] = []
                    tasks: list[asyncio.Task[None]] = []
                    if with_viewers:
                        for _ in range(VIEWERS):
                            viewer, ready = Viewer(), asyncio.Event()
                            viewers.append(viewer)
                            tasks.append(asyncio.create_task(watch(url, viewer, ready)))
                            await ready.wait()
                    run = await broadcast(config, store, contacts, viewers)
                    run.updates = sum(v.updates for v in viewers)
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    result.runs.append(run)
                    sent = result.rss[-1][0] + run.updates
                    result.rss.append((sent, rss_mb(server.pid)))
                    print(f"  {run.viewers} viewers: {run.rate:,.0f}/s, {run.updates} updates,"
                          f" RSS {result.rss[-1][1]:.0f} MB", file=sys.stderr, flush=True)
            finally:
                await store.close()
        finally:
            server.send_signal(signal.SIGTERM)
            await server.wait()
    return result


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def up(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(400):
            try:
                async with http.get(url + "/healthz") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("backchannel serve did not come up")


def summary(result: Result) -> str:
    latencies = result.latencies
    p50 = statistics.median(latencies) if latencies else float("nan")
    worst = max(latencies) if latencies else float("nan")
    rss = ", ".join(f"{sent:,}: {mb:.0f}" for sent, mb in result.rss)
    return (f"{VIEWERS} viewers {result.rate(VIEWERS):,.0f}/s vs none {result.rate(0):,.0f}/s:"
            f" ratio {result.ratio:.2f}; update latency median {p50 * 1000:.0f} ms, worst"
            f" {worst * 1000:.0f} ms ({len(latencies)} marker receipts); serve RSS by updates"
            f" sent (MB): {rss}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1,000 contacts, one run each")
    args = parser.parse_args()
    contacts, runs = (1000, 1) if args.quick else (args.contacts, args.runs)
    with tempfile.TemporaryDirectory(prefix="bench-board-") as tmp:
        result = asyncio.run(measure(Path(tmp), contacts, runs))
    print(summary(result))


if __name__ == "__main__":
    main()
