"""What an incident adds to a broadcast: finding who it reached, and stopping it.

    python -m bench.incidents [--contacts 10000] [--store sqlite|URL]

An incident is opened to ``--contacts`` people (a tenth of them unreachable), with
``--until acknowledged`` so that every reached delivery waits for its person; then an
update goes to those reached, then the all-clear. The channel is an in-memory one that
takes every message at once, so the figures are the router's and the store's own cost:
a provider's rate limit (Telegram's 30/s: 5 minutes for 10,000) is far above them.

Printed: the time to work out the update's audience (every delivery of the incident
read, the channel that last worked found), the update's broadcast against a plain
broadcast to the same people, and the all-clear's stopping transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from config import settings_from_mapping
from router import Capabilities, Message, Outcome, Rendered, Router, Scope
from router.model.ids import new_id
from router.store.incidents import EntryRecord


class Instant:
    """A channel that takes every message at once, and refuses the unreachable."""

    def __init__(self, name: str, refused: set[str]) -> None:
        self.name = name
        self.capabilities = Capabilities(max_length=None, failure_domains=frozenset({name}))
        self._refused = refused
        self.sent = 0

    async def send(self, address: str, message: Rendered, *, attempt_id: str) -> Outcome:
        self.sent += 1
        if address in self._refused:
            return Outcome.permanent("chat not found", Scope.RECIPIENT)
        return Outcome.accepted(f"m{self.sent}")

    async def check(self) -> Outcome:
        return Outcome.accepted()

    async def aclose(self) -> None:
        return None


async def main(count: int, store: dict[str, Any]) -> dict[str, float]:
    people = {f"c{i:06d}": {"telegram": 700_000_000 + i} for i in range(count)}
    refused = {str(700_000_000 + i) for i in range(0, count, 10)}
    config = {
        "routing": {"order": ["telegram"], "concurrency": 64, "confirm_above": count},
        "store": store, "contacts": people, "groups": {"all": list(people)},
        "limits": {"telegram": {"per_second": 1e9, "per_recipient_per_second": 1e9}},
        "escalation": {"ack_wait": 3600, "repeats": 0},
    }
    figures: dict[str, float] = {}
    channel = Instant("telegram", refused)
    async with Router(settings_from_mapping(config), channels={"telegram": channel}) as router:
        incidents = router.incidents
        started = time.perf_counter()
        opened = await incidents.open(Message("db down"), title="bench", group="all",
                                      until="acknowledged")
        figures["open"] = time.perf_counter() - started
        started = time.perf_counter()
        audience = await incidents.audience(opened.incident_id)
        figures["audience"] = time.perf_counter() - started
        started = time.perf_counter()
        update = await incidents.update(opened.incident_id, Message("failing over"))
        figures["update"] = time.perf_counter() - started
        started = time.perf_counter()
        plain = await router.broadcast(Message("same people, no incident"),
                                       to=[c.name for c in audience])
        figures["broadcast"] = time.perf_counter() - started
        step = await incidents.prepare_resolve(opened.incident_id, Message("all clear"))
        book = incidents.book
        started = time.perf_counter()
        _, stopped = await book.resolve(EntryRecord(new_id("ent"), opened.incident_id,
                                                    "resolved", time.time(), "all clear"))
        figures["stop"] = time.perf_counter() - started
        figures["stopped"] = stopped
        figures["reached"] = len(audience)
        # Inside the router: a large result is read back from the store.
        assert len(update) == len(plain) == step.size == count - len(refused)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--store", default="sqlite",
                        help="sqlite (a temporary file) or a postgresql:// URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-incidents-") as tmp:
        section = ({"path": str(Path(tmp) / "bc.db")} if args.store == "sqlite"
                   else {"url": args.store})
        found = asyncio.run(main(args.contacts, section))
    reached = int(found["reached"])
    kind = "SQLite" if args.store == "sqlite" else "PostgreSQL"  # a URL may hold a password
    print(
        f"incident to {args.contacts} contacts ({reached} reached), {kind} store:\n"
        f"  open (broadcast + record)       {found['open']:7.2f} s\n"
        f"  the update's audience           {found['audience'] * 1000:7.0f} ms"
        f"  ({found['audience'] / reached * 1e6:.1f} us a contact)\n"
        f"  update to the {reached} reached  {found['update']:7.2f} s\n"
        f"  plain broadcast, same people    {found['broadcast']:7.2f} s\n"
        f"  all-clear's stop transaction    {found['stop'] * 1000:7.0f} ms"
        f"  ({int(found['stopped'])} waiting deliveries settled)"
    )
