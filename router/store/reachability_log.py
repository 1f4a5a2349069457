"""Records of reachability runs: what each cron run found, contact by channel.

Kept beside the store rather than in its protocol: only the reachability run
writes them, and "last successful test per channel" is read back from here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from router.store.base import Store
from router.store.sql import Tx
from router.store.sqlstore import SqlStore


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One reachability run, summed up."""

    run_id: str
    started_at: float
    finished_at: float
    audience: str | None
    """The group checked, or None for every contact."""
    send_test: bool
    exit_status: int
    contacts: int
    redundant: int
    single_domain: int
    unreachable: int
    channels_down: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CheckRecord:
    """One contact on one channel, in one run."""

    contact: str
    channel: str
    up: bool
    """The channel (and what it depends on) was up after the run's probes."""
    tested: bool
    outcome: str | None
    """The test message's verdict when one was sent: accepted means the provider took it."""
    detail: str | None
    message_id: str | None
    at: float
    acknowledged_at: float | None = None
    """When the person answered the test; set once tests can ask (two-way issue)."""


class ReachabilityLog:
    """Reads and writes the reachability tables of one store."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    @classmethod
    def of(cls, store: Store) -> ReachabilityLog | None:
        """The log of ``store``, or None when its backend keeps no such records."""
        if isinstance(store, SqlStore):
            return cls(store)
        return None

    async def record(self, run: RunRecord, checks: Sequence[CheckRecord]) -> None:
        """The run and its checks, in one commit."""

        async def write(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO reachability_runs (id, started_at, finished_at, audience, send_test,"
                " exit_status, contacts, redundant, single_domain, unreachable, channels_down)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                run.run_id, run.started_at, run.finished_at, run.audience, run.send_test,
                run.exit_status, run.contacts, run.redundant, run.single_domain,
                run.unreachable, json.dumps(list(run.channels_down)),
            )
            await tx.executemany(
                "INSERT INTO reachability_checks (run_id, contact, channel, up, tested, outcome,"
                " detail, message_id, acknowledged_at, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run.run_id, c.contact, c.channel, c.up, c.tested, c.outcome, c.detail,
                  c.message_id, c.acknowledged_at, c.at) for c in checks],
            )

        await self._store.run(write)

    async def last_successes(self) -> dict[tuple[str, str], float]:
        """(contact, channel) -> when a test message on it was last accepted."""
        rows = await self._store.run(lambda tx: tx.fetchall(
            "SELECT contact, channel, MAX(at) FROM reachability_checks"
            " WHERE tested AND outcome = 'accepted' GROUP BY contact, channel"
        ))
        return {(contact, channel): at for contact, channel, at in rows}

    async def runs(self, limit: int = 20) -> list[RunRecord]:
        """The newest runs first."""
        rows = await self._store.run(lambda tx: tx.fetchall(
            "SELECT id, started_at, finished_at, audience, send_test, exit_status, contacts,"
            " redundant, single_domain, unreachable, channels_down FROM reachability_runs"
            " ORDER BY started_at DESC LIMIT ?", limit,
        ))
        return [
            RunRecord(
                run_id=row[0], started_at=row[1], finished_at=row[2], audience=row[3],
                send_test=bool(row[4]), exit_status=row[5], contacts=row[6], redundant=row[7],
                single_domain=row[8], unreachable=row[9], channels_down=tuple(json.loads(row[10])),
            )
            for row in rows
        ]
