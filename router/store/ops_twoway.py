"""Store operations for the way back: waits, receipts, acknowledgements, replies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from router.model.inbound import ReceiptState
from router.store.base import InboundEvent, MessageRecord, Receipt, StoredAttempt, StoredDelivery
from router.store.ops_audience import DELIVERY_COLUMNS, delivery_row
from router.store.sql import Tx

T = TypeVar("T")
REACHED_RANK = {"accepted": 1, "delivered": 2, "acknowledged": 3}
NOTHING_MAYBE_SENT = (
    "NOT EXISTS (SELECT 1 FROM attempts a WHERE a.message_id = deliveries.message_id"
    " AND a.contact = deliveries.contact AND (a.state = 'sending'"
    " OR a.verdict IN ('accepted', 'unknown')))"
)
"""A delivery none of whose attempts may have reached its contact: never begun, or
certainly refused so far (a stopped message expires those)."""
_ATTEMPT = (
    "id, message_id, contact, channel, address, kind, state, verdict, scope, detail, provider_id,"
    " retry_after, started_at, finished_at, round, receipt, provider"
)
_DELIVERY = DELIVERY_COLUMNS


class TwoWayOperations:
    """Mixed into the store; every method is one transaction."""

    run: Callable[[Callable[[Tx], Awaitable[Any]]], Awaitable[Any]]

    async def wait_for(
        self, message_id: str, contact: str, *, waiting_for: str, attempt_id: str | None,
        at: float, round_: int | None = None,
    ) -> None:
        """The delivery now waits (for a receipt, a person, or the next round) until ``at``;
        unless, meanwhile, the person acknowledged or its incident was resolved (a step
        that was under way when that happened must not start the wait again)."""
        await self.run(lambda tx: tx.execute(
            "UPDATE deliveries SET waiting_for = ?, waiting_attempt = ?, next_action_at = ?,"
            " round = COALESCE(?, round), done = 0 WHERE message_id = ? AND contact = ?"
            " AND status <> 'acknowledged' AND NOT EXISTS (SELECT 1 FROM messages"
            " WHERE id = ? AND stopped_at IS NOT NULL)",
            waiting_for, attempt_id, at, round_, message_id, contact, message_id,
        ))

    async def settle(self, message_id: str, contact: str, *, status: str | None, at: float) -> None:
        """Nothing more to do for this delivery; ``status`` only ever moves it forward."""
        async def update(tx: Tx) -> None:
            if status is not None:
                await _raise_status(tx, message_id, contact, status, at)
            await _settle(tx, message_id, contact, at)

        await self.run(update)

    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str, float]]:
        rows = await self.run(lambda tx: tx.fetchall(
            "SELECT message_id, contact, next_action_at FROM deliveries WHERE done = 0"
            " AND next_action_at IS NOT NULL AND next_action_at <= ?"
            " ORDER BY next_action_at LIMIT ?", now, limit,
        ))
        return [(str(m), str(c), float(at)) for m, c, at in rows]

    async def next_due(self) -> float | None:
        row = await self.run(lambda tx: tx.fetchone(
            "SELECT MIN(next_action_at) FROM deliveries WHERE done = 0"
            " AND next_action_at IS NOT NULL"
        ))
        return None if row is None or row[0] is None else float(row[0])

    async def claim_due(self, message_id: str, contact: str, expected: float) -> bool:
        """Compare-and-set: of several processes, only one acts on a due delivery."""
        changed = await self.run(lambda tx: tx.execute(
            "UPDATE deliveries SET next_action_at = NULL WHERE message_id = ? AND contact = ?"
            " AND next_action_at = ? AND done = 0", message_id, contact, expected,
        ))
        return bool(changed)

    async def load_delivery(
        self, message_id: str, contact: str
    ) -> tuple[MessageRecord, StoredDelivery, list[StoredAttempt]] | None:
        async def load(tx: Tx) -> tuple[MessageRecord, StoredDelivery,
                                        list[StoredAttempt]] | None:
            message = await tx.fetchone(
                "SELECT id, body, audience, fingerprint, created_at, idempotency_key, expires_at,"
                " goal FROM messages WHERE id = ?", message_id,
            )
            delivery = await tx.fetchone(
                f"SELECT {_DELIVERY} FROM deliveries WHERE message_id = ? AND contact = ?",  # noqa: S608
                message_id, contact,
            )
            if message is None or delivery is None:
                return None
            attempts = await tx.fetchall(
                f"SELECT {_ATTEMPT} FROM attempts WHERE message_id = ? AND contact = ?"  # noqa: S608
                " ORDER BY started_at, id", message_id, contact,
            )
            return (MessageRecord(*message), delivery_row(delivery),
                    [StoredAttempt(*row) for row in attempts])

        result: tuple[MessageRecord, StoredDelivery, list[StoredAttempt]] | None
        result = await self.run(load)
        return result

    async def record_receipt(
        self, provider_id: str, state: ReceiptState, at: float, *,
        attempt_id: str | None = None, dedupe_key: str | None = None,
    ) -> Receipt | None:
        """Apply a provider status to its attempt, and what it settles, in one transaction:
        a delivered receipt ends a delivery waiting for one; a failed receipt makes it due
        for escalation now. None when it changes nothing (an unknown id, a replay, or an
        out-of-order status older than what we know).

        ``attempt_id``: the attempt our callback URL named. A status for a request whose
        answer was lost (the process died or timed out waiting) settles that attempt: the
        provider has it, under ``provider_id``.
        """
        async def update(tx: Tx) -> Receipt | None:
            if dedupe_key is not None and not await _first_time(tx, dedupe_key, at):
                return None
            if attempt_id is not None:
                await _adopt_lost_attempt(tx, attempt_id, provider_id, at)
            row = await tx.fetchone(
                "SELECT a.id, a.message_id, a.contact, a.channel, a.receipt, d.goal,"
                " d.waiting_attempt, d.done FROM attempts a JOIN deliveries d"
                " ON d.message_id = a.message_id AND d.contact = a.contact"
                " WHERE a.provider_id = ?", provider_id,
            )
            if row is None:
                return None
            found, message_id, contact, channel, current, goal, waiting, done = row
            if current is not None and _receipt_rank(current) >= state.rank:
                return None
            await tx.execute("UPDATE attempts SET receipt = ? WHERE id = ?", state.value, found)
            if state.reached:
                await _raise_status(tx, message_id, contact, "delivered", at)
            awaited = waiting == found and not done
            if awaited and state is ReceiptState.FAILED:
                # Due now: the escalation loop takes it at its next tick.
                await tx.execute(
                    "UPDATE deliveries SET waiting_for = 'receipt-failed', waiting_attempt = NULL,"
                    " next_action_at = ?, done = 0 WHERE message_id = ? AND contact = ?",
                    at, message_id, contact,
                )
            elif awaited and goal == "delivered" and state.reached:
                await _settle(tx, message_id, contact, at)
            return Receipt(found, message_id, contact, channel, state, goal, awaited)

        receipt: Receipt | None = await self.run(update)
        return receipt

    async def record_reply(
        self, event: InboundEvent, *, dedupe_key: str | None = None,
        opted_out: Sequence[str] = (),
    ) -> list[tuple[str, str]] | None:
        """Record what a person sent and its effect in one transaction: an acknowledgement
        ends every pending escalation of its contact; an opt-out records ``opted_out``
        contacts on the event's channel. None for a replay (nothing changes); otherwise
        the (message, contact) deliveries it acknowledged."""
        async def record(tx: Tx) -> list[tuple[str, str]] | None:
            if dedupe_key is not None and not await _first_time(tx, dedupe_key,
                                                                event.received_at):
                return None
            inserted = await tx.execute(
                "INSERT INTO inbound (id, channel, external_id, address, contact, kind, text,"
                " message_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (external_id) DO NOTHING",
                event.event_id, event.channel, event.external_id, event.address,
                event.contact, event.kind, event.text, event.message_id, event.received_at,
            )
            if not inserted:
                return None
            ended: list[tuple[str, str]] = []
            if event.kind == "ack" and event.contact is not None:
                ended = await _acknowledge(tx, event.contact, event.received_at)
            for name in opted_out:
                await tx.execute(
                    "INSERT INTO opt_outs (contact, channel, at) VALUES (?, ?, ?)"
                    " ON CONFLICT (contact, channel) DO NOTHING",
                    name, event.channel, event.received_at,
                )
            return ended

        result: list[tuple[str, str]] | None = await self.run(record)
        return result

    async def acknowledge(self, contact: str, at: float) -> list[tuple[str, str]]:
        """A person answered: every pending escalation for them stops. Returns what it ended."""
        ended: list[tuple[str, str]] = await self.run(lambda tx: _acknowledge(tx, contact, at))
        return ended

    async def waiting_for_ack(self, contact: str) -> list[tuple[str, str | None]]:
        """(message id, ack code) of the contact's deliveries awaiting a person."""
        rows = await self.run(lambda tx: tx.fetchall(
            "SELECT message_id, ack_code FROM deliveries WHERE contact = ? AND done = 0"
            " AND goal = 'acknowledged'", contact,
        ))
        return [(str(m), None if code is None else str(code)) for m, code in rows]

    async def attempt_by_provider_id(self, provider_id: str) -> StoredAttempt | None:
        row = await self.run(lambda tx: tx.fetchone(
            f"SELECT {_ATTEMPT} FROM attempts WHERE provider_id = ?", provider_id  # noqa: S608
        ))
        return None if row is None else StoredAttempt(*row)

    async def awaiting_receipts(self, limit: int = 200) -> list[StoredAttempt]:
        """Attempts a waiting delivery needs a receipt for (polled when no webhook comes)."""
        columns = ", ".join("a." + c.strip() for c in _ATTEMPT.split(","))
        rows = await self.run(lambda tx: tx.fetchall(
            f"SELECT {columns} FROM attempts a"  # noqa: S608
            " JOIN deliveries d ON d.waiting_attempt = a.id WHERE d.done = 0"
            " AND d.waiting_for IN ('receipt', 'ack') AND a.provider_id IS NOT NULL LIMIT ?",
            limit,
        ))
        return [StoredAttempt(*row) for row in rows]

    async def unsettled_attempts(
        self, channel: str, address: str, *, since: float, besides: str
    ) -> list[str]:
        rows = await self.run(lambda tx: tx.fetchall(
            "SELECT id FROM attempts WHERE channel = ? AND address = ? AND started_at >= ?"
            " AND id <> ? AND provider_id IS NULL AND (state = 'sending' OR verdict = 'unknown')",
            channel, address, since, besides,
        ))
        return [str(row[0]) for row in rows]

    async def record_inbound(self, event: InboundEvent) -> bool:
        """False when this provider event was already recorded (a replay)."""
        inserted = await self.run(lambda tx: tx.execute(
            "INSERT INTO inbound (id, channel, external_id, address, contact, kind, text,"
            " message_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (external_id) DO NOTHING",
            event.event_id, event.channel, event.external_id, event.address, event.contact,
            event.kind, event.text, event.message_id, event.received_at,
        ))
        return bool(inserted)

    async def inbox(self, limit: int = 100) -> list[InboundEvent]:
        rows = await self.run(lambda tx: tx.fetchall(
            "SELECT id, channel, external_id, address, contact, kind, text, message_id,"
            " received_at FROM inbound ORDER BY received_at DESC LIMIT ?", limit,
        ))
        return [InboundEvent(*row) for row in rows]

    async def acknowledged_since(self, since: float) -> set[tuple[str, str]]:
        """(contact, channel) of every acknowledgement received since ``since``."""
        rows = await self.run(lambda tx: tx.fetchall(
            "SELECT contact, channel FROM inbound WHERE kind = 'ack' AND received_at >= ?"
            " AND contact IS NOT NULL", since,
        ))
        return {(str(contact), str(channel)) for contact, channel in rows}

    async def first_time(self, key: str, at: float) -> bool:
        """Remember a webhook's idempotency key; False if it was seen before."""
        first: bool = await self.run(lambda tx: _first_time(tx, key, at))
        return first

    async def opt_out(self, contact: str, channel: str, at: float) -> None:
        await self.run(lambda tx: tx.execute(
            "INSERT INTO opt_outs (contact, channel, at) VALUES (?, ?, ?)"
            " ON CONFLICT (contact, channel) DO NOTHING", contact, channel, at,
        ))

    async def opt_outs(self) -> set[tuple[str, str]]:
        rows = await self.run(lambda tx: tx.fetchall("SELECT contact, channel FROM opt_outs"))
        return {(str(contact), str(channel)) for contact, channel in rows}

    async def get_value(self, key: str) -> str | None:
        row = await self.run(
            lambda tx: tx.fetchone("SELECT value FROM settings_kv WHERE key = ?", key)
        )
        return None if row is None else str(row[0])

    async def set_value(self, key: str, value: str) -> None:
        await self.run(lambda tx: tx.execute(
            "INSERT INTO settings_kv (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value", key, value,
        ))

    async def beat_instance(self, instance_id: str, kind: str, at: float) -> None:
        await self.run(lambda tx: tx.execute(
            "INSERT INTO instances (id, kind, heartbeat_at) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            instance_id, kind, at,
        ))

    async def live_instances(self, kind: str, since: float) -> list[str]:
        rows = await self.run(lambda tx: tx.fetchall(
            "SELECT id FROM instances WHERE kind = ? AND heartbeat_at >= ?", kind, since
        ))
        return [str(row[0]) for row in rows]


def _receipt_rank(value: str) -> int:
    try:
        return ReceiptState(value).rank
    except ValueError:  # written by a later version: never move it backwards
        return 99


async def _raise_status(tx: Tx, message_id: str, contact: str, status: str, at: float) -> None:
    """accepted < delivered < acknowledged: never move a delivery backwards."""
    rank = REACHED_RANK.get(status, 0)
    if not rank:
        return
    lower = [name for name, value in REACHED_RANK.items() if value < rank]
    lower += ["pending", "failed", "unknown", "expired"]
    marks = ", ".join("?" for _ in lower)
    await tx.execute(
        f"UPDATE deliveries SET status = ?, updated_at = ? WHERE message_id = ?"  # noqa: S608
        f" AND contact = ? AND status IN ({marks})", status, at, message_id, contact, *lower,
    )


async def _first_time(tx: Tx, key: str, at: float) -> bool:
    return bool(await tx.execute(
        "INSERT INTO webhook_events (key, at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        key, at,
    ))


async def _acknowledge(tx: Tx, contact: str, at: float) -> list[tuple[str, str]]:
    rows = await tx.fetchall(
        "SELECT message_id, contact FROM deliveries WHERE contact = ? AND done = 0"
        " AND goal = 'acknowledged'", contact,
    )
    for message_id, name in rows:
        await tx.execute(
            "UPDATE deliveries SET status = 'acknowledged', done = 1, updated_at = ?,"
            " next_action_at = NULL, waiting_for = NULL"
            " WHERE message_id = ? AND contact = ?", at, message_id, name,
        )
        await close_message_if_done(tx, message_id, at)
    return [(str(m), str(c)) for m, c in rows]


async def _settle(tx: Tx, message_id: str, contact: str, at: float) -> None:
    await tx.execute(
        "UPDATE deliveries SET done = 1, next_action_at = NULL, waiting_for = NULL"
        " WHERE message_id = ? AND contact = ?", message_id, contact,
    )
    await close_message_if_done(tx, message_id, at)


async def _adopt_lost_attempt(tx: Tx, attempt_id: str, provider_id: str, at: float) -> None:
    """An attempt whose answer never came (left sending, or settled as maybe sent) is the
    provider's ``provider_id``: the provider says so, naming the attempt we gave it."""
    row = await tx.fetchone(
        "SELECT message_id, contact, channel FROM attempts WHERE id = ? AND provider_id IS NULL"
        " AND (state = 'sending' OR verdict = 'unknown')", attempt_id,
    )
    if row is None or await tx.fetchone(
        "SELECT 1 FROM attempts WHERE provider_id = ?", provider_id
    ):
        return
    message_id, contact, channel = row
    await tx.execute(
        "UPDATE attempts SET state = 'done', verdict = 'accepted', scope = 'channel',"
        " provider_id = ?, detail = ?, finished_at = COALESCE(finished_at, ?) WHERE id = ?",
        provider_id, "the provider's status callback named this attempt after its answer was"
        " lost", at, attempt_id,
    )
    await _raise_status(tx, message_id, contact, "accepted", at)
    await tx.execute(
        "UPDATE deliveries SET channel = COALESCE(channel, ?) WHERE message_id = ?"
        " AND contact = ?", channel, message_id, contact,
    )


async def close_message_if_done(tx: Tx, message_id: str, at: float) -> None:
    await tx.execute(
        "UPDATE messages SET state = 'done', finished_at = ? WHERE id = ?"
        " AND state IN ('waiting', 'queued')"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = ? AND d.done = 0)",
        at, message_id, message_id,
    )
