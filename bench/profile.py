"""Where the time goes: one side of a row-1 comparison under py-spy, summarised.

    python -m bench.profile [--channel telegram] [--side router|direct] [--messages 5000]
                            [--rate 250] [--keep FILE]

The peers run in their own process; the measured side runs in a child process
that warms up as the benchmark does, opens its side and waits: py-spy
(``record --threads``, wall time of threads that are not idle) attaches then,
so that only the timed span is sampled, not imports or settings. The summary
gives each sample to an owner: the innermost frame that belongs to router code
(``router/``, ``channels/``, ``config/``), a client library, the stdlib email
package or the bench's direct loop (standard-library helpers count for their
caller), the event loop and sockets when they are on top, and SQLite for the
store's writer thread; then the top functions by self time and the router's own
functions by inclusive time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import CONCURRENCY, router_config, router_settings, with_store
from bench.peerproc import peer_process

# Path fragment -> owner, first match wins. A sample belongs to the innermost frame
# with an owner: standard-library helpers (uuid, json, urllib...) count for whoever
# called them, except the event loop and socket calls at the very top of a stack.
OWNERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("imports", ("<frozen importlib",)),
    ("router code", ("router/", "channels/", "config/")),
    ("tenacity (router's retries)", ("tenacity/",)),
    ("python-telegram-bot", ("telegram/",)),
    ("httpx, httpcore, h11, anyio", ("httpx/", "httpcore/", "h11/", "anyio/", "sniffio/")),
    ("twilio SDK", ("twilio/",)),
    ("aiohttp, yarl, multidict", ("aiohttp/", "yarl/", "multidict/", "propcache/",
                                  "aiohappyeyeballs/")),
    ("aiosmtplib", ("aiosmtplib/",)),
    ("stdlib email package", ("email/",)),
    ("bench (the direct loops)", ("bench/",)),
)
EVENT_LOOP = ("asyncio/", "selectors.py", "ssl.py", "socket.py", "trsock.py")
STORE_THREAD = "backchannel-store"


IDLE = {
    "select (selectors.py": "event loop waiting for I/O (idle)",
    "_worker (concurrent/futures/thread.py": "executor thread waiting for work (idle)",
    "GroupCommitWriter._run (router/store/_writer.py:75)": "store thread waiting for work (idle)",
    "_commit (router/store/_writer.py:111)": "store thread in COMMIT: fsync (GIL released)",
}


def owner(frames: list[str]) -> str:
    if not frames:
        return "(no Python frame: native code or waiting for the GIL)"
    for fragment, name in IDLE.items():
        if fragment in frames[-1]:
            return name
    if any(fragment in frames[-1] for fragment in EVENT_LOOP):
        return "event loop and sockets"
    for frame in reversed(frames):
        for name, fragments in OWNERS:
            if any(fragment in frame for fragment in fragments):
                return name
    return "other (standard library)"


def summarise(raw: str, top: int = 25, focus: str | None = None, messages: int = 0,
              rate: int = 0) -> str:
    """Summarise py-spy's raw (collapsed) output recorded with ``--threads``.

    ``focus``: keep only samples of the store's thread and stacks with that frame.
    """
    names: dict[str, str] = {}
    threads: collections.Counter[str] = collections.Counter()
    by_owner: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    samples = []
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            head, *frames = stack.split(";")
            thread_id, _, name = head.partition(": ")
            if name:  # py-spy names a thread on some samples only
                names[thread_id] = name
            samples.append((thread_id, frames, int(count_text)))
    for thread_id, frames, count in samples:
        store = names.get(thread_id) == STORE_THREAD
        if focus and frames and not store and not any(focus in f for f in frames):
            continue
        total += count
        threads[thread_id] += count
        self_time[frames[-1] if frames else "(no Python frame)"] += count
        for frame in set(frames):
            inclusive[frame] += count
        found = owner(frames)
        if store and "idle" not in found and "fsync" not in found:
            found = "SQLite and SQL (the store's writer thread)"
        by_owner[found] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples (threads not idle, wall time, over the timed span)",
             "by thread:"]
    lines += [f"  {n / total:6.1%}  {names.get(t, t)}" for t, n in threads.most_common()]
    unit = 1e6 / rate / messages if rate and messages else 0.0
    lines.append("by owner (innermost frame with one; the event loop when on top)"
                 + (", and in microseconds per message:" if unit else ":"))
    lines += [f"  {n / total:6.1%}" + (f" {n * unit:7.0f} us" if unit else "") + f"  {name}"
              for name, n in by_owner.most_common()]
    lines.append(f"top {top} functions by self time:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in self_time.most_common(top)]
    lines.append("router functions by inclusive time:")
    ours = [(name, n) for name, n in inclusive.most_common()
            if owner([name]) == "router code" and "<module>" not in name]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in ours[:top]]
    return "\n".join(lines)


async def child(peers_config: dict[str, Any], channel: str, side: str, messages: int,
                store: Path) -> None:
    """Warm up like the benchmark, open the side, say "ready", wait for "go", send."""
    from bench.peerproc import Peers
    from bench.throughput import direct_run, router_run

    peers = Peers(peers_config, os.getpid(), "starttls")  # (its CPU is not read here)

    async def handshake() -> None:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)

    settings = router_settings(router_config(peers_config, channel, messages, store))
    warm = min(messages, 200)
    if side == "router":
        await router_run(peers, with_store(settings, store.with_suffix(".warm.db")), warm)
        sample = await router_run(peers, with_store(settings, store), messages, handshake)
    else:
        await direct_run(peers, channel, warm, CONCURRENCY)
        sample = await direct_run(peers, channel, messages, CONCURRENCY, handshake)
    print(f"{side} {channel}: {messages} messages, {sample.rate:.0f}/s,"
          f" {sample.cpu_us:.0f} us of CPU each", flush=True)


async def main(channel: str, side: str, messages: int, rate: int, keep: Path | None) -> str:
    """Sample the child only over its timed span: py-spy attaches once it is ready."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        workdir = Path(tmp)
        raw = keep or workdir / "profile.txt"
        async with peer_process(workdir) as peers:
            config = workdir / "peers.json"
            config.write_text(json.dumps(peers.config))
            measured = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.profile", "--child", str(config),
                "--channel", channel, "--side", side, "--messages", str(messages),
                "--store", str(workdir / "profile.db"),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            assert measured.stdin is not None and measured.stdout is not None
            if (await measured.stdout.readline()).strip() != b"ready":
                raise RuntimeError("the profiled run did not start")
            sampler = await asyncio.create_subprocess_exec(
                spy, "record", "--threads", "-r", str(rate), "-f", "raw", "-o", str(raw),
                "--pid", str(measured.pid),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)  # py-spy attaches
            measured.stdin.write(b"go\n")
            await measured.stdin.drain()
            figures = (await measured.stdout.readline()).decode().strip()
            sampler.send_signal(signal.SIGINT)
            await sampler.wait()
            if await measured.wait() != 0:
                raise RuntimeError("the profiled run failed")
        return figures + "\n" + summarise(raw.read_text(), messages=messages, rate=rate)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channel", default="telegram",
                        choices=["telegram", "sms", "sms-vonage", "email"])
    parser.add_argument("--side", default="router", choices=["router", "direct"])
    parser.add_argument("--messages", type=int, default=5000)
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
