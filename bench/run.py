"""Every benchmark, one table: ``make bench`` (``make bench-quick``).

    python -m bench.run [--quick] [--only peers,1,2,4,5,6,7]

Rows: the peers alone (they must not be the limit), then 1 throughput against
direct client-library loops, 2 email against Apprise, 3 router CPU per message,
4 peak RSS by broadcast size, 5 rate adherence under Telegram's flood control,
6 failover cost, 7 the crisis board under a broadcast. Every figure is a median
over several runs, and every comparison runs its two sides alternately in this one
session. Each row names
the command that reproduces it alone. Peers run in a process of their own
(``bench/peerproc.py``); this process is the client, as a user's would be.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench import apprise_email, board, ceiling, failover, memory, rate, throughput
from bench.common import CHANNELS, CONCURRENCY, median, spread
from bench.peerproc import peer_process


@dataclass(frozen=True, slots=True)
class Plan:
    ceiling_requests: int
    messages: int
    throughput_runs: int
    apprise_contacts: int
    apprise_runs: int
    memory_sizes: tuple[int, ...]
    memory_runs: int
    rate_seconds: float
    rate_runs: int
    failover_contacts: int
    failover_runs: int
    board_contacts: int = 10_000
    board_runs: int = 3


# Row 4 runs each size once (peak RSS is deterministic to a megabyte or two; 100,000
# SMS take two minutes) and shows the curve within the largest run besides.
FULL = Plan(3000, 5000, 3, 300, 3, (10_000, 100_000), 1, 60.0, 2, 1000, 3)
QUICK = Plan(500, 300, 2, 60, 2, (1_000, 3_000), 1, 6.0, 2, 200, 1, 1_000, 1)
RATE_LIMIT = 30.0
PEER_LOAD_LIMIT = 0.7


@dataclass(frozen=True, slots=True)
class Row:
    row: str
    measure: str
    result: str
    target: str
    met: bool | None
    command: str


def _mark(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "**NO**")


def versions() -> str:
    names = ("twilio", "python-telegram-bot", "aiosmtplib", "apprise")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return f"Python {platform.python_version()}, " + ", ".join(found)


def machine() -> str:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({model or platform.machine()}), load average {load}"


async def run(plan: Plan, only: set[str], quick: bool) -> list[Row]:
    rows: list[Row] = []
    py = "python -m"
    flag = " --quick" if quick else ""
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        workdir = Path(tmp)
        # Peers alone first; rows 1 to 3 share one peer process, as they share a machine.
        async with peer_process(workdir) as peers:
            ceilings: list[ceiling.Ceiling] = []
            if "peers" in only:
                _say("peers alone")
                ceilings = await ceiling.measure(peers, plan.ceiling_requests)
            comparisons: list[throughput.Comparison] = []
            if "1" in only:
                for channel in CHANNELS:
                    _say(f"row 1: {channel}, {plan.messages} messages x {plan.throughput_runs}")
                    comparisons.append(await throughput.compare(
                        peers, workdir, channel, plan.messages, plan.throughput_runs
                    ))
            versus: apprise_email.AppriseComparison | None = None
            if "2" in only:
                _say(f"row 2: Apprise, {plan.apprise_contacts} contacts x {plan.apprise_runs}")
                versus = await apprise_email.compare(
                    peers, workdir, plan.apprise_contacts, plan.apprise_runs
                )
            by_channel = {c.channel: c for c in comparisons}
            for found in ceilings:
                channel = {"Twilio API": "sms", "Telegram Bot API": "telegram"}.get(
                    found.peer, "email"
                )
                seen = by_channel.get(channel)
                fastest = max((s.rate for s in [*seen.router, *seen.direct]), default=0.0) \
                    if seen is not None else None
                target = "not the bottleneck"
                met = None
                if seen is not None and fastest is not None:
                    target += (
                        f": its load stays under {PEER_LOAD_LIMIT:.0%} of a core in every row-1"
                        f" run (at most {seen.peer_load:.0%}) and its ceiling is above the"
                        f" fastest run against it ({fastest:,.0f}/s)"
                    )
                    met = seen.peer_load < PEER_LOAD_LIMIT and found.ceiling > fastest
                rows.append(Row(
                    "peers", f"{found.peer} alone (lean client, concurrency {CONCURRENCY})",
                    f"ceiling {found.ceiling:,.0f} req/s on one core ({found.peer_us:.0f} us"
                    f" of peer CPU per request; the lean client reached {found.rate:,.0f}/s)",
                    target, met, f"{py} bench.ceiling --requests {plan.ceiling_requests}",
                ))
            for comparison in comparisons:
                rates = [s.rate for s in comparison.router]
                direct = [s.rate for s in comparison.direct]
                rows.append(Row(
                    "1", f"throughput, {comparison.channel}, {comparison.messages:,} messages,"
                    f" durable store, concurrency {CONCURRENCY}",
                    f"router {comparison.router_rate:,.0f}/s ({spread(rates)}) vs direct"
                    f" {comparison.direct_rate:,.0f}/s ({spread(direct)}): ratio"
                    f" {comparison.ratio:.2f}",
                    ">= 0.90 of direct", comparison.ratio >= 0.9,
                    f"{py} bench.throughput --channel {comparison.channel} --messages"
                    f" {plan.messages} --runs {plan.throughput_runs}",
                ))
            twilio_sms = by_channel.get("sms")
            vonage_sms = by_channel.get("sms-vonage")
            if twilio_sms is not None and vonage_sms is not None:
                rows.append(Row(
                    "1", "Vonage SMS (aiohttp) against Twilio SMS (its SDK), ratios to their"
                    " direct loops in this same run",
                    f"Vonage {vonage_sms.ratio:.2f} vs Twilio {twilio_sms.ratio:.2f}",
                    "Vonage's ratio >= Twilio's", vonage_sms.ratio >= twilio_sms.ratio,
                    f"{py} bench.throughput --channel sms,sms-vonage --messages"
                    f" {plan.messages} --runs {plan.throughput_runs}",
                ))
            if versus is not None:
                rows.append(Row(
                    "2", f"email, {versus.contacts} contacts, one message each, vs Apprise"
                    " (one mailtos:// URL per contact, parallel; STARTTLS+AUTH, peer CA"
                    " trusted on both sides)",
                    f"backchannel {median(versus.backchannel):,.0f}/s vs Apprise"
                    f" {median(versus.apprise):,.1f}/s: {versus.ratio:.1f}x (reference, not"
                    f" the same work: Apprise one URL for all,"
                    f" {median(versus.apprise_one_url):,.0f}/s)",
                    ">= 10x Apprise", versus.ratio >= 10,
                    f"{py} bench.apprise_email --contacts {plan.apprise_contacts} --runs"
                    f" {plan.apprise_runs}",
                ))
            for comparison in comparisons:
                router_us = median([s.cpu_us for s in comparison.router])
                direct_us = median([s.cpu_us for s in comparison.direct])
                rows.append(Row(
                    "3", f"router CPU per message, {comparison.channel}",
                    f"{router_us:,.0f} us - direct {direct_us:,.0f} us ="
                    f" {comparison.overhead_us:,.0f} us",
                    "< 300 us", comparison.overhead_us < 300,
                    f"{py} bench.throughput --channel {comparison.channel} --messages"
                    f" {plan.messages} --runs {plan.throughput_runs}",
                ))
        if "4" in only:
            _say(f"row 4: memory, {plan.memory_sizes} contacts")
            async with peer_process(workdir) as peers:
                sizes = await memory.measure(
                    peers.config, workdir, list(plan.memory_sizes), plan.memory_runs
                )
            shape = memory.growth(sizes)
            largest = max(sizes)
            biggest = shape.peaks[largest]
            curve = sizes[largest][0].curve
            before = median([r.before_mb for r in sizes[largest]])
            rows.append(Row(
                "4", f"peak RSS, broadcast to {largest:,} contacts (SMS), durable store, fresh"
                " process per size",
                f"{biggest:,.0f} MB; " + ", ".join(
                    f"{size:,}: {mb:,.0f} MB" for size, mb in shape.peaks.items()
                ) + f"; growth {shape.shape}; RSS of the largest with the router open, before"
                f" sending: {before:,.0f} MB, then by tenth of the results:"
                f" {' '.join(f'{mb:.0f}' for mb in curve)} MB",
                "< 200 MB; flat or linear with a small constant",
                biggest < 200,
                f"{py} bench.memory --sizes {','.join(map(str, plan.memory_sizes))} --runs"
                f" {plan.memory_runs}",
            ))
        if "5" in only:
            _say(f"row 5: rate adherence, {plan.rate_seconds:.0f}s x {plan.rate_runs}")
            async with peer_process(
                workdir, telegram_flood=(round(RATE_LIMIT), 1)
            ) as peers:
                rate_runs = await rate.measure(
                    peers, workdir, plan.rate_seconds, RATE_LIMIT, plan.rate_runs
                )
            achieved, rejected, busiest_second, gap = rate.summary(rate_runs)
            rows.append(Row(
                "5", f"rate adherence: Telegram limited to {RATE_LIMIT:.0f}/s, peer answering"
                f" 429 above 110% in any second, {plan.rate_seconds:.0f} s x {plan.rate_runs}",
                f"{achieved:.2f}/s ({achieved / RATE_LIMIT:.1%}), {rejected} x 429, busiest"
                f" second {busiest_second} requests, longest pause between two requests"
                f" {gap * 1000:.0f} ms",
                ">= 95% of the limit, zero 429",
                achieved >= 0.95 * RATE_LIMIT and rejected == 0,
                f"{py} bench.rate --seconds {plan.rate_seconds:g} --runs {plan.rate_runs}",
            ))
    if "6" in only:
        _say(f"row 6: failover, {plan.failover_contacts} contacts x {plan.failover_runs}")
        found_failover = await failover.main(plan.failover_contacts, CONCURRENCY,
                                             plan.failover_runs)
        second = next(r.seconds for r in found_failover if r.scenario == "second channel only")
        # After the dead channel is settled, the first wave (one request per worker) still
        # has to go out on the second channel: that part of the cost is not the failover's.
        wave = CONCURRENCY * second / plan.failover_contacts
        allowed = failover.CONNECT_TIMEOUT + wave
        for scenario in found_failover:
            if scenario.scenario in ("healthy", "second channel only"):
                rows.append(Row(
                    "6", f"failover: {scenario.scenario} ({plan.failover_contacts:,} contacts)",
                    f"{scenario.seconds:.1f} s, reached {scenario.reached:,}",
                    "reference", None,
                    f"{py} bench.failover --contacts {plan.failover_contacts} --runs"
                    f" {plan.failover_runs}{flag if quick else ''}",
                ))
                continue
            cost = scenario.seconds - second
            rows.append(Row(
                "6", f"failover: first channel {scenario.scenario}"
                f" ({plan.failover_contacts:,} contacts)",
                f"{scenario.seconds:.1f} s ({cost:+.1f} s vs second channel only),"
                f" {scenario.dead_channel_requests} requests to the dead channel, settled after"
                f" {scenario.dead_channel_done_after:.1f} s; reached {scenario.reached:,}",
                f"cost <= one connect timeout ({failover.CONNECT_TIMEOUT:.0f} s) + the first"
                f" wave of {CONCURRENCY} on the second channel ({wave:.1f} s); dead-channel"
                f" requests <= concurrency ({CONCURRENCY})",
                cost <= allowed and scenario.dead_channel_requests <= CONCURRENCY,
                f"{py} bench.failover --contacts {plan.failover_contacts} --runs"
                f" {plan.failover_runs}",
            ))
    if "7" in only:
        _say(f"row 7: the board, {plan.board_contacts} contacts x {plan.board_runs}")
        with tempfile.TemporaryDirectory(prefix="bench-board-") as tmp:
            found = await board.measure(Path(tmp), plan.board_contacts, plan.board_runs)
        latencies = found.latencies
        worst = max(latencies) if latencies else float("inf")
        sent = [n for n, _ in found.rss]
        mbs = [mb for _, mb in found.rss]
        with_viewers = [mb for n, mb in found.rss if n > 0]
        grew = (max(with_viewers) - min(with_viewers)) if len(with_viewers) > 1 else 0.0
        rows.append(Row(
            "7", f"the crisis board: broadcast to {plan.board_contacts:,} contacts (Telegram,"
            f" SQLite) with {board.VIEWERS} live viewers (SSE) vs none",
            board.summary(found),
            f">= 0.95 of none; every update within 1 s; RSS flat with updates"
            f" ({sent[-1]:,} sent, {min(mbs):.0f}-{max(mbs):.0f} MB)",
            found.ratio >= 0.95 and worst <= 1.0 and grew < 10,
            f"{py} bench.board --contacts {plan.board_contacts} --runs {plan.board_runs}",
        ))
    return rows


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def source() -> str:
    """The commit measured, and whether product code differed from it in the work tree."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "router", "channels", "config"], cwd=root,
            capture_output=True, text=True, check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    dirty = [line[3:] for line in changed if line.strip()]
    return f"commit {head}" + (
        f", with uncommitted changes to {', '.join(dirty)}" if dirty else ", clean"
    )


def table(rows: list[Row], plan: Plan, quick: bool, started: float, start_machine: str) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"backchannel benchmarks ({'--quick' if quick else 'full'}), {now},"
        f" {time.monotonic() - started:.0f} s",
        f"machine: {start_machine} at the start; {machine()} at the end",
        f"versions: {versions()}; {source()}",
        "peers (Twilio, Telegram, SMTP) in their own process; medians; each comparison"
        " alternates its sides run by run; rate limits raised out of the way for rows 1-4",
        "",
        "| row | measure | result | target | met | command |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.row} | {r.measure} | {r.result} | {r.target} | {_mark(r.met)} | `{r.command}` |"
        for r in rows
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--only", default="peers,1,2,4,5,6,7",
                        help="rows to run (3 comes with 1): peers,1,2,4,5,6,7")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    only = set(args.only.split(","))
    started, start_machine = time.monotonic(), machine()
    rows = asyncio.run(run(plan, only, args.quick))
    print(table(rows, plan, args.quick, started, start_machine))
    missed = [r for r in rows if r.met is False]
    if missed:
        print(f"\n{len(missed)} target(s) missed: rows "
              + ", ".join(sorted({r.row for r in missed})), flush=True)


if __name__ == "__main__":
    main()
