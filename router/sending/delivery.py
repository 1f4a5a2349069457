"""Taking one message to one contact along its route: retries, fallback, records.

The rules (design.md section 4), applied per provider inside a channel: transient ->
bounded retries on the same provider, honouring retry_after up to a cap, then the
channel's next provider; permanent for the channel (credentials, no credit) -> its next
provider at once; permanent for the recipient (a bad number) -> the next channel, since
another provider cannot fix the number; unknown -> that whole channel is closed for the
delivery (a second provider would send the same SMS to the same phone), then the next
channel or stop, as the policy says. Every request is recorded as ``sending`` before it
is made.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt

from config.sections import RoutingSettings
from router.model.channel import Channel, Lane
from router.model.clock import Clock
from router.model.health import State
from router.model.ids import new_id
from router.model.outcome import Capabilities, Outcome, Scope, Verdict
from router.model.redact import Redactor, mask_address
from router.model.results import Attempt, AttemptKind, DeliveryResult, Skip, Status
from router.rules.health import HealthBoard
from router.rules.ratelimit import RateLimiter
from router.rules.routing import Route, Step, final_status, worth_retrying
from router.sending.ownership import Claimed, LostOwnership
from router.store.base import AttemptStart, Store

log = logging.getLogger("backchannel")


_FIRST_WRITE_LEAD = 0.02
"""Seconds an attempt is recorded ahead of its rate slot until writes have been timed."""
_MAX_WRITE_LEAD = 0.25
_LATE = 0.05
"""Seconds past its rate slot after which a request takes a new slot rather than bunch."""
_NO_CAPS = Capabilities(max_length=None, failure_domains=frozenset())


@dataclass(slots=True)
class _Progress:
    """What has happened so far for one contact."""

    message_id: str
    contact: str
    attempts: list[Attempt]
    notes: list[str]
    skipped: list[Skip] = field(default_factory=list)
    expires_at: float | None = None
    expired: bool = False
    first_kind: AttemptKind = AttemptKind.FIRST
    round: int = 0
    ack_code: str | None = None
    claimed: Claimed | None = None

    def out_of_time(self, now: float) -> bool:
        if self.expires_at is not None and now >= self.expires_at and not self.expired:
            self.expired = True
            self.notes.append("expired before it could be sent")
        return self.expired

    def skip(self, channel: str, reason: str, provider: str | None = None) -> None:
        self.skipped.append(Skip(channel, reason, len(self.attempts), provider))


class Deliverer:
    """Runs routes. One per router; safe to use from many tasks at once."""

    def __init__(
        self,
        *,
        channels: Mapping[str, Channel],
        store: Store,
        health: HealthBoard,
        limiter: RateLimiter,
        clock: Clock,
        routing: RoutingSettings,
        redact: Redactor,
    ) -> None:
        # Adapters by lane: the channel's own name when one provider carries it.
        self._channels = channels
        self._store = store
        self._health = health
        self._limiter = limiter
        self._clock = clock
        self._routing = routing
        self._redact = redact
        self._write_lead = _FIRST_WRITE_LEAD
        self.requests = 0
        """Provider calls made so far (to say whether a failing store cut a run short
        before or after anything was sent)."""
        self._finishing: set[asyncio.Future[None]] = set()
        self._failures: list[BaseException] = []

    async def deliver(
        self,
        message_id: str,
        route: Route,
        *,
        prior: Sequence[Attempt] = (),
        expires_at: float | None = None,
        kind: AttemptKind = AttemptKind.FIRST,
        round_: int = 0,
        ack_code: str | None = None,
        settle: bool = True,
        claimed: Claimed | None = None,
    ) -> DeliveryResult:
        """Take the message along ``route``; ``prior`` are attempts an interrupted run made.

        ``kind`` marks the first request on each channel (an escalation or a repeat is a
        deliberate new attempt); ``settle=False`` leaves a failure unrecorded on the
        delivery, for an escalation after an earlier channel already took the message.
        ``claimed``: the work's owner or lease holder (this process): every attempt is
        started under its fence, and no provider is called once its hold has lapsed
        (raises :class:`LostOwnership`).
        """
        progress = _Progress(
            message_id, route.contact.name, list(prior), list(route.notes), expires_at=expires_at,
            first_kind=kind, round=round_, ack_code=ack_code, claimed=claimed,
        )
        if any(attempt.outcome.ok for attempt in prior):
            return self._result(progress)
        # A channel that may already have delivered (unknown) or refused this recipient is
        # done; a provider that refused for good is done within its channel.
        finished = {a.channel for a in prior if _closes_channel(a)}
        refused = {(a.channel, a.provider) for a in prior
                   if a.outcome.verdict is Verdict.PERMANENT and a.provider is not None}
        steps = [step for step in route.steps if step.channel not in finished]
        if self._routing.on_unknown == "stop" and any(
            a.outcome.verdict is Verdict.UNKNOWN for a in prior
        ):
            progress.notes.append("an earlier attempt may have been sent; policy says stop")
            steps = []
        walk = _Walk()
        for step in steps:
            if progress.out_of_time(self._clock.time()):
                break
            lanes = [lane for lane in _lanes(step) if (step.channel, lane.provider) not in refused]
            outcome = await self._try_step(progress, step, lanes, walk)
            if outcome is None:
                continue
            if outcome.ok:
                return self._result(progress)
            if outcome.verdict is Verdict.UNKNOWN and self._routing.on_unknown == "stop":
                progress.notes.append(f"{step.channel}: may have been sent; policy says stop")
                break
        else:
            if walk.down and walk.down_only:
                await self._last_resort(progress, walk.down)
        result = self._result(progress)
        if result.reached or not settle:
            return result
        await self._store.finish_delivery(
            message_id, result.contact, result.status.value, result.channel, self._clock.time()
        )
        return result

    async def _try_step(
        self, progress: _Progress, step: Step, lanes: list[Lane], walk: _Walk
    ) -> Outcome | None:
        """The channel's providers in turn, until one takes it or the channel is closed;
        None when none could be asked (down, or pausing us for too long)."""
        last: Outcome | None = None
        for lane in lanes:
            if not self._health.allows(lane.key):
                blocker = self._health.blocked_by(lane.key) or lane.key
                progress.skip(step.channel, f"{blocker} is down", _shown(step, lane))
                walk.down.append((step, lane))
                continue
            paused = self._limiter.paused_for(lane.key)
            if paused > self._routing.max_retry_after:
                progress.skip(step.channel, f"provider asked for a {paused:.0f}s pause",
                              _shown(step, lane))
                walk.down_only = False
                continue
            walk.down_only = False
            last = await self._try_lane(progress, step, lane)
            if last.ok or last.verdict is Verdict.UNKNOWN:
                return last  # taken, or perhaps taken: never again on this channel
            if last.verdict is Verdict.PERMANENT and last.scope is Scope.RECIPIENT:
                return last  # another provider cannot fix the number: next channel
            if len(lanes) > 1 and lane is not lanes[-1]:
                progress.notes.append(f"{step.channel}: {lane.provider} failed"
                                      f" ({last.verdict.value}), trying the next provider")
        return last

    async def _last_resort(self, progress: _Progress, down: list[tuple[Step, Lane]]) -> None:
        """Every channel is down: one request on the one down longest beats silence."""
        key = self._health.last_resort([lane.key for _, lane in down])
        step, lane = next((step, lane) for step, lane in down if lane.key == key)
        progress.notes.append(f"every channel is marked down: tried {_label(step, lane)} as a"
                              " last resort")
        self._health.begin_trial(lane.key)
        await self._attempt(progress, step, lane, progress.first_kind)

    def _result(self, progress: _Progress) -> DeliveryResult:
        status, channel = final_status(progress.attempts, expired=progress.expired)
        return DeliveryResult(
            progress.message_id, progress.contact, status, channel,
            tuple(progress.attempts), tuple(progress.skipped), tuple(progress.notes),
        )

    async def _try_lane(self, progress: _Progress, step: Step, lane: Lane) -> Outcome:
        outcome = await self._attempt(progress, step, lane, progress.first_kind)
        retryable = self._retryable(lane.key)
        if self._routing.tries_per_channel > 1 and retryable(outcome):
            # Most requests are answered the first time: tenacity is only set up (it
            # costs more than the rest of an attempt) once a retry is actually due.
            await self._clock.sleep(self._pause(1, outcome))
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self._routing.tries_per_channel - 1),
                wait=lambda state: self._pause(state.attempt_number + 1, _last(state)),
                retry=retry_if_result(retryable),
                sleep=self._clock.sleep,
                # Out of tries is not an error here: the last outcome is the answer.
                retry_error_callback=lambda state: None,
            )
            async for try_ in retrying:
                with try_:
                    outcome = await self._attempt(progress, step, lane, AttemptKind.RETRY)
                if try_.retry_state.outcome is not None and not try_.retry_state.outcome.failed:
                    try_.retry_state.set_result(outcome)
        asked = outcome.retry_after
        if asked is not None and asked != float("inf") and not worth_retrying(
            outcome, self._routing.max_retry_after
        ):
            progress.notes.append(
                f"{_label(step, lane)}: provider asked to wait {asked:.0f}s,"
                f" over the {self._routing.max_retry_after:.0f}s cap: failing over"
            )
        return outcome

    def _finished(self, task: asyncio.Future[None]) -> None:
        self._finishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._failures.append(task.exception())  # type: ignore[arg-type]

    async def flush(self) -> None:
        """Wait until every answer recorded in the background is on disk; raise the first
        failure (a full disk) for the run to stop on."""
        while self._finishing:
            await asyncio.wait(set(self._finishing))
        if self._failures:
            failure, self._failures = self._failures[0], []
            raise failure

    def _learn_write_lead(self, took: float) -> None:
        # Rises at once to a slow write and decays slowly: an early write costs a little
        # more time in 'sending' should the process die, a late one a burst.
        self._write_lead = min(_MAX_WRITE_LEAD, max(took, self._write_lead * 0.98))

    def _retryable(self, channel: str) -> Callable[[Outcome], bool]:
        def retryable(outcome: Outcome) -> bool:
            return worth_retrying(outcome, self._routing.max_retry_after) and (
                self._health.allows(channel)
            )

        return retryable

    def _pause(self, tries_made: int, last: Outcome | None) -> float:
        """Exponential backoff with jitter, but never shorter than the provider asked."""
        backoff = self._routing.retry_backoff * 2 ** (tries_made - 1)
        jittered = backoff * random.uniform(0.5, 1.5)
        asked = last.retry_after if last is not None and last.retry_after else 0.0
        return float(max(jittered, asked))

    async def _attempt(
        self, progress: _Progress, step: Step, lane: Lane, kind: AttemptKind
    ) -> Outcome:
        channel = self._channels[lane.key]
        wait = await self._limiter.reserve(lane.key, step.address)
        slot_at = self._clock.monotonic() + wait
        # The attempt is recorded just before its slot, not after it: the write's latency
        # (an fsync, a database round trip) would otherwise delay this request and bunch
        # it with the next ones, and a provider counts arrivals per second.
        if wait > self._write_lead:
            await self._clock.sleep(wait - self._write_lead)
        if progress.out_of_time(self._clock.time()):
            return Outcome.transient("expired", retry_after=float("inf"))
        blocker = self._health.blocked_by(lane.key)
        if blocker is not None and self._health.breaker(blocker).state is State.DOWN:
            # It went down while this request waited for its slot: no request, no record.
            progress.skip(step.channel, f"{blocker} went down before sending",
                          _shown(step, lane))
            return Outcome.transient(f"{blocker} went down", retry_after=float("inf"))
        attempt_id = new_id("att")
        started_at = self._clock.time()
        writing = self._clock.monotonic()
        claimed = progress.claimed
        if claimed is not None:
            await claimed.confirm()
        started = await self._store.begin_attempt(
            AttemptStart(attempt_id, progress.message_id, progress.contact, step.channel,
                         step.address, kind.value, started_at, progress.round, lane.provider),
            None if claimed is None else claimed.fence,
        )
        if not started:
            raise LostOwnership(f"{progress.message_id} was taken over by another process, or"
                                " stopped")
        now = self._clock.monotonic()
        self._learn_write_lead(now - writing)
        if now - slot_at > _LATE and self._limiter.paced(lane.key):
            # The write overran the slot (a busy database, a process starting up): sent
            # now, this request would bunch with those whose slots come next. It takes
            # the next free slot instead; the one it missed goes unused.
            slot_at = now + await self._limiter.reserve(lane.key, None)
            now = self._clock.monotonic()
        if slot_at > now:
            await self._clock.sleep(slot_at - now)
        if claimed is not None and not claimed.holds():
            try:
                await claimed.confirm()
            except LostOwnership:
                # Stalled past its hold between the write and the request, and taken over:
                # nothing was sent, and the new owner decides what happens next.
                await self._store.finish_attempt(
                    attempt_id, Outcome.transient("not sent: another process took the work"
                                                  " over before the request"),
                    self._clock.time())
                raise
        self.requests += 1
        try:
            rendered = step.rendered
            if progress.ack_code is not None:
                rendered = dataclasses.replace(rendered, ack_code=progress.ack_code)
            outcome = await channel.send(step.address, rendered, attempt_id=attempt_id)
        except Exception as exc:
            # An adapter bug must not lose the message; whether it sent is unknowable.
            log.exception("%s adapter raised instead of classifying", lane.key)
            outcome = Outcome.unknown(f"adapter error: {type(exc).__name__}")
        outcome = self._scrub(outcome)
        settled = outcome.ok
        finishing = self._store.finish_attempt(
            attempt_id, outcome, self._clock.time(),
            delivery_status=Status.ACCEPTED.value if settled else None,
            delivery_channel=step.channel if settled else None,
        )
        if self._store.ordered_writes:
            # Every later write lands after this one (one writer, in order), and no
            # provider is called before its own attempt row is durable: so this answer is
            # on disk before any later request is made, without waiting for it here. The
            # contact's next step (or the next contact's attempt) joins the same commit.
            task = asyncio.ensure_future(finishing)
            self._finishing.add(task)
            task.add_done_callback(self._finished)
        else:
            await finishing
        self._health.record(lane.key, outcome)
        if outcome.retry_after:
            self._limiter.pause(lane.key, outcome.retry_after)
        progress.attempts.append(
            Attempt(attempt_id, step.channel, outcome, started_at, kind, lane.provider)
        )
        if log.isEnabledFor(logging.INFO):  # masking costs something; most runs log less
            log.info(
                "%s via %s to %s: %s%s", progress.contact, _label(step, lane),
                mask_address(step.channel, step.address), outcome.verdict.value,
                f" ({outcome.detail})" if outcome.detail and not outcome.ok else "",
            )
        return outcome

    def _scrub(self, outcome: Outcome) -> Outcome:
        clean = self._redact(outcome.detail)
        if clean == outcome.detail:
            return outcome
        return Outcome(outcome.verdict, outcome.scope, clean, outcome.provider_id,
                       outcome.retry_after, outcome.elapsed)


@dataclass(slots=True)
class _Walk:
    """What one walk along a route ran into."""

    down: list[tuple[Step, Lane]] = field(default_factory=list)
    down_only: bool = True
    """No provider was asked or left out for any other reason than being down."""


def _lanes(step: Step) -> tuple[Lane, ...]:
    """The step's providers; a step built without them is carried by its channel's only
    adapter, registered under the channel's name."""
    return step.lanes or (Lane(step.channel, step.channel, step.channel, _NO_CAPS),)


def _closes_channel(attempt: Attempt) -> bool:
    """After this, nothing more on its channel: it may have been sent (or was), or the
    recipient was refused, or it predates providers (its provider is not known)."""
    verdict = attempt.outcome.verdict
    if verdict is Verdict.TRANSIENT:
        return False
    if verdict is Verdict.PERMANENT and attempt.outcome.scope is Scope.CHANNEL:
        return attempt.provider is None
    return True


def _shown(step: Step, lane: Lane) -> str | None:
    """The provider, where the channel has several to tell apart."""
    return lane.provider if len(step.lanes) > 1 else None


def _label(step: Step, lane: Lane) -> str:
    return f"{step.channel} via {lane.provider}" if len(step.lanes) > 1 else step.channel


def _last(state: RetryCallState) -> Outcome | None:
    if state.outcome is None or state.outcome.failed:
        return None
    result = state.outcome.result()
    return result if isinstance(result, Outcome) else None
