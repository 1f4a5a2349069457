"""Channel health: circuit breakers that take a dead channel out of the route at once.

One breaker per channel, fed by channel-scope failures of real sends (a bad
number proves the channel works) and by probes; one per shared dependency
(the Twilio account behind WhatsApp, SMS and voice), fed by its probe and by
the trials of the channels that hang on it. A breaker opens after consecutive
failures or an error rate over a window; an open channel gets no traffic until
a jittered cool-down has passed, then exactly one trial (probe or request)
decides. The cool-down grows while the channel keeps failing and only shrinks
back once it has stayed up, so a flapping channel changes state a bounded
number of times.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

from config.sections import HealthSettings
from router.model.clock import Clock
from router.model.health import Breaker, ChannelStatus, State
from router.model.outcome import Outcome


class HealthBoard:
    """Every breaker of one router process. Persistence and probing live elsewhere."""

    def __init__(
        self,
        policy: HealthSettings,
        clock: Clock,
        dependencies: Mapping[str, Iterable[str]] | None = None,
        *,
        lanes: Mapping[str, Iterable[str]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``dependencies``: breaker -> the shared providers it hangs on; ``lanes``: a
        channel carried by several providers -> its lanes' breakers (a channel with one
        provider is its own lane)."""
        self.policy = policy
        self._clock = clock
        self._deps = {channel: tuple(deps) for channel, deps in (dependencies or {}).items()}
        self._lanes = {channel: tuple(keys) for channel, keys in (lanes or {}).items()}
        self._breakers: dict[str, Breaker] = {}
        self._rng = rng or random.Random()
        self.dirty: set[str] = set()
        """Breakers changed since the last save."""

    # -- reading -------------------------------------------------------------------------

    def breaker(self, name: str) -> Breaker:
        found = self._breakers.get(name)
        if found is None:
            found = self._breakers[name] = Breaker(name)
        return found

    def breakers(self) -> list[Breaker]:
        return list(self._breakers.values())

    def dependencies(self, channel: str) -> tuple[str, ...]:
        return self._deps.get(channel, ())

    def lanes(self, channel: str) -> tuple[str, ...]:
        """The breakers of a channel's providers (the channel itself when it has one)."""
        return self._lanes.get(channel, (channel,))

    def is_up(self, channel: str) -> bool:
        """Up itself and every dependency up (for a channel with several providers: one
        of them); no trial is implied."""
        if channel in self._lanes:
            return any(self.is_up(lane) for lane in self._lanes[channel])
        names = (*self.dependencies(channel), channel)
        return all(self.breaker(name).state is State.UP for name in names)

    def blocked_by(self, channel: str) -> str | None:
        """The breaker keeping ``channel`` down, dependencies first; None when up. A
        channel with several providers is down only when every one is, and names them."""
        if channel in self._lanes:
            blockers = [self.blocked_by(lane) for lane in self._lanes[channel]]
            if any(blocker is None for blocker in blockers):
                return None
            return ", ".join(dict.fromkeys(b for b in blockers if b is not None))
        for name in (*self.dependencies(channel), channel):
            if self.breaker(name).state is not State.UP:
                return name
        return None

    # -- the routing seam ----------------------------------------------------------------

    def allows(self, channel: str) -> bool:
        now = self._clock.time()
        names = (*self.dependencies(channel), channel)
        gates = [self.breaker(name) for name in names]
        if all(gate.state is State.UP for gate in gates):
            return True
        if not all(gate.state is State.UP or self._trial_due(gate, now) for gate in gates):
            return False
        # This request is the one trial for every breaker that was waiting for one.
        for gate in gates:
            if gate.state is not State.UP:
                self._move(gate, State.TRIAL, now)
        return True

    def begin_trial(self, channel: str) -> None:
        """Make the next request on ``channel`` the trial, whatever the cool-down says."""
        now = self._clock.time()
        for name in (*self.dependencies(channel), channel):
            gate = self.breaker(name)
            if gate.state is not State.UP:
                self._move(gate, State.TRIAL, now)

    def record(self, channel: str, outcome: Outcome) -> None:
        now = self._clock.time()
        failed = outcome.counts_against_channel
        self._feed(self.breaker(channel), failed, outcome.detail, now)
        for dep in self.dependencies(channel):
            gate = self.breaker(dep)
            if gate.state is State.TRIAL:  # the request was the dependency's trial too
                self._feed(gate, failed, outcome.detail, now)

    def record_probe(self, name: str, outcome: Outcome) -> None:
        """A probe is a deliberate check: its failure opens at once, its success closes."""
        now = self._clock.time()
        gate = self.breaker(name)
        gate.last_probe_at, gate.last_probe_ok = now, outcome.ok
        gate.last_probe_latency = outcome.elapsed
        gate.updated_at = now
        self.dirty.add(name)
        if outcome.ok:
            gate.consecutive_failures = 0
            gate.warning = outcome.warning
            if gate.state is not State.UP:
                self._close(gate, now)
        else:
            gate.last_error = outcome.detail
            if gate.state is not State.DOWN:
                self._open(gate, now)

    def status(self, name: str) -> ChannelStatus:
        if name in self._lanes:
            return self._channel_status(name)
        gate = self.breaker(name)
        return ChannelStatus(
            name=name, state=gate.state, since=gate.since, blocked_by=self.blocked_by(name),
            last_error=gate.last_error, last_probe_at=gate.last_probe_at,
            last_probe_ok=gate.last_probe_ok, last_probe_latency=gate.last_probe_latency,
            next_trial_at=gate.next_trial_at if gate.state is not State.UP else None,
            warning=gate.warning,
        )

    def _channel_status(self, name: str) -> ChannelStatus:
        """A channel with several providers: up while one of them is."""
        lanes = [self.status(lane) for lane in self._lanes[name]]
        blocked = self.blocked_by(name)
        trials = [lane.next_trial_at for lane in lanes if lane.next_trial_at is not None]
        return ChannelStatus(
            name=name, state=State.UP if blocked is None else State.DOWN,
            since=max(lane.since for lane in lanes), blocked_by=blocked,
            last_error="; ".join(f"{lane.name}: {lane.last_error}" for lane in lanes
                                 if lane.last_error and not lane.up),
            last_probe_at=None, last_probe_ok=None, last_probe_latency=None,
            next_trial_at=min(trials) if blocked is not None and trials else None,
            lanes=tuple(lane.name for lane in lanes),
        )

    def last_resort(self, channels: Iterable[str]) -> str | None:
        """Of channels all down, the one whose breaker opened longest ago."""
        candidates = [(self.breaker(self.blocked_by(c) or c).since, c) for c in channels]
        return min(candidates)[1] if candidates else None

    # -- transitions ---------------------------------------------------------------------

    def _trial_due(self, gate: Breaker, now: float) -> bool:
        if gate.state is State.DOWN:
            return now >= gate.next_trial_at
        # A trial whose answer never came (a crash, a cancelled task) must not block forever.
        waited = now - gate.trial_started_at
        return gate.state is State.TRIAL and waited >= self.policy.trial_timeout

    def _feed(self, gate: Breaker, failed: bool, detail: str, now: float) -> None:
        policy = self.policy
        window = gate.window
        window.append((now, failed))
        while window and (now - window[0][0] > policy.error_window or len(window) > 1000):
            window.popleft()
        if not failed:
            gate.consecutive_failures = 0
            # Only the trial decides: a request that started before the breaker opened
            # and happened to get through does not prove the channel is back.
            if gate.state is State.TRIAL:
                self._close(gate, now)
            return
        gate.consecutive_failures += 1
        gate.last_error = detail
        if gate.state is State.TRIAL or (gate.state is State.UP and self._should_open(gate)):
            self._open(gate, now)

    def _should_open(self, gate: Breaker) -> bool:
        policy = self.policy
        if gate.consecutive_failures >= policy.failure_threshold:
            return True
        failures = sum(1 for _, failed in gate.window if failed)
        return len(gate.window) >= policy.min_requests and (
            failures / len(gate.window) >= policy.error_rate
        )

    def _open(self, gate: Breaker, now: float) -> None:
        policy = self.policy
        # The cool-down shrinks back only after the channel has stayed up for a while.
        stable = gate.state is State.UP and now - gate.closed_at > policy.max_cooldown
        if gate.cooldown <= 0 or stable:
            gate.cooldown = policy.cooldown
        else:
            gate.cooldown = min(gate.cooldown * 2, policy.max_cooldown)
        # Jitter only shortens the wait, so a trial always comes within the cool-down.
        wait = gate.cooldown * self._rng.uniform(1 - policy.jitter, 1.0)
        gate.next_trial_at = now + wait
        gate.window.clear()
        self._move(gate, State.DOWN, now)

    def _close(self, gate: Breaker, now: float) -> None:
        gate.closed_at = now
        gate.window.clear()
        self._move(gate, State.UP, now)

    def _move(self, gate: Breaker, state: State, now: float) -> None:
        # "since" says how long it has been up or down: trials do not restart it.
        if (gate.state is State.UP) != (state is State.UP):
            gate.transitions += 1
            gate.since = now
        if state is State.TRIAL and gate.state is not State.TRIAL:
            gate.trial_started_at = now
        gate.state = state
        gate.updated_at = now
        self.dirty.add(gate.name)

    def adopt(self, incoming: Breaker) -> bool:
        """Take another process's view of a breaker if it is newer than ours."""
        current = self._breakers.get(incoming.name)
        if current is not None and current.updated_at >= incoming.updated_at:
            return False
        if current is not None:
            incoming.window = current.window
        self._breakers[incoming.name] = incoming
        return True
