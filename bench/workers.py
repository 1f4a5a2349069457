"""Several workers on one PostgreSQL: throughput with 1, 2 and 4, and shared-rate adherence.

    python -m bench.workers [--contacts 3000] [--adherence-seconds 30] [--quick]

Peers run in their own process (``backchannel sandbox``); each worker is a real
``backchannel worker`` process; the database is a throwaway PostgreSQL cluster
(or ``PG_TEST_URL``). Throughput is queued SMS deliveries per second,
from the first worker start until the queue is empty. Adherence: three workers
share a 30/s Telegram budget while the peer answers 429 above 110% of 30/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.peers import control, sandbox_process
from router.sandbox import toml_key, toml_value
from router.store import PostgresStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pg import cluster, fresh_database


def config_text(base: dict[str, Any], url: str, people: dict[str, dict[str, object]],
                limits: dict[str, dict[str, object]]) -> str:
    tables: dict[str, dict[str, object]] = {
        "routing": {"order": ["sms", "telegram", "email"], "concurrency": 64,
                    "confirm_above": 1_000_000},
        "twilio": base["twilio"], "telegram": base["telegram"], "email": base["email"],
        "channels.sms": base["channels"]["sms"], "store": {"url": url},
        **{f"limits.{name}": values for name, values in limits.items()},
        **{f"contacts.{name}": fields for name, fields in people.items()},
        "groups": {"all": list(people)},
    }
    return "\n".join(
        f"[{header}]\n" + "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in body.items())
        for header, body in tables.items()
    )


async def cli(*args: str, config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", *args, "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


async def run_workers(config: Path, url: str, workers: int, expected: int) -> float:
    """Queue the broadcast, start ``workers`` workers, return seconds until all done."""
    producer = await cli("broadcast", "--group", "all", "--queue", "bench", config=config)
    await producer.wait()
    store = PostgresStore(url)
    await store.open()
    started = time.perf_counter()
    processes = [await cli("worker", config=config) for _ in range(workers)]
    try:
        while True:
            done = await store.run(lambda tx: tx.fetchone(
                "SELECT COUNT(*) FROM deliveries WHERE done = 1"))
            if done and int(done[0]) >= expected:
                return time.perf_counter() - started
            await asyncio.sleep(0.1)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            await process.wait()
        await store.close()


async def main(server: str, contacts: int, seconds: float) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        workdir = Path(tmp)
        async with sandbox_process(workdir) as base:
            sms = {f"w{i:05d}": {"sms": f"+336{40_000_000 + i:08d}"} for i in range(contacts)}
            fast = {"sms": {"per_second": 1e6}}
            for workers in (1, 2, 4):
                url = await fresh_database(server)
                config = workdir / f"workers-{workers}.toml"
                config.write_text(config_text(base, url, sms, fast))
                elapsed = await run_workers(config, url, workers, contacts)
                rows.append(f"{workers} worker(s): {contacts / elapsed:8.0f} SMS/s "
                            f"({contacts} queued deliveries in {elapsed:.1f} s)")
        async with sandbox_process(workdir, "--telegram-flood-limit", "30") as base:
            count = int(30 * seconds)
            chats = {f"t{i:05d}": {"telegram": 800_000 + i} for i in range(count)}
            url = await fresh_database(server)
            config = workdir / "adherence.toml"
            config.write_text(config_text(base, url, chats, {"telegram": {"per_second": 30}}))
            elapsed = await run_workers(config, url, 3, count)
            requests = control(str(base["telegram"]["api_base"]), "/_sandbox/requests")
            sends = [r for r in requests if str(r["path"]).endswith("/sendMessage")]
            refused = sum(1 for r in sends if r["answer"] == 429)
            accepted = [r["time"] for r in sends if r["answer"] == 200]
            span = max(accepted) - min(accepted) if len(accepted) > 1 else elapsed
            rate = (len(accepted) - 1) / span if span > 0 else 0.0
            rows.append(f"adherence, 3 workers sharing 30/s on Telegram: {rate:5.1f}/s achieved "
                        f"({rate / 30:.0%} of the limit) over {span:.0f} s, {refused} x 429")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--adherence-seconds", type=float, default=30)
    parser.add_argument("--quick", action="store_true", help="600 contacts, 10 s adherence")
    args = parser.parse_args()
    if args.quick:
        args.contacts, args.adherence_seconds = 600, 10
    with cluster() as server:
        if server is None:
            sys.exit("no PostgreSQL: install Debian's postgresql or set PG_TEST_URL")
        lines = asyncio.run(main(server, args.contacts, args.adherence_seconds))
    print(f"workers on one PostgreSQL ({os.cpu_count()} cores; peers in their own process)")
    print("\n".join("  " + line for line in lines))
