"""Every breaker transition, with a fake clock (design.md section 6)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from scripted import FakeClock

from config.sections import HealthSettings
from router.model.health import State
from router.model.outcome import Outcome, Scope
from router.rules.health import HealthBoard

DOWN = Outcome.transient("HTTP 503")
BAD_NUMBER = Outcome.permanent("invalid 'To' number", Scope.RECIPIENT)
OK = Outcome.accepted("id")
TWILIO = {"whatsapp": ["twilio"], "sms": ["twilio"], "voice": ["twilio"]}


def board(**policy: Any) -> tuple[HealthBoard, FakeClock]:
    clock = FakeClock()
    settings = HealthSettings(**{"cooldown": 10.0, "max_cooldown": 80.0, **policy})
    return HealthBoard(settings, clock, TWILIO, rng=random.Random(7)), clock


def test_consecutive_channel_failures_open_the_breaker() -> None:
    health, _ = board(failure_threshold=3)
    for _ in range(2):
        health.record("telegram", DOWN)
    assert health.allows("telegram")
    health.record("telegram", DOWN)
    assert not health.allows("telegram")
    assert health.breaker("telegram").state is State.DOWN
    assert health.breaker("telegram").last_error == "HTTP 503"


def test_recipient_failures_never_open_a_breaker() -> None:
    health, _ = board(failure_threshold=2, min_requests=2)
    for _ in range(100):
        health.record("sms", BAD_NUMBER)
    assert health.allows("sms")
    assert health.breaker("sms").state is State.UP
    health.record("sms", DOWN)
    health.record("sms", BAD_NUMBER)  # the provider answered: the channel works
    health.record("sms", DOWN)
    assert health.allows("sms")


def test_a_success_resets_the_count() -> None:
    health, _ = board(failure_threshold=3, min_requests=100)
    for _ in range(10):
        health.record("email", DOWN)
        health.record("email", DOWN)
        health.record("email", OK)
    assert health.allows("email")


def test_an_error_rate_over_the_window_opens_it() -> None:
    health, clock = board(failure_threshold=99, error_rate=0.5, min_requests=10, error_window=60)
    for _ in range(4):
        health.record("email", OK)
        health.record("email", DOWN)
        clock.advance(1)
    assert health.allows("email")  # 8 requests: not enough to judge
    health.record("email", OK)
    health.record("email", DOWN)
    assert not health.allows("email")


def test_old_failures_leave_the_window() -> None:
    health, clock = board(failure_threshold=99, error_rate=0.5, min_requests=4, error_window=10)
    for _ in range(3):
        health.record("email", DOWN)
    clock.advance(11)
    health.record("email", OK)
    assert health.allows("email")


def test_one_trial_after_the_cooldown_and_success_closes() -> None:
    health, clock = board(failure_threshold=1, cooldown=10, jitter=0.25)
    health.record("telegram", DOWN)
    clock.advance(7.4)  # jitter only shortens the wait, by at most 25 %
    assert not health.allows("telegram")
    clock.advance(2.6)
    assert health.allows("telegram")  # the trial
    assert health.breaker("telegram").state is State.TRIAL
    assert not health.allows("telegram")  # one trial at a time
    health.record("telegram", OK)
    assert health.breaker("telegram").state is State.UP
    assert health.allows("telegram")


def test_a_failed_trial_doubles_the_cooldown_up_to_the_cap() -> None:
    health, clock = board(failure_threshold=1, cooldown=10, max_cooldown=35, jitter=0.0)
    health.record("telegram", DOWN)
    waits = []
    for _ in range(4):
        opened = clock.now
        clock.now = health.breaker("telegram").next_trial_at
        waits.append(clock.now - opened)
        assert health.allows("telegram")
        health.record("telegram", DOWN)
    assert waits == [10, 20, 35, 35]


def test_a_lost_trial_stops_blocking_after_the_trial_timeout() -> None:
    health, clock = board(failure_threshold=1, cooldown=10, trial_timeout=30, jitter=0.0)
    health.record("email", DOWN)
    clock.advance(10)
    assert health.allows("email")  # granted, and its answer never comes
    clock.advance(29)
    assert not health.allows("email")
    clock.advance(1)
    assert health.allows("email")


def test_a_probe_opens_and_closes_at_once() -> None:
    health, _ = board(failure_threshold=5)
    health.record_probe("telegram", Outcome.transient("connection refused").timed(0.01))
    assert not health.allows("telegram")
    health.record_probe("telegram", Outcome.accepted(detail="bot @x").timed(0.02))
    assert health.allows("telegram")
    assert health.breaker("telegram").last_probe_latency == pytest.approx(0.02)


def test_a_shared_dependency_down_takes_its_channels_down_together() -> None:
    health, _ = board()
    health.record_probe("twilio", Outcome.transient("connect timeout"))
    assert not health.allows("whatsapp")
    assert not health.allows("sms")
    assert not health.allows("voice")
    assert health.allows("telegram")
    assert health.blocked_by("sms") == "twilio"


def test_one_channel_failing_marks_only_that_channel() -> None:
    health, _ = board(failure_threshold=2)
    health.record("whatsapp", DOWN)
    health.record("whatsapp", DOWN)
    assert not health.allows("whatsapp")
    assert health.allows("sms")
    assert health.breaker("twilio").state is State.UP


def test_a_dependency_trial_is_one_request_on_one_channel() -> None:
    health, clock = board(cooldown=10, jitter=0.0)
    health.record_probe("twilio", Outcome.transient("connect timeout"))
    clock.advance(10)
    assert health.allows("sms")  # the trial, for twilio
    assert not health.allows("whatsapp")
    assert not health.allows("voice")
    health.record("sms", OK)
    assert all(health.allows(name) for name in ("whatsapp", "sms", "voice"))


def test_a_flapping_channel_changes_state_a_bounded_number_of_times() -> None:
    # The provider works for 3 s, fails for 3 s, for an hour; a request every 0.5 s.
    health, clock = board(failure_threshold=3, cooldown=5, max_cooldown=300)
    start, flips = clock.now, 0
    while clock.now - start < 3600:
        provider_up = int((clock.now - start) // 3) % 2 == 0
        if health.allows("whatsapp"):
            health.record("whatsapp", OK if provider_up else DOWN)
        clock.advance(0.5)
        flips += 1
    changes = health.breaker("whatsapp").transitions
    # Doublings from 5 s to 300 s, then one down/up cycle per 300 s, two changes each.
    assert changes <= 2 * (6 + 3600 // 300 + 2)
    assert changes < 1200 // 10  # the provider itself changed state 1,200 times


def test_the_last_resort_is_the_channel_down_longest() -> None:
    health, clock = board(failure_threshold=1)
    health.record("email", DOWN)
    clock.advance(5)
    health.record("telegram", DOWN)
    clock.advance(5)
    health.record_probe("twilio", DOWN)
    assert health.last_resort(["sms", "telegram", "email"]) == "email"


def test_a_late_success_from_before_the_outage_does_not_close_it() -> None:
    health, _ = board(failure_threshold=2)
    health.record("telegram", DOWN)
    health.record("telegram", DOWN)
    health.record("telegram", OK)  # was in flight when the breaker opened
    assert not health.allows("telegram")
