"""Ownership of running messages, and turning what the store recorded back into results.

A message being sent belongs to one process (its owner), which renews a
heartbeat while it works. A second run of the same idempotency key attaches
to a live owner and waits; work whose owner died (a crash, SIGKILL) is taken
over by ``backchannel resume`` or by the next long-running router.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable

from config.contacts import Contact
from router.model.message import Message
from router.model.outcome import Outcome, Scope, Verdict
from router.model.results import Attempt, AttemptKind, BroadcastResult, DeliveryResult, Status
from router.model.tasks import cancel
from router.store.base import Store, StoredAttempt, StoredMessage

HEARTBEAT_EVERY = 2.0
LEASE = 15.0
"""A pending message whose owner has not renewed its heartbeat for this long is orphaned."""
_HOST = socket.gethostname()


def new_owner() -> str:
    return f"{_HOST}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_is_alive(owner: str | None, heartbeat_at: float | None) -> bool:
    """A process on this host is checked directly; elsewhere, by its heartbeat."""
    if owner is None:
        return False
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host == _HOST and pid_text.isdigit():
        if int(pid_text) == os.getpid():
            return True
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return heartbeat_at is not None and time.time() - heartbeat_at < LEASE


class Heartbeat:
    """Renews this process's claim on the messages it is working on."""

    def __init__(self, store: Store, owner: str) -> None:
        self._store = store
        self.owner = owner
        self.active: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="backchannel-heartbeat")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel([task])

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY)
            if self.active:
                with contextlib.suppress(Exception):  # a busy store: try again next beat
                    await self._store.heartbeat(
                        sorted(self.active), owner=self.owner, at=time.time()
                    )


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
    return Attempt(row.attempt_id, row.channel, outcome, row.started_at, AttemptKind(row.kind))


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
