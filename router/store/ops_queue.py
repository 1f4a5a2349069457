"""Store operations for several instances: the work queue, shared rate limits, leases.

Workers claim pending deliveries of queued messages with a lease (on PostgreSQL
``FOR UPDATE SKIP LOCKED``, so claims never wait on each other); a worker that
dies leaves leases that expire, and another worker finishes those deliveries
under the same in-doubt rules as a resume. Rate limits are GCRA reservations
in one row per key, so every instance draws from one budget and a dead one
holds nothing back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from router.store.sql import Tx

_PICK = (
    "SELECT contact FROM deliveries WHERE message_id = ? AND done = 0 AND status = 'pending'"
    " AND (lease_until IS NULL OR lease_until < ?) ORDER BY position LIMIT ?"
)
_PICK_LOCKED = (
    "SELECT contact FROM deliveries WHERE message_id = ? AND done = 0 AND status = 'pending'"
    " AND (lease_until IS NULL OR lease_until < ?) ORDER BY position LIMIT ?"
    " FOR UPDATE SKIP LOCKED"
)


class QueueOperations:
    run: Callable[[Callable[[Tx], Awaitable[Any]]], Awaitable[Any]]

    async def claim_work(
        self, worker: str, *, now: float, lease: float, limit: int
    ) -> list[tuple[str, str, int]]:
        """Lease up to ``limit`` pending deliveries of queued messages (oldest message
        first, in audience order), each at a new epoch: a worker that held one before and
        paused past its lease is fenced off.

        Read a message at a time through the partial index of pending deliveries, so a
        claim costs the same whether none or a million of the queue is done already."""
        from router.store.ops_twoway import close_message_if_done

        async def claim(tx: Tx) -> list[tuple[str, str, int]]:
            # SKIP LOCKED: concurrent workers take different rows instead of queueing.
            pick = _PICK_LOCKED if tx.dialect == "postgres" else _PICK
            claimed: list[tuple[str, str, int]] = []
            queued = await tx.fetchall(
                "SELECT id FROM messages WHERE state = 'queued' ORDER BY created_at"
            )
            for (message_id,) in queued:
                if len(claimed) >= limit:
                    break
                rows = await tx.fetchall(pick, message_id, now, limit - len(claimed))
                if not rows:
                    # Nothing left to claim: ended, unless deliveries are still in hand or
                    # waiting (this also ends one whose last release was lost in a crash).
                    await close_message_if_done(tx, message_id, now)
                    continue
                marks = ", ".join("?" for _ in rows)
                leased = await tx.fetchall(
                    "UPDATE deliveries SET lease_owner = ?, lease_until = ?,"  # noqa: S608
                    " lease_epoch = lease_epoch + 1 WHERE message_id = ?"
                    f" AND contact IN ({marks}) RETURNING contact, lease_epoch",
                    worker, now + lease, message_id, *(row[0] for row in rows),
                )
                claimed += [(str(message_id), str(c), int(epoch)) for c, epoch in leased]
            return claimed

        claimed: list[tuple[str, str, int]] = await self.run(claim)
        return claimed

    async def renew_leases(
        self, worker: str, keys: Sequence[tuple[str, str]], *, until: float
    ) -> set[tuple[str, str]]:
        async def renew(tx: Tx) -> set[tuple[str, str]]:
            held = set()
            for message_id, contact in keys:
                if await tx.execute(
                    "UPDATE deliveries SET lease_until = ? WHERE message_id = ? AND contact = ?"
                    " AND lease_owner = ?", until, message_id, contact, worker,
                ):
                    held.add((message_id, contact))
            return held

        held: set[tuple[str, str]] = await self.run(renew)
        return held

    async def release(self, message_id: str, contact: str, worker: str, *, at: float) -> None:
        """The worker is done with this delivery; the message ends when its last one does."""
        await self.release_many([(message_id, contact)], worker, at=at)

    async def release_many(
        self, keys: Sequence[tuple[str, str]], worker: str, *, at: float
    ) -> None:
        """Deliveries this worker is done with, in one transaction; each message whose
        last delivery this was ends."""
        from router.store.ops_twoway import close_message_if_done

        async def done(tx: Tx) -> None:
            await tx.executemany(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL"
                " WHERE message_id = ? AND contact = ? AND lease_owner = ?",
                [(message_id, contact, worker) for message_id, contact in keys],
            )
            for message_id in sorted({message_id for message_id, _ in keys}):
                await close_message_if_done(tx, message_id, at)

        if keys:
            await self.run(done)

    async def queue_depth(self) -> int:
        row = await self.run(lambda tx: tx.fetchone(
            "SELECT COUNT(*) FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE m.state = 'queued' AND d.status = 'pending' AND d.done = 0"
        ))
        return int(row[0]) if row else 0

    async def reserve_rate(
        self, key: str, *, not_before: float, clock: Callable[[], float], interval: float,
        burst: int,
    ) -> float:
        """Reserve the next slot of a shared rate: the time it may be used."""
        [go_at] = await self.reserve_rates(key, not_before=not_before, clock=clock,
                                           interval=interval, burst=burst, count=1)
        return go_at

    async def reserve_rates(
        self, key: str, *, not_before: float, clock: Callable[[], float], interval: float,
        burst: int, count: int,
    ) -> list[float]:
        """Reserve the next ``count`` slots of a shared rate at once: the times each may be
        used (one transaction for a block of a worker's requests, not one per request).

        ``clock`` is read once the row is locked: waiting for that lock (other
        instances reserving) must not hand out a slot already past, which would send
        late and bunch with the punctual requests behind it.
        """
        async def reserve(tx: Tx) -> list[float]:
            await tx.execute(
                "INSERT INTO rate_limits (key, due, paused_until) VALUES (?, ?, 0)"
                " ON CONFLICT (key) DO NOTHING", key, not_before,
            )
            lock = " FOR UPDATE" if tx.dialect == "postgres" else ""
            row = await tx.fetchone(
                f"SELECT due, paused_until FROM rate_limits WHERE key = ?{lock}", key  # noqa: S608
            )
            earliest = max(not_before, clock())
            due, paused_until = (float(row[0]), float(row[1])) if row else (earliest, 0.0)
            slots = []
            for _ in range(count):
                go_at = max(earliest, paused_until, due - (burst - 1) * interval)
                slots.append(go_at)
                due = max(due, go_at) + interval
            await tx.execute("UPDATE rate_limits SET due = ? WHERE key = ?", due, key)
            return slots

        slots: list[float] = await self.run(reserve)
        return slots

    async def pause_rate(self, key: str, *, until: float) -> None:
        await self.run(lambda tx: tx.execute(
            "INSERT INTO rate_limits (key, due, paused_until) VALUES (?, 0, ?)"
            " ON CONFLICT (key) DO UPDATE SET paused_until ="
            " CASE WHEN rate_limits.paused_until > excluded.paused_until"
            " THEN rate_limits.paused_until ELSE excluded.paused_until END", key, until,
        ))

    async def paused_until(self, key: str) -> float:
        row = await self.run(lambda tx: tx.fetchone(
            "SELECT paused_until FROM rate_limits WHERE key = ?", key
        ))
        return float(row[0]) if row else 0.0

    async def release_leases(self, owner: str) -> None:
        """A process that stops cleanly hands its jobs on at once, not at expiry."""
        await self.run(lambda tx: tx.execute("DELETE FROM leases WHERE owner = ?", owner))

    async def try_lease(self, name: str, owner: str, *, now: float, until: float) -> bool:
        """Hold ``name`` until ``until`` if it is free, expired, or already ours."""
        taken = await self.run(lambda tx: tx.execute(
            "INSERT INTO leases (name, owner, until) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until"
            " WHERE leases.until < ? OR leases.owner = excluded.owner", name, owner, until, now,
        ))
        return bool(taken)
