"""Row 4: peak RSS of a broadcast with the durable store on, by number of contacts.

    python -m bench.memory [--sizes 10000,30000,100000] [--runs 1] [--channel sms]
                           [--source toml|csv]

Each size runs in a fresh subprocess (``python -m bench.memory --child ...``),
which builds the config for that many contacts, opens the router, broadcasts
and reads ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end: the peak of
the whole process, contact book included. It also reports the RSS just before
the broadcast (imports, settings and open router), so that the growth the
broadcast itself causes can be told apart. The peers run in another process;
SMS (the twilio SDK) is the fastest client, so the largest size ends soonest.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import TEXT, from_csv, median, router_config, router_settings
from router import Message, Router


@dataclass(frozen=True, slots=True)
class MemoryRun:
    contacts: int
    peak_mb: float
    before_mb: float
    """RSS with the router open, just before the broadcast."""
    seconds: float
    reached: int
    curve: tuple[float, ...] = ()
    """RSS (MB) after each tenth of the contacts got their result."""


def _rss_mb() -> float:
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def child(peers_config: dict[str, Any], channel: str, contacts: int, store: Path,
                source: str) -> None:
    config = router_config(peers_config, channel, contacts, store)
    if source == "csv":
        config = from_csv(config, channel, contacts, store.parent)
    settings = router_settings(config)
    curve: list[float] = []
    step = max(1, contacts // 10)
    seen = 0

    def sample(result: object) -> None:
        nonlocal seen
        seen += 1
        if seen % step == 0:
            curve.append(round(_rss_mb(), 1))

    async with Router(settings) as router:
        before = _rss_mb()
        started = time.perf_counter()
        result = await router.broadcast(Message(TEXT), group="all", on_result=sample)
        seconds = time.perf_counter() - started
        reached = sum(1 for r in result if r.reached)
    print(json.dumps({"contacts": contacts, "peak_mb": _peak_mb(), "before_mb": before,
                      "seconds": seconds, "reached": reached, "curve": curve}))


async def measure_size(peers_config: dict[str, Any], workdir: Path, channel: str,
                       contacts: int, source: str = "toml") -> MemoryRun:
    config_path = workdir / "peers.json"
    config_path.write_text(json.dumps(peers_config))
    store = workdir / f"memory-{contacts}-{time.monotonic_ns()}.db"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.memory", "--child", str(config_path), "--channel", channel,
        "--contacts", str(contacts), "--store", str(store), "--source", source,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the {contacts}-contact run failed")
    data = json.loads(out.decode().strip().splitlines()[-1])
    data["curve"] = tuple(data["curve"])
    return MemoryRun(**data)


async def measure(peers_config: dict[str, Any], workdir: Path, sizes: list[int], runs: int,
                  channel: str = "sms", source: str = "toml") -> dict[int, list[MemoryRun]]:
    found: dict[int, list[MemoryRun]] = {size: [] for size in sizes}
    for _ in range(runs):
        for size in sizes:
            found[size].append(await measure_size(peers_config, workdir, channel, size,
                                                  source))
    return found


async def main(sizes: list[int], runs: int, channel: str,
               source: str = "toml") -> dict[int, list[MemoryRun]]:
    # Imported here, in the parent: the measured child must not carry the sandbox's
    # modules (aiosmtpd, trustme and cryptography), which a router process never loads.
    from bench.peerproc import peer_process

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        async with peer_process(Path(tmp)) as peers:
            return await measure(peers.config, Path(tmp), sizes, runs, channel, source)


@dataclass(frozen=True, slots=True)
class Growth:
    peaks: dict[int, float]
    """Median peak RSS (MB) by size."""
    per_contact_kb: list[float]
    """Slope between consecutive sizes, KB per contact."""
    shape: str


def growth(found: dict[int, list[MemoryRun]]) -> Growth:
    sizes = sorted(found)
    peaks = {size: median([r.peak_mb for r in found[size]]) for size in sizes}
    slopes = [
        (peaks[b] - peaks[a]) * 1024 / (b - a) for a, b in itertools.pairwise(sizes)
    ]
    # Within the largest run too: RSS after each tenth of the results, first half
    # against second half (a linear cost per contact keeps the same slope).
    largest = found[sizes[-1]][0]
    step = largest.contacts / 10
    curve = list(largest.curve)
    halves = [
        (part[-1] - part[0]) * 1024 / (step * (len(part) - 1))
        for part in (curve[: len(curve) // 2 + 1], curve[len(curve) // 2:]) if len(part) > 1
    ]
    if not slopes or max(abs(s) for s in slopes) < 0.05:
        shape = "flat"
    elif min(slopes) > 0 and max(slopes) / min(slopes) < 1.5 and (
        len(halves) < 2 or (min(halves) > 0 and max(halves) / min(halves) < 2)
    ):
        shape = f"linear, about {median(slopes):.2f} KB per contact"
    else:
        shape = "neither flat nor linear: " + ", ".join(f"{s:.2f}" for s in slopes) + " KB/contact"
    if len(halves) == 2:
        shape += (f" (within the {largest.contacts:,}-contact run: {halves[0]:.2f} then"
                  f" {halves[1]:.2f} KB per contact)")
    return Growth(peaks, slopes, shape)


def report(found: dict[int, list[MemoryRun]]) -> str:
    shape = growth(found)
    lines = [f"{'contacts':>9}{'peak MB':>9}{'before MB':>11}{'seconds':>9}{'reached':>9}"]
    for size, runs in sorted(found.items()):
        lines.append(
            f"{size:>9}{median([r.peak_mb for r in runs]):>9.1f}"
            f"{median([r.before_mb for r in runs]):>11.1f}"
            f"{median([r.seconds for r in runs]):>9.1f}{min(r.reached for r in runs):>9}"
        )
    lines.append(f"growth: {shape.shape}")
    largest = found[max(found)][0]
    lines.append(f"RSS during the {largest.contacts}-contact run, each tenth: "
                 + " ".join(f"{mb:.0f}" for mb in largest.curve) + " MB")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--channel", default="sms")
    parser.add_argument("--source", choices=("toml", "csv"), default="toml")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--contacts", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        asyncio.run(child(json.loads(args.child.read_text()), args.channel, args.contacts,
                          args.store, args.source))
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
        print(report(asyncio.run(main(sizes, args.runs, args.channel, args.source))))
