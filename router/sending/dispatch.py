"""Running a message to its contacts: new runs, idempotent repeats, attaching, resuming.

Everything is recorded before anything is sent: the message and one delivery per
contact (with the addresses it will use), then each attempt as ``sending``.
A repeat of an idempotency key returns the first run's results; a repeat while
the first run is alive waits for it; a run whose process died is resumed, its
in-doubt attempts reconciled with the provider where possible and otherwise
treated as maybe sent, never resent on the same channel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

from config.contacts import Contact
from router.model.channel import Channel, Reconciling
from router.model.clock import Clock
from router.model.errors import BadInput
from router.model.ids import new_id
from router.model.message import Message
from router.model.options import SendOptions
from router.model.outcome import Outcome
from router.model.results import Attempt, BroadcastResult, DeliveryResult
from router.rules.routing import RoutePlanner, Routing
from router.sending.delivery import Deliverer
from router.sending.escalation import Escalator
from router.sending.outbox import (
    attempts_by_contact,
    contact_from_json,
    contact_json,
    message_from_json,
    recorded_results,
    stored_attempt,
)
from router.sending.ownership import Claimed, Heartbeat, LostOwnership
from router.store.base import (
    Claim,
    DeliverySeed,
    KeyConflict,
    MessageRecord,
    Store,
    StoredAttempt,
    StoredMessage,
    StoreFailure,
)

ResultHook = Callable[[DeliveryResult], None]
Work = tuple[Contact, list[Attempt], str | None]
"""A contact still to reach, the attempts made so far, its acknowledgement code."""
ATTACH_POLL = 0.5
RIVAL_WINDOW = 120.0
"""Seconds before an in-doubt attempt in which another one to the same address could still
have created the message found at the provider (a request stalls up to its read timeout)."""
log = logging.getLogger("backchannel")


class Dispatcher:
    """Owns the lifecycle of messages in one router process."""

    def __init__(
        self,
        *,
        store: Store,
        deliverer: Deliverer,
        channels: Mapping[str, Channel],
        routing: Routing,
        clock: Clock,
        concurrency: int,
        heartbeat: Heartbeat,
        escalator: Escalator,
    ) -> None:
        self._store = store
        self._deliverer = deliverer
        self._channels = channels
        self._routing = routing
        self._clock = clock
        self._concurrency = concurrency
        self._heartbeat = heartbeat
        self._escalator = escalator

    async def run(
        self,
        message: Message,
        contacts: Sequence[Contact],
        *,
        audience: Mapping[str, object],
        options: SendOptions,
        on_result: ResultHook | None = None,
    ) -> BroadcastResult:
        planner = self._routing.planner(message)
        claim, record, codes = await self._claim(message, contacts, audience, options, planner,
                                                 owner=self._heartbeat.owner, state="pending")
        if claim.action == "new":
            work = ((contact, list[Attempt](), codes[contact.name]) for contact in contacts)
            claimed = self._heartbeat.hold(claim.message_id, claim.epoch)
            return await self._work(claim.message_id, planner, work, len(contacts), record,
                                    on_result, claimed)
        if claim.action == "attach":
            return await self._attach(claim.message_id, on_result)
        if claim.action == "resume":
            return await self.resume(claim.message_id, claim.epoch, on_result)
        stored = await self._load(claim.message_id)
        return recorded_results(stored)

    async def enqueue(
        self,
        message: Message,
        contacts: Sequence[Contact],
        *,
        audience: Mapping[str, object],
        options: SendOptions,
    ) -> str:
        """Record the work for workers (``backchannel worker``) and return at once."""
        planner = self._routing.planner(message)
        claim, _, _ = await self._claim(message, contacts, audience, options, planner,
                                        owner=None, state="queued")
        await self._store.wake_workers()
        return claim.message_id

    async def _claim(
        self,
        message: Message,
        contacts: Sequence[Contact],
        audience: Mapping[str, object],
        options: SendOptions,
        planner: RoutePlanner,
        *,
        owner: str | None,
        state: Literal["pending", "queued"],
    ) -> tuple[Claim, MessageRecord, dict[str, str | None]]:
        """Check, then record the message and its deliveries (or find the earlier run of
        its idempotency key): bad input is refused before anything is recorded."""
        self._routing.refuse_unfit(planner, contacts)
        record, codes = self._record(message, contacts, audience, options)
        snapshot = [DeliverySeed(c.name, contact_json(c), codes[c.name]) for c in contacts]
        try:
            claim = await self._store.claim_message(
                record, snapshot, owner=owner, owner_is_alive=self._heartbeat.liveness,
                state=state,
            )
        except KeyConflict as exc:
            raise BadInput(f"idempotency key: {exc}") from None
        return claim, record, codes

    async def resume(
        self, message_id: str, epoch: int, on_result: ResultHook | None = None
    ) -> BroadcastResult:
        """Finish a message this process owns now (at ``epoch``): settle in-doubt attempts,
        then go on."""
        claimed = self._heartbeat.hold(message_id, epoch)
        stored = await self._load(message_id)
        message = message_from_json(stored.record.body_json)
        attempts = attempts_by_contact(stored)
        pending = [d for d in stored.deliveries if d.status == "pending"]
        await self._settle_in_doubt(stored.attempts, message, attempts,
                                    {d.contact for d in pending},
                                    {d.contact: d.ack_code for d in stored.deliveries})
        work = [(contact_from_json(d.contact, d.addresses_json), attempts[d.contact], d.ack_code)
                for d in pending]
        log.info("resuming %s: %d of %d deliveries pending", message_id, len(work),
                 len(stored.deliveries))
        ran = await self._work(message_id, self._routing.planner(message), iter(work),
                               len(work), stored.record, on_result, claimed)
        final = recorded_results(await self._load(message_id))
        return dataclasses.replace(final, taken_over=ran.taken_over)

    async def _work(
        self,
        message_id: str,
        planner: RoutePlanner,
        work: Iterator[Work],
        count: int,
        record: MessageRecord,
        on_result: ResultHook | None,
        claimed: Claimed,
    ) -> BroadcastResult:
        results: list[DeliveryResult | None] = [None] * count
        pending = enumerate(work)
        deliverer = self._deliverer
        lost: list[LostOwnership] = []
        failed: list[StoreFailure] = []
        requests_before = deliverer.requests

        async def worker() -> None:
            # A fixed pool pulling from one iterator: bounded concurrency without a
            # task (and its memory) per contact, and each route planned only when its
            # turn comes, which matters at 100,000 contacts.
            for index, (contact, prior, ack_code) in pending:
                if lost or failed:
                    return  # requests in flight finish; nothing new starts
                try:
                    result = await deliverer.deliver(
                        message_id, planner(contact), prior=prior, expires_at=record.expires_at,
                        ack_code=ack_code, claimed=claimed,
                    )
                    await self._escalator.begin_wait(result, record.goal)
                except LostOwnership as exc:
                    lost.append(exc)
                    return
                except StoreFailure as exc:
                    failed.append(exc)
                    return
                results[index] = result
                if on_result is not None:
                    on_result(result)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self._concurrency, count)):
                    group.create_task(worker())
            if failed:
                # What was recorded stands; the message stays pending, for a resume.
                raise failed[0].after(deliverer.requests - requests_before)
            if not lost:
                await self._store.finish_message(
                    message_id, owner=self._heartbeat.owner, at=self._clock.time()
                )
        finally:
            self._heartbeat.release(message_id)
        if lost:
            log.warning("%s: stopped (%s); the process that took it over finishes it",
                        message_id, lost[0])
            taken = recorded_results(await self._load(message_id))
            return dataclasses.replace(taken, taken_over=True)
        return BroadcastResult(message_id, tuple(r for r in results if r is not None))

    async def _attach(self, message_id: str, on_result: ResultHook | None) -> BroadcastResult:
        """Another live process runs this message: wait for its results, send nothing."""
        log.info("%s is being sent by another process: waiting for it", message_id)
        while True:
            stored = await self._load(message_id)
            if stored.state == "done":
                return recorded_results(stored)
            if self._heartbeat.liveness(stored.owner, stored.heartbeat_at):
                await asyncio.sleep(ATTACH_POLL)
                continue
            epoch = await self._store.take_over(
                message_id, owner=self._heartbeat.owner, owner_is_alive=self._heartbeat.liveness
            )
            if epoch is not None:
                return await self.resume(message_id, epoch, on_result)
            await asyncio.sleep(ATTACH_POLL)

    async def work_on(
        self, message_id: str, contact_name: str, claimed: Claimed
    ) -> DeliveryResult | None:
        """One leased delivery of a queued message, as a worker takes it (perhaps from a
        worker that died: its in-doubt attempts are settled first, never resent).

        Raises :class:`LostOwnership` when another worker took the lease over meanwhile.
        """
        loaded = await self._store.load_delivery(message_id, contact_name)
        if loaded is None:
            return None
        record, delivery, rows = loaded
        if delivery.done or delivery.status != "pending":
            return None
        message = message_from_json(record.body_json)
        attempts = {contact_name: [stored_attempt(row) for row in rows]}
        await self._settle_in_doubt(rows, message, attempts, {contact_name},
                                    {contact_name: delivery.ack_code})
        contact = contact_from_json(contact_name, delivery.addresses_json)
        route = self._routing.planner(message)(contact)
        result = await self._deliverer.deliver(
            message_id, route, prior=attempts[contact_name], expires_at=record.expires_at,
            ack_code=delivery.ack_code, claimed=claimed,
        )
        await self._escalator.begin_wait(result, record.goal)
        return result

    def _record(
        self,
        message: Message,
        contacts: Sequence[Contact],
        audience: Mapping[str, object],
        options: SendOptions,
    ) -> tuple[MessageRecord, dict[str, str | None]]:
        until = options.until
        body = json.dumps({**message.to_json(), "until": until}, sort_keys=True,
                          ensure_ascii=False)
        audience_json = json.dumps(audience, sort_keys=True)
        now = self._clock.time()
        record = MessageRecord(
            message_id=new_id("msg"),
            body_json=body,
            audience_json=audience_json,
            fingerprint=hashlib.sha256(f"{body}\n{audience_json}".encode()).hexdigest(),
            created_at=now,
            idempotency_key=options.idempotency_key,
            expires_at=None if options.expires_after is None else now + options.expires_after,
            goal=until,
        )
        codes = {c.name: _ack_code() if until == "acknowledged" else None for c in contacts}
        return record, codes

    async def _settle_in_doubt(
        self,
        rows: Sequence[StoredAttempt],
        message: Message,
        attempts: dict[str, list[Attempt]],
        pending: set[str],
        codes: Mapping[str, str | None],
    ) -> None:
        """Attempts left ``sending`` by a dead process: ask the provider, else maybe sent."""
        claimed: set[str] = set()
        for row in rows:
            if row.state != "sending":
                continue
            outcome = await self._reconcile(row, message, codes.get(row.contact), claimed)
            delivered = outcome.ok and row.contact in pending
            await self._store.finish_attempt(
                row.attempt_id, outcome, self._clock.time(),
                delivery_status="accepted" if delivered else None,
                delivery_channel=row.channel if delivered else None,
            )
            if outcome.provider_id:
                claimed.add(outcome.provider_id)
            attempts[row.contact] = [
                Attempt(a.attempt_id, a.channel, outcome, a.started_at, a.kind, a.provider)
                if a.attempt_id == row.attempt_id else a
                for a in attempts[row.contact]
            ]

    async def _reconcile(
        self, row: StoredAttempt, message: Message, ack_code: str | None, claimed: set[str]
    ) -> Outcome:
        """Ask the provider what an in-doubt attempt did. Only an unambiguous answer counts:
        exactly one message with this attempt's words, from its sender to its address,
        created since it began, that no other attempt owns or could have made (another
        attempt to that address still in doubt could be its author: then nobody claims it).
        A call cannot be matched (the provider does not return what it spoke), nor a
        template the provider rendered. Anything else stays in doubt, until a status
        callback that names the attempt settles it: a duplicate on the next channel beats
        silence, and one message's request must never be credited to another."""
        channel = (self._channels.get(f"{row.channel}.{row.provider}")
                   or self._channels.get(row.channel))
        in_doubt = "in doubt: the process stopped before the provider's answer was recorded"
        if not isinstance(channel, Reconciling):
            return Outcome.unknown(f"{in_doubt}; the provider cannot say which request it was")
        words = dataclasses.replace(message.render(row.channel), ack_code=ack_code)
        candidates = await channel.reconcile(row.address, words, since=row.started_at)
        if candidates is None:
            return Outcome.unknown(f"{in_doubt}; the provider could not tell")
        rivals = await self._store.unsettled_attempts(
            row.channel, row.address, since=row.started_at - RIVAL_WINDOW, besides=row.attempt_id
        )
        if candidates and rivals:
            return Outcome.unknown(f"{in_doubt}; {len(rivals)} other request(s) to this address"
                                   " are in doubt too: the match would be a guess")
        unowned = [
            sid for sid in candidates
            if sid not in claimed and await self._store.attempt_by_provider_id(sid) is None
        ]
        if len(unowned) == 1:
            return Outcome.accepted(unowned[0], detail="found at the provider after the "
                                    "interruption")
        if unowned:
            return Outcome.unknown(f"{in_doubt}; {len(unowned)} possible matches at the provider")
        return Outcome.unknown(f"{in_doubt}; not found at the provider")

    async def _load(self, message_id: str) -> StoredMessage:
        stored = await self._store.load_message(message_id)
        if stored is None:
            raise BadInput(f"message: no message {message_id!r} in the store")
        return stored


def _ack_code() -> str:
    """Four digits to reply with: short enough to type on a phone keypad."""
    return f"{secrets.randbelow(9000) + 1000}"
