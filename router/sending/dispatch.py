"""Running a message to its contacts: new runs, idempotent repeats, attaching, resuming.

Everything is recorded before anything is sent: the message, then its audience in
batches as it is read (one delivery per contact, with the addresses it will use),
then each attempt as ``sending``. The work is read back from the store a page at a
time, so an audience of a million is never held in memory, and so is a large run's
result. A repeat of an idempotency key returns the first run's results; a repeat while
the first run is alive waits for it; a run whose process died is resumed, its in-doubt
attempts reconciled with the provider where possible and otherwise treated as maybe
sent, never resent on the same channel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from config.contacts import Contact
from router.model.channel import Channel
from router.model.clock import Clock
from router.model.errors import BadInput
from router.model.ids import new_id
from router.model.message import Message
from router.model.options import SendOptions
from router.model.results import BroadcastResult, DeliveryResult
from router.rules.routing import RoutePlanner, Routing
from router.sending.delivery import Deliverer
from router.sending.escalation import Escalator
from router.sending.outbox import contact_from_json, contact_json, message_from_json
from router.sending.ownership import Claimed, Heartbeat, LostOwnership
from router.sending.recovery import Recovery
from router.store.base import (
    Claim,
    DeliverySeed,
    KeyConflict,
    MessageRecord,
    Store,
    StoredAttempt,
    StoredDelivery,
    StoreFailure,
)
from router.store.results import notes_json, stored_attempt

ResultHook = Callable[[DeliveryResult], None]
Audience = Callable[[], Iterable[Contact]]
"""The contacts a message goes to, read again each time it is called: once to check the
words fit, once to record them; never held as a whole."""
ATTACH_POLL = 0.5
BATCH = 2000
"""Deliveries recorded per transaction, and read back per page of work."""
HOLD = 1000
"""Up to this many contacts, a run's results are held and returned; beyond, they stay in
the store and are read back when iterated."""
log = logging.getLogger("backchannel")


@dataclass(frozen=True, slots=True)
class _Run:
    """One message this process works on now."""

    message_id: str
    record: MessageRecord
    planner: RoutePlanner
    claimed: Claimed


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
        self._routing = routing
        self._clock = clock
        self._concurrency = concurrency
        self._heartbeat = heartbeat
        self._escalator = escalator
        self._recovery = Recovery(store=store, channels=channels, clock=clock)

    async def run(
        self,
        message: Message,
        contacts: Audience,
        *,
        audience: Mapping[str, object],
        options: SendOptions,
        on_result: ResultHook | None = None,
    ) -> BroadcastResult:
        planner = self._routing.planner(message)
        claim, record = await self._claim(message, contacts, audience, options, planner)
        if claim.action in ("new", "record"):
            claimed = self._heartbeat.hold(claim.message_id, claim.epoch)
            try:
                count = await self._record_audience(claim, record, contacts, claimed,
                                                    queued=False)
            except LostOwnership:
                self._heartbeat.release(claim.message_id)
                if await self._store.settle_stopped(claim.message_id, at=self._clock.time()):
                    # Its incident was resolved before it was all recorded: nothing of it
                    # was sent, and nothing will be.
                    return dataclasses.replace(await self.results(claim.message_id),
                                               stopped=True)
                return await self.results(claim.message_id, taken_over=True)
            except BaseException:
                self._heartbeat.release(claim.message_id)
                raise
            return await self._work(_Run(claim.message_id, record, planner, claimed), on_result,
                                    hold=count <= HOLD)
        if claim.action == "attach":
            return await self._attach(claim.message_id, on_result)
        if claim.action == "resume":
            return await self.resume(claim.message_id, claim.epoch, on_result)
        return await self.results(claim.message_id)

    async def enqueue(
        self,
        message: Message,
        contacts: Audience,
        *,
        audience: Mapping[str, object],
        options: SendOptions,
    ) -> str:
        """Record the work for workers (``backchannel worker``) and return at once."""
        planner = self._routing.planner(message)
        claim, record = await self._claim(message, contacts, audience, options, planner)
        if claim.action in ("new", "record"):
            claimed = self._heartbeat.hold(claim.message_id, claim.epoch)
            try:
                await self._record_audience(claim, record, contacts, claimed, queued=True)
            finally:
                self._heartbeat.release(claim.message_id)
            await self._store.wake_workers()
        return claim.message_id

    async def _claim(
        self,
        message: Message,
        contacts: Audience,
        audience: Mapping[str, object],
        options: SendOptions,
        planner: RoutePlanner,
    ) -> tuple[Claim, MessageRecord]:
        """Check, then record the message (or find the earlier run of its idempotency key):
        bad input is refused before anything is recorded."""
        if not planner.fits_everywhere:
            self._routing.refuse_unfit(planner, contacts())
        record = self._record(message, audience, options)
        try:
            claim = await self._store.begin_message(
                record, owner=self._heartbeat.owner, owner_is_alive=self._heartbeat.liveness,
            )
        except KeyConflict as exc:
            raise BadInput(f"idempotency key: {exc}") from None
        return claim, record

    async def _record_audience(
        self, claim: Claim, record: MessageRecord, contacts: Audience, claimed: Claimed, *,
        queued: bool,
    ) -> int:
        """Record every contact's delivery, a batch per transaction, then seal the message:
        nothing is sent before the whole audience is on disk. Returns the audience's size."""
        count = 0
        contact_iter = iter(contacts())
        goal = record.goal
        while batch := list(itertools.islice(contact_iter, BATCH)):
            await claimed.confirm()
            seeds = [DeliverySeed(c.name, contact_json(c),
                                  _ack_code() if goal == "acknowledged" else None)
                     for c in batch]
            if not await self._store.record_deliveries(
                claim.message_id, seeds, first_position=count, at=record.created_at, goal=goal,
                fence=claimed.fence, fresh=claim.action == "new",
            ):
                raise LostOwnership(f"{claim.message_id}: taken over while being recorded")
            count += len(batch)
        if not await self._store.seal_message(claim.message_id, fence=claimed.fence,
                                              queued=queued):
            raise LostOwnership(f"{claim.message_id}: taken over while being recorded")
        return count

    async def resume(
        self, message_id: str, epoch: int, on_result: ResultHook | None = None
    ) -> BroadcastResult:
        """Finish a message this process owns now (at ``epoch``): settle in-doubt attempts,
        then go on."""
        claimed = self._heartbeat.hold(message_id, epoch)
        loaded = await self._store.load_message_record(message_id)
        if loaded is None:
            self._heartbeat.release(message_id)
            raise BadInput(f"message: no message {message_id!r} in the store")
        record, state = loaded
        message = message_from_json(record.body_json)
        planner = self._routing.planner(message)
        if state == "recording":  # its recorder died before sealing it: nothing was sent
            self._heartbeat.release(message_id)
            log.info("%s was never finished recording: nothing of it was sent", message_id)
            return await self.results(message_id)
        await self._recovery.settle(await self._store.in_doubt(message_id), message)
        log.info("resuming %s", message_id)
        run = _Run(message_id, record, planner, claimed)
        done = await self._work(run, on_result, hold=False)
        return await self.results(message_id, taken_over=done.taken_over)

    async def _work(self, run: _Run, on_result: ResultHook | None, *,
                    hold: bool) -> BroadcastResult:
        """Work every pending delivery of a message this process holds, ``concurrency`` at
        a time, reading them from the store a page at a time."""
        queue: asyncio.Queue[tuple[StoredDelivery, list[StoredAttempt]] | None] = asyncio.Queue(
            maxsize=2 * self._concurrency
        )
        held: dict[int, DeliveryResult] = {}
        lost: list[LostOwnership] = []
        failed: list[StoreFailure] = []
        deliverer, record = self._deliverer, run.record
        requests_before = deliverer.requests

        async def produce() -> None:
            after = -1
            try:
                while not (lost or failed):
                    page = await self._store.pending_page(run.message_id, after=after,
                                                          limit=BATCH)
                    if not page:
                        return
                    prior = await self._store.attempts_of(run.message_id,
                                                          [d.contact for d in page])
                    for delivery in page:
                        await queue.put((delivery, list(prior.get(delivery.contact, ()))))
                    after = page[-1].position
            except StoreFailure as exc:
                failed.append(exc)
            finally:
                for _ in range(self._concurrency):
                    await queue.put(None)

        async def worker() -> None:
            # A fixed pool pulling from one queue: bounded concurrency without a task (and
            # its memory) per contact, and each route planned only when its turn comes.
            while (item := await queue.get()) is not None:
                if lost or failed:
                    continue  # requests in flight finish; nothing new starts
                delivery, rows = item
                contact = contact_from_json(delivery.contact, delivery.addresses_json)
                try:
                    result = await deliverer.deliver(
                        run.message_id, run.planner(contact),
                        prior=[stored_attempt(r) for r in rows],
                        expires_at=record.expires_at, ack_code=delivery.ack_code,
                        claimed=run.claimed,
                    )
                    if (notes := notes_json(result)) is not None:
                        await self._store.record_notes(run.message_id, delivery.contact, notes)
                    await self._escalator.begin_wait(result, record.goal)
                except LostOwnership as exc:
                    lost.append(exc)
                    continue
                except StoreFailure as exc:
                    failed.append(exc)
                    continue
                if hold:
                    held[delivery.position] = result
                if on_result is not None:
                    on_result(result)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(produce())
                for _ in range(self._concurrency):
                    group.create_task(worker())
            try:
                await deliverer.flush()  # answers recorded in the background are on disk
            except StoreFailure as exc:
                failed.append(exc)
            if failed:
                # What was recorded stands; the message stays pending, for a resume.
                raise failed[0].after(deliverer.requests - requests_before)
            if not lost:
                await self._store.finish_message(
                    run.message_id, owner=self._heartbeat.owner, at=self._clock.time()
                )
        finally:
            self._heartbeat.release(run.message_id)
        if lost:
            if await self._store.settle_stopped(run.message_id, at=self._clock.time()):
                log.info("%s: stopped (its incident was resolved); nothing more is sent",
                         run.message_id)
                await self._store.finish_message(
                    run.message_id, owner=self._heartbeat.owner, at=self._clock.time()
                )
                return dataclasses.replace(await self.results(run.message_id), stopped=True)
            log.warning("%s: stopped (%s); the process that took it over finishes it",
                        run.message_id, lost[0])
            return await self.results(run.message_id, taken_over=True)
        if hold:
            return BroadcastResult(run.message_id, tuple(held[k] for k in sorted(held)))
        return await self.results(run.message_id)

    async def results(self, message_id: str, *, taken_over: bool = False) -> BroadcastResult:
        """A message's results as the store has them: held when few, else read back from
        the store each time they are iterated."""
        source = self._store.results_of(message_id)
        if await self._store.count_deliveries(message_id) <= HOLD:
            return BroadcastResult(message_id, tuple(source), taken_over=taken_over)
        return BroadcastResult(message_id, taken_over=taken_over, stored=source)

    async def _attach(self, message_id: str, on_result: ResultHook | None) -> BroadcastResult:
        """Another live process runs this message: wait for its results, send nothing."""
        log.info("%s is being sent by another process: waiting for it", message_id)
        while True:
            found = await self._store.message_owner(message_id)
            if found is None:
                raise BadInput(f"message: no message {message_id!r} in the store")
            state, owner, heartbeat_at = found
            if state in ("done", "waiting", "queued"):
                return await self.results(message_id)
            if self._heartbeat.liveness(owner, heartbeat_at):
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
        if any(row.state == "sending" for row in rows):
            await self._recovery.settle(rows, message)
            rows = (await self._store.attempts_of(message_id, [contact_name])).get(
                contact_name, []
            )
        contact = contact_from_json(contact_name, delivery.addresses_json)
        route = self._routing.planner(message)(contact)
        result = await self._deliverer.deliver(
            message_id, route, prior=[stored_attempt(row) for row in rows],
            expires_at=record.expires_at, ack_code=delivery.ack_code, claimed=claimed,
        )
        await self._deliverer.flush()
        if (notes := notes_json(result)) is not None:
            await self._store.record_notes(message_id, contact_name, notes)
        await self._escalator.begin_wait(result, record.goal)
        return result

    def _record(
        self, message: Message, audience: Mapping[str, object], options: SendOptions,
    ) -> MessageRecord:
        until = options.until
        body = json.dumps({**message.to_json(), "until": until}, sort_keys=True,
                          ensure_ascii=False)
        audience_json = json.dumps(audience, sort_keys=True)
        now = self._clock.time()
        return MessageRecord(
            message_id=new_id("msg"),
            body_json=body,
            audience_json=audience_json,
            fingerprint=hashlib.sha256(f"{body}\n{audience_json}".encode()).hexdigest(),
            created_at=now,
            idempotency_key=options.idempotency_key,
            expires_at=None if options.expires_after is None else now + options.expires_after,
            goal=until,
            incident_id=None if options.incident is None else options.incident.incident_id,
            incident_entry=None if options.incident is None else options.incident.entry_id,
        )


def _ack_code() -> str:
    """Four digits to reply with: short enough to type on a phone keypad."""
    return f"{secrets.randbelow(9000) + 1000}"
