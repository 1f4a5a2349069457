"""Crash test: a real ``backchannel broadcast`` to 300 contacts, SIGKILLed again and again.

The scenario and its checks live in ``bench/crash.py`` (``bench/kill_soak.py`` runs
it many times). The sandbox peers run in this test's event loop with scripted
trouble (503s, rejected recipients, stalls and drops on WhatsApp, Telegram, SMS and
email); the broadcast is killed at a random moment after it starts sending, then
``backchannel resume`` (or the same broadcast again, as cron would repeat it) is
started and killed too, until ``CRASH_TEST_KILLS`` (default 5) kills landed
mid-run; a last ``resume`` must finish. Then, from the peers' own records and the
store file: every contact reached, nobody twice on one channel, every request a
peer took matching an attempt row, ``PRAGMA integrity_check`` ok, a message on two
channels only after an ``unknown`` attempt that the history shows, nothing left
``sending``. ``CRASH_TEST_SEED`` replays a run (the seed is printed).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from bench.crash import crash_run
from bench.crash_check import cross_channel_problems
from bench.crash_io import AttemptRow
from router.sandbox import Sandbox

CONTACTS = 300


def _setting(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


@pytest.mark.slow
async def test_a_broadcast_killed_at_random_points_reaches_everyone_once_per_channel(
    tmp_path: Path,
) -> None:
    kills = _setting("CRASH_TEST_KILLS") or 5
    pauses = _setting("CRASH_TEST_PAUSES")
    pauses = 2 if pauses is None else pauses
    seed = _setting("CRASH_TEST_SEED")
    if seed is None:
        seed = random.SystemRandom().randrange(1_000_000)
    print(f"crash test: seed {seed}, {kills} kills, {pauses} pauses (CRASH_TEST_SEED={seed})")

    async with Sandbox() as sb:
        report = await crash_run(sb, tmp_path, kills=kills, pauses=pauses, seed=seed,
                                 contacts=CONTACTS, log=print)  # fmt: skip

    print(report.line())
    assert report.ok, report.describe()
    # What the run must have exercised, beyond passing its checks.
    assert report.kills >= kills, report.describe()
    assert report.pauses >= pauses, report.describe()
    assert report.in_flight > 0, "no kill caught an attempt in flight\n" + report.describe()
    assert report.final_status == 0, report.describe()
    assert not report.lost and not report.same_channel, report.describe()
    assert report.integrity == "ok", report.describe()
    assert report.left_sending == 0, report.describe()
    assert report.cross_after_unknown == len(report.cross_channel), report.describe()


def _attempt(channel: str, started_at: float, verdict: str, detail: str) -> AttemptRow:
    return AttemptRow(f"att_{channel}", "c0029", channel, "addr", "done", verdict, detail,
                      f"{channel}-id", started_at)


def test_two_channels_only_after_one_was_in_doubt() -> None:
    """The check of rule 5 on its own: a message on two channels is right only when the
    earlier channel was in doubt before the next one was tried, whichever of the two
    the delivery names (a late answer on the earlier one names that one)."""
    late = _attempt("telegram", 1.0, "accepted",
                    "answered after another process had settled it as maybe sent")
    found = _attempt("sms", 2.0, "accepted", "found at the provider after the interruption")
    shown = {("c0029", "telegram"): {"late"}, ("c0029", "sms"): {"accepted"}}
    both = {"telegram", "sms"}
    for final in ("telegram", "sms"):
        assert cross_channel_problems("c0029", [late, found], both, final, shown) == []
    plain = _attempt("telegram", 1.0, "accepted", "")
    assert cross_channel_problems("c0029", [plain, found], both, "telegram", shown) == [
        "got it on telegram and on sms with no unknown telegram attempt before"
    ]
    unknown = _attempt("telegram", 1.0, "unknown", "in doubt: no answer")
    assert cross_channel_problems("c0029", [unknown, found], both, "sms", {}) == [
        "history --json shows no unknown telegram attempt"
    ]
