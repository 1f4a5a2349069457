"""Escalation: when a receipt or a person does not come in time, the next channel.

Waits live in the store (``next_action_at`` on each delivery), so a restarted
server, a worker, or the CLI that waits all carry on from the same point; a
compare-and-set on that column makes sure only one of them acts. Within one
round each channel is tried at most once, and one that may already have
delivered is never resent; a new round (``repeat``) is a deliberate new attempt.
"""

from __future__ import annotations

import asyncio
import logging

from config.twoway import EscalationSettings
from router.model.clock import Clock
from router.model.results import AttemptKind, DeliveryResult
from router.rules.routing import Route, Routing
from router.sending.delivery import Deliverer
from router.sending.outbox import contact_from_json, message_from_json
from router.sending.ownership import Claimed, LostOwnership
from router.store.base import Store

log = logging.getLogger("backchannel.escalation")


class Escalator:
    """Acts on deliveries whose wait is over."""

    def __init__(
        self,
        *,
        store: Store,
        deliverer: Deliverer,
        routing: Routing,
        clock: Clock,
        settings: EscalationSettings,
        concurrency: int = 64,
    ) -> None:
        self._store = store
        self._deliverer = deliverer
        self._routing = routing
        self._clock = clock
        self.settings = settings
        self._concurrency = concurrency

    async def begin_wait(
        self, result: DeliveryResult, goal: str, *, round_: int = 0, last_round: bool = False
    ) -> None:
        """After a channel took the message (or none did): what to wait for, until when."""
        now = self._clock.time()
        if goal == "accepted":
            return
        accepted = next((a for a in reversed(result.attempts) if a.outcome.ok), None)
        store, message_id, contact = self._store, result.message_id, result.contact
        if accepted is None:
            if goal == "acknowledged" and not last_round and round_ < self.settings.repeats:
                await store.wait_for(message_id, contact, waiting_for="repeat", attempt_id=None,
                                     at=now + self.settings.repeat_every, round_=round_ + 1)
            else:
                await store.settle(message_id, contact, status=None, at=now)
            return
        capabilities = self._routing.capabilities(accepted.channel)
        if goal == "delivered":
            if capabilities is None or not capabilities.reports_delivery:
                await store.settle(message_id, contact, status=None, at=now)  # accepted is all
                return
            await store.wait_for(message_id, contact, waiting_for="receipt",
                                 attempt_id=accepted.attempt_id,
                                 at=now + self.settings.delivery_wait)
            return
        await store.wait_for(message_id, contact, waiting_for="ack",
                             attempt_id=accepted.attempt_id, at=now + self.settings.ack_wait)

    def now(self) -> float:
        return self._clock.time()

    async def run_due(self) -> int:
        """Act on every delivery whose wait is over; returns how many were handled.

        A broadcast's waits all end together: they are worked concurrently, so the
        last contact does not escalate a whole queue of provider round trips late.
        """
        due = await self._store.due(self._clock.time(), limit=1000)
        handled = 0
        slots = asyncio.Semaphore(self._concurrency)

        async def handle(message_id: str, contact: str, at: float) -> None:
            nonlocal handled
            async with slots:
                if not await self._store.claim_due(message_id, contact, at):
                    return  # another process got there first
                handled += 1
                try:
                    await self._step(message_id, contact)
                except Exception:  # one delivery's trouble must not stall the others
                    log.exception("escalation of %s for %s failed", message_id, contact)

        async with asyncio.TaskGroup() as group:
            for item in due:
                group.create_task(handle(*item))
        return handled

    async def _step(self, message_id: str, contact_name: str) -> None:
        loaded = await self._store.load_delivery(message_id, contact_name)
        if loaded is None:
            return
        record, delivery, rows = loaded
        if delivery.done:
            return
        now = self._clock.time()
        if record.expires_at is not None and now >= record.expires_at:
            await self._store.settle(message_id, contact_name, status=None, at=now)
            return
        message = message_from_json(record.body_json)
        contact = contact_from_json(delivery.contact, delivery.addresses_json)
        round_ = delivery.round
        tried = {row.channel for row in rows if row.round == round_}
        route = self._routing.planner(message)(contact)
        steps = [step for step in route.steps if step.channel not in tried]
        kind = AttemptKind.REPEAT if round_ > 0 else AttemptKind.ESCALATION
        if steps:
            log.info("%s: %s not met, escalating to %s", contact_name,
                     record.goal, steps[0].channel)
            try:
                result = await self._deliverer.deliver(
                    message_id, Route(contact, tuple(steps), route.notes), kind=kind,
                    round_=round_, ack_code=delivery.ack_code, expires_at=record.expires_at,
                    settle=False, claimed=Claimed.while_waiting(contact_name),
                )
            except LostOwnership:
                # Acknowledged, or its incident resolved, while this step was under way:
                # the store started no attempt, so nothing was sent, and nothing more is
                # to be done for it.
                log.info("%s: %s stopped waiting meanwhile; no escalation", contact_name,
                         message_id)
                await self._store.settle(message_id, contact_name, status=None,
                                         at=self._clock.time())
                return
            if result.reached:
                await self.begin_wait(result, record.goal, round_=round_)
                return
        if record.goal == "acknowledged" and round_ < self.settings.repeats:
            await self._store.wait_for(message_id, contact_name, waiting_for="repeat",
                                       attempt_id=None, at=now + self.settings.repeat_every,
                                       round_=round_ + 1)
            return
        log.info("%s: chain exhausted for %s", contact_name, message_id)
        await self._store.settle(message_id, contact_name, status=None, at=now)
