"""The benchmark suite (``make bench``) runs end to end at a tiny size, so that it cannot rot.

Nothing here looks at a timing: the figures of a few dozen messages mean nothing.
Peers run in their own processes, as in the real runs.
"""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path

import pytest

from bench import run as bench_run

pytestmark = [
    pytest.mark.slow,
    # Apprise 2.2 still imports imghdr, deprecated since Python 3.11.
    pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning"),
]

TINY = bench_run.Plan(
    ceiling_requests=30, messages=24, throughput_runs=2, apprise_contacts=6, apprise_runs=1,
    memory_sizes=(20, 40), memory_runs=1, rate_seconds=1.0, rate_runs=1,
    failover_contacts=20, failover_runs=1, board_contacts=40, board_runs=1,
)
HAVE_APPRISE = importlib.util.find_spec("apprise") is not None


async def test_every_row_runs_and_lands_in_one_table() -> None:
    only = {"peers", "1", "4", "5", "6", "7"} | ({"2"} if HAVE_APPRISE else set())
    started = time.monotonic()
    rows = await bench_run.run(TINY, only, quick=True)
    text = bench_run.table(rows, TINY, True, started, bench_run.machine())

    assert {row.row for row in rows} == {"peers", "3", *only}
    # telegram, sms (Twilio), sms-vonage, email, and Vonage's ratio against Twilio's
    assert len([r for r in rows if r.row == "1"]) == 5
    assert len([r for r in rows if r.row == "6"]) == 4  # every failover scenario
    assert "twilio" in text and "python-telegram-bot" in text and "cores" in text
    for row in rows:
        assert f"| {row.row} | {row.measure} |" in text
        assert row.command.startswith("python -m bench.")
    # Each benchmark did its work, and its row carries what it measured (whatever the
    # figures: a few dozen messages say nothing about speed).
    by_row = {name: [r.result for r in rows if r.row == name] for name in {r.row for r in rows}}
    for result in by_row["peers"]:  # (the peer's CPU may round to 0 ticks at this size)
        assert figure(r"the lean client reached ([\d,.]+)/s", result) > 0, result
    for result in by_row["1"][:4]:  # router and direct both sent every message (or raised)
        router, direct = figures(r"router ([\d,.]+)/s .* direct ([\d,.]+)/s", result)
        assert router > 0 and direct > 0, result
    [memory] = by_row["4"]
    for size in TINY.memory_sizes:
        assert figure(rf"{size}: ([\d,.]+) MB", memory) > 0, memory
    [rate] = by_row["5"]
    assert figure(r"^([\d.]+)/s", rate) > 0, rate
    for result in by_row["6"]:  # every failover scenario reached every contact
        assert f"reached {TINY.failover_contacts}" in result, result
    [board] = by_row["7"]
    assert figure(r"\((\d+) marker receipts\)", board) > 0, board  # the viewers saw updates
    if HAVE_APPRISE:
        [apprise] = by_row["2"]
        assert all(value > 0 for value in figures(r"([\d,.]+)/s vs Apprise ([\d,.]+)/s", apprise))


def figures(pattern: str, text: str) -> tuple[float, ...]:
    found = re.search(pattern, text)
    assert found is not None, (pattern, text)
    return tuple(float(group.replace(",", "")) for group in found.groups())


def figure(pattern: str, text: str) -> float:
    [value] = figures(pattern, text)
    return value


@pytest.mark.skipif(not HAVE_APPRISE, reason="Apprise comes with the bench extra")
def test_apprise_urls_point_at_the_relay_with_its_tls_mode() -> None:
    from bench.apprise_email import mailto_url

    email = {"host": "127.0.0.1", "port": 2525, "username": "demo", "password": "p@ss",
             "sender": "alerts@example.com", "starttls": True}
    url = mailto_url(email, ["a@example.com"])
    assert url.startswith("mailtos://demo:p%40ss@127.0.0.1:2525?")
    assert "mode=starttls" in url and "to=a%40example.com" in url


def test_profile_summary_splits_samples_by_owner() -> None:
    from bench.profile import summarise

    raw = "\n".join([
        "thread (1): MainThread;main (bench/run.py:1);send (channels/telegram/channel.py:82);"
        "request (httpx/_client.py:1540) 6",
        "thread (1): MainThread;main (bench/run.py:1);deliver (router/sending/delivery.py:132) 3",
        "thread (2): backchannel-store;_run (router/store/sql.py:62) 1",
    ])
    text = summarise(raw, messages=10, rate=100)
    assert "10 samples" in text
    assert "60.0%    6000 us  httpx, httpcore, h11, anyio" in text
    assert "30.0%    3000 us  router code" in text
    assert "10.0%    1000 us  SQLite and SQL (the store's writer thread)" in text


async def test_the_incident_benchmark_runs(tmp_path: Path) -> None:
    from bench.incidents import main

    figures = await main(40, {"path": str(tmp_path / "bc.db")})
    assert (figures["reached"], figures["stopped"]) == (36, 36)
