"""Escalation timing: from a missed acknowledgement deadline to the next channel's request.

    python -m bench.escalation [--contacts 50] [--wait 1.0]

Each contact gets an SMS that must be acknowledged within ``--wait`` seconds;
nobody answers, so the router escalates to Telegram. The delay measured is the
Telegram peer's arrival time of each escalated message minus the deadline
(the SMS attempt's accepted time plus the wait): how late the escalation loop
acts, plus the request itself. Real clock, sandbox peers in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import tomllib
from pathlib import Path

from config import settings_from_mapping
from router import Message, Router
from router.sandbox import Sandbox


async def main(count: int, wait: float) -> list[float]:
    people = {f"p{i:03d}": {"sms": f"+336{20_000_000 + i:08d}", "telegram": 900_000 + i}
              for i in range(count)}
    with tempfile.TemporaryDirectory(prefix="bench-escalation-") as tmp:
        store = Path(tmp) / "bc.db"
        async with Sandbox() as sandbox:
            config = tomllib.loads(sandbox.config_toml(
                contacts=people, store_path=str(store),
                overrides={
                    "routing": {"order": ["sms", "telegram"], "concurrency": 64},
                    "escalation": {"ack_wait": wait, "repeats": 0},
                    "limits.sms": {"per_second": 10_000},
                    "limits.telegram": {"per_second": 10_000, "per_recipient_per_second": 100},
                },
            ))
            async with Router(settings_from_mapping(config)) as router:
                router.services.start(server=False)
                result = await router.broadcast(Message("ack me"), group="ops",
                                                until="acknowledged")
                while len(sandbox.telegram.sent) < count:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                arrivals = {str(s.chat_id): s.time for s in sandbox.telegram.sent}
        with sqlite3.connect(store) as db:
            accepted = dict(db.execute(
                "SELECT contact, finished_at FROM attempts WHERE channel = 'sms'"
            ).fetchall())
    assert len(result) == count
    return [
        arrivals[str(people[name]["telegram"])] - (accepted[name] + wait) for name in people
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=50)
    parser.add_argument("--wait", type=float, default=1.0)
    args = parser.parse_args()
    delays = sorted(asyncio.run(main(args.contacts, args.wait)))
    p95 = delays[max(0, int(len(delays) * 0.95) - 1)]
    print(
        f"escalation delay after a missed {args.wait:.1f}s acknowledgement wait, "
        f"{args.contacts} contacts:\n"
        f"  median {statistics.median(delays) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {delays[-1] * 1000:.0f} ms (deadline to the Telegram peer receiving the request)"
    )
