"""Where the time goes: one side of a row-1 comparison under py-spy, summarised.

    python -m bench.profile [--channel telegram] [--side router|direct] [--messages 2000]
                            [--rate 250] [--keep FILE]

The peers run in their own process; the measured side runs in a child process
under ``py-spy record --threads`` (sampling wall time of threads that are not
idle). The summary splits the samples by what the innermost frame belongs to:
router code (``router/``, ``channels/``, ``config/``), each client library,
SQLite (everything in the store's writer thread), the event loop and sockets,
the standard library's email package, and the rest; then the top functions by
self time and the router's own functions by inclusive time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import router_config, router_settings, with_store
from bench.peerproc import peer_process

# Innermost-frame path fragment -> category, first match wins.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("router code", ("router/", "channels/", "config/")),
    ("tenacity", ("tenacity/",)),
    ("python-telegram-bot", ("telegram/",)),
    ("httpx, httpcore, h11, anyio", ("httpx/", "httpcore/", "h11/", "anyio/", "sniffio/")),
    ("twilio SDK", ("twilio/",)),
    ("aiohttp, yarl, multidict", ("aiohttp/", "yarl/", "multidict/", "propcache/",
                                  "aiohappyeyeballs/")),
    ("aiosmtplib", ("aiosmtplib/",)),
    ("stdlib email", ("email/",)),
    ("json", ("json/",)),
    ("logging", ("logging/",)),
    ("event loop and sockets", ("asyncio/", "selectors.py", "ssl.py", "socket.py")),
    ("imports", ("<frozen importlib",)),
    ("bench", ("bench/",)),
)
STORE_THREAD = "backchannel-store"


def category(frame: str) -> str:
    for name, fragments in CATEGORIES:
        if any(fragment in frame for fragment in fragments):
            return name
    return "other"


def summarise(raw: str, top: int = 25) -> str:
    """Summarise py-spy's raw (collapsed) output recorded with ``--threads``."""
    threads: collections.Counter[str] = collections.Counter()
    by_category: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0].partition(": ")[2] or frames[0]
        frames = frames[1:] or frames
        total += count
        threads[thread] += count
        leaf = frames[-1]
        self_time[leaf] += count
        for frame in set(frames):
            inclusive[frame] += count
        by_category["SQLite (store writer thread)" if thread == STORE_THREAD
                    else category(leaf)] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples (non-idle threads, wall time)", "by thread:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in threads.most_common()]
    lines.append("by what the innermost frame belongs to:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in by_category.most_common()]
    lines.append(f"top {top} functions by self time:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in self_time.most_common(top)]
    lines.append("router functions by inclusive time:")
    ours = [(name, n) for name, n in inclusive.most_common()
            if category(name) == "router code" and "<module>" not in name]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in ours[:top]]
    return "\n".join(lines)


async def child(peers_config: dict[str, Any], channel: str, side: str, messages: int,
                store: Path) -> None:
    from bench.peerproc import Peers
    from bench.throughput import direct_run, router_run

    peers = Peers(peers_config, os.getpid(), "starttls")  # peer CPU is not read here
    if side == "router":
        settings = router_settings(router_config(peers_config, channel, messages, store))
        sample = await router_run(peers, with_store(settings, store), messages)
    else:
        sample = await direct_run(peers, channel, messages, 64)
    print(f"{side} {channel}: {sample.rate:.0f} messages/s, {sample.cpu_us:.0f} us CPU each",
          file=sys.stderr)


async def main(channel: str, side: str, messages: int, rate: int, keep: Path | None) -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        workdir = Path(tmp)
        raw = keep or workdir / "profile.txt"
        async with peer_process(workdir) as peers:
            config = workdir / "peers.json"
            config.write_text(json.dumps(peers.config))
            process = await asyncio.create_subprocess_exec(
                spy, "record", "--threads", "-r", str(rate), "-f", "raw", "-o", str(raw), "--",
                sys.executable, "-m", "bench.profile", "--child", str(config),
                "--channel", channel, "--side", side, "--messages", str(messages),
                "--store", str(workdir / "profile.db"),
                stdout=asyncio.subprocess.DEVNULL,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            if await process.wait() != 0:
                raise RuntimeError("py-spy or the profiled run failed")
        return summarise(raw.read_text())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channel", default="telegram", choices=["telegram", "sms", "email"])
    parser.add_argument("--side", default="router", choices=["router", "direct"])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--keep", type=Path, help="keep py-spy's raw output here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        asyncio.run(child(json.loads(args.child.read_text()), args.channel, args.side,
                          args.messages, args.store))
    else:
        print(asyncio.run(main(args.channel, args.side, args.messages, args.rate, args.keep)))
