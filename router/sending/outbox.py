"""What the store recorded, back into results and messages; and named leases.

Ownership of running work (heartbeats, fences, take-overs) is in
:mod:`router.sending.ownership`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

from config.contacts import Contact
from router.model.message import Message
from router.model.outcome import Outcome, Scope, Verdict
from router.model.results import Attempt, AttemptKind, BroadcastResult, DeliveryResult, Status
from router.store.base import Store, StoredAttempt, StoredMessage


def stored_attempt(row: StoredAttempt) -> Attempt:
    """An attempt as recorded; one left ``sending`` reads as in doubt."""
    if row.state == "sending" or row.verdict is None:
        outcome = Outcome.unknown("in doubt: the process stopped before the answer was recorded")
    else:
        outcome = Outcome(
            Verdict(row.verdict), Scope(row.scope or Scope.CHANNEL.value), row.detail or "",
            row.provider_id, row.retry_after,
            (row.finished_at or row.started_at) - row.started_at,
        )
    return Attempt(row.attempt_id, row.channel, outcome, row.started_at, AttemptKind(row.kind),
                   row.provider)


def attempts_by_contact(stored: StoredMessage) -> dict[str, list[Attempt]]:
    found: dict[str, list[Attempt]] = {d.contact: [] for d in stored.deliveries}
    for row in stored.attempts:
        found.setdefault(row.contact, []).append(stored_attempt(row))
    return found


def recorded_results(stored: StoredMessage) -> BroadcastResult:
    """The results a finished run recorded, as that run returned them."""
    attempts = attempts_by_contact(stored)
    results = []
    for delivery in stored.deliveries:
        status = Status.UNKNOWN if delivery.status == "pending" else Status(delivery.status)
        results.append(DeliveryResult(
            stored.record.message_id, delivery.contact, status, delivery.channel,
            tuple(attempts.get(delivery.contact, ())),
        ))
    return BroadcastResult(stored.record.message_id, tuple(results))


def contact_json(contact: Contact) -> str:
    """The contact as recorded with a delivery: where this message was meant to go."""
    return json.dumps(
        {"addresses": dict(contact.addresses), "order": contact.order}, sort_keys=True
    )


def contact_from_json(name: str, text: str) -> Contact:
    data = json.loads(text)
    order = tuple(data["order"]) if data.get("order") is not None else None
    return Contact(name=name, addresses=data["addresses"], order=order)


def message_from_json(text: str) -> Message:
    data = json.loads(text)
    data.pop("until", None)  # recorded with the words, for the idempotency fingerprint
    return Message(**data)


def named_lease(store: Store, name: str, owner: str) -> Callable[[float], Awaitable[bool]]:
    """A job only one instance on this store should do at a time (polling, probing)."""
    async def hold(seconds: float) -> bool:
        now = time.time()
        return await store.try_lease(name, owner, now=now, until=now + seconds)

    return hold
