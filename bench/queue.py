"""Queueing a million: ``broadcast --queue`` of a group read from a CSV file, per backend.

    python -m bench.queue [--contacts 1000000] [--backends sqlite,postgres]

For each backend a fresh child process (as ``backchannel broadcast --queue`` would be)
checks the contact file (every line, as the CLI does before recording anything), then
records one delivery per contact into the store, in batches (COPY on PostgreSQL), and
prints the time of each step and its peak RSS: the file is streamed into the store,
never held as objects, so the peak must not grow with the audience. Drain rates of
1, 2 and 4 workers are ``python -m bench.workers``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import TEXT, from_csv, router_config, router_settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def child(config: dict[str, Any]) -> None:
    from router import Message, Router

    settings = router_settings(config)
    async with Router(settings) as router:
        started = time.perf_counter()
        summary = await router.book()
        checked = time.perf_counter()
        queued = await router.broadcast(Message(TEXT), group="all", queue=True)
        recorded = time.perf_counter()
        count = await router.store.count_deliveries(queued.message_id)
    print(json.dumps({"contacts": summary.contacts, "recorded": count,
                      "check_s": checked - started, "queue_s": recorded - checked,
                      "peak_mb": _peak_mb()}))


async def run_child(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    path = workdir / f"config-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(config))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.queue", "--child", str(path),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError("the queueing child failed")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def peers() -> dict[str, Any]:
    """A Twilio section for the config; nothing is sent, so no peer needs to answer."""
    return {"twilio": {"account_sid": "AC" + "0" * 32, "auth_token": "x" * 32,
                       "api_base": "http://127.0.0.1:9"},
            "channels": {"sms": {"sender": "+15005550006"}}}


async def main(contacts: int, backends: list[str]) -> list[str]:
    from pg import cluster, fresh_database

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        workdir = Path(tmp)
        base = router_config(peers(), "sms", 0, workdir / "queue.db")
        config = from_csv(base, "sms", contacts, workdir)
        for backend in backends:
            if backend == "postgres":
                with cluster() as server:
                    if server is None:
                        rows.append("postgres: no server (install postgresql or set PG_TEST_URL)")
                        continue
                    url = await fresh_database(server)
                    found = await run_child({**config, "store": {"url": url}}, workdir)
            else:
                found = await run_child(
                    {**config, "store": {"path": str(workdir / f"queue-{backend}.db")}}, workdir
                )
            rows.append(
                f"{backend:<8} {found['recorded']:>9,} deliveries queued: file checked in"
                f" {found['check_s']:.1f} s, recorded in {found['queue_s']:.1f} s"
                f" ({found['recorded'] / max(found['queue_s'], 1e-9):,.0f}/s),"
                f" peak RSS {found['peak_mb']:.0f} MB"
            )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        asyncio.run(child(json.loads(args.child.read_text())))
    else:
        lines = asyncio.run(main(args.contacts, args.backends.split(",")))
        print(f"queueing from a CSV file ({os.cpu_count()} cores)")
        print("\n".join("  " + line for line in lines))
