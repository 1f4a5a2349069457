"""A real ``backchannel broadcast`` killed with SIGKILL at random points, resumed, checked.

Shared by ``tests/test_crash.py`` (one run) and ``bench/kill_soak.py`` (many runs)::

    async with Sandbox() as sb:
        report = await crash_run(sb, workdir, kills=5, seed=1234)
    assert report.ok, report.describe()

The peers are served by the caller's event loop; every router is the installed
console script in its own process, so each kill is a real SIGKILL of a router in
the middle of a broadcast: attempts recorded ``sending`` whose requests may or may
not have reached a peer, group commits cut short, a WAL left behind.

The schedule: ``backchannel broadcast`` (with an idempotency key) is killed at a
random moment within 1.2 s of its first send; then ``backchannel resume`` (or, one
time in four, the same broadcast again, as cron would repeat it) is started and
killed the same way, until ``kills`` kills landed mid-run (the process had begun
attempts and left work behind). That many kills land whatever the machine's pace:
each process is killed, at the latest, once it has settled its share of the work
left (the pending contacts over the kills and pauses still to come, plus one), so
the work always outlasts the schedule; the peers' latency only spreads the kills out.
Now and then a process is killed during its start-up instead (loading, claiming,
reconciling): those are extra. A last ``backchannel resume`` must then finish (exit
0), and everything is checked against what the peers themselves recorded and the
store file:

1. every contact reached (delivery accepted, and the peer has the message);
2. no recipient got the message twice on one channel (counted by the peers);
3. every request a peer took matches its own attempt row (Twilio SID, Telegram
   message id and email Message-ID equal the attempt's provider id when accepted;
   otherwise the attempt says ``unknown``), and every accepted attempt is at a peer;
4. ``PRAGMA integrity_check`` is ok (after every kill, and at the end);
5. a contact the peers saw on two channels has an ``unknown`` attempt, made before
   the delivering one, on every channel but the one that delivered, and
   ``backchannel history --json`` shows it;
6. no attempt is left ``sending``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.crash_check import check
from bench.crash_io import (
    PROCESS_LIMIT,
    REACHED,
    StoreRef,
    attempt_counts,
    child_env,
    command,
    in_flight,
    integrity,
    message_state,
    pending,
    run_cli,
    settled,
)
from bench.crash_pause import LEASE, Pause, pause_length, stop_between_writes, until_stale
from router.sandbox import Fault, Sandbox

LATENCY = 0.06
"""Seconds each peer adds before answering, for 5 kills over 300 contacts: a broadcast
then takes about 9 s, long enough for five kills mid-run. More kills (or fewer
contacts) slow the peers down in proportion, so the work outlasts the kills."""
CONCURRENCY = 8
TEXT = "crash test: db-primary is down, failover in progress"
GROUP = "ops"
KILL_WINDOW = 1.2
"""A mid-run kill lands up to this long after the process's first send."""
EARLY_KILLS = 0.2
"""Share of processes planned to die during their start-up instead (loading, claiming
the message, reconciling in-doubt attempts), before their first send; these do not
count as kills, and at most half as many as the kills asked for are planned."""
RUN_LIMIT = 240.0
"""Nor may the kills of a run take longer than this, per 5 kills."""

Log = Callable[[str], None]


# -- the scenario ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScriptedFault:
    peer: str
    """twilio, telegram or smtp."""
    channel: str
    fault: Fault
    times: int | None
    address: str


def people(count: int, rng: random.Random) -> dict[str, dict[str, object]]:
    """``count`` contacts, each with a phone, a Telegram chat and an email address, in
    three orders so that WhatsApp, Telegram and email each lead for some.

    Five channels each: scripted trouble takes at most two of them from a contact and
    kills at most two more (see ``crash_run``), so every contact stays reachable and
    a contact not reached is the router's doing."""
    contacts: dict[str, dict[str, object]] = {}
    for i in range(count):
        contact: dict[str, object] = {
            "phone": f"+336{10_000_000 + i:08d}",
            "telegram": 700_000_000 + i,
            "email": f"c{i:04d}@example.com",
        }
        roll = rng.random()
        if roll < 0.15:
            contact["order"] = ["email", "telegram", "sms", "voice", "whatsapp"]
        elif roll < 0.30:
            contact["order"] = ["telegram", "sms", "whatsapp", "email", "voice"]
        contacts[f"c{i:04d}"] = contact
    return contacts


ADDRESS_FIELD = {"whatsapp": "phone", "sms": "phone", "voice": "phone", "telegram": "telegram",
                 "email": "email"}  # fmt: skip


def trouble(
    contacts: Mapping[str, Mapping[str, object]], rng: random.Random
) -> list[ScriptedFault]:
    """Realistic per-address trouble, at most two troubled channels per contact.

    WhatsApp: 503 once (a retry works), 503 for good (fail over), recipient rejected,
    a stall or a drop (maybe sent: never again on WhatsApp, a duplicate elsewhere is
    expected). Telegram: 502 once, chat blocked, stall, drop. SMS: 503 for good or a
    stall. Email: 451 once at RCPT, a stall or a drop after DATA.
    """
    menu: dict[str, list[tuple[float, str, Fault, int | None]]] = {
        "whatsapp": [
            (0.08, "twilio", Fault.http(503), 1),
            (0.06, "twilio", Fault.http(503), None),
            (0.06, "twilio", Fault.reject_recipient(code=63024), None),
            (0.06, "twilio", Fault.stall(), 1),
            (0.04, "twilio", Fault.drop(), 1),
        ],
        "telegram": [
            (0.05, "telegram", Fault.http(502), 1),
            (0.05, "telegram", Fault.reject_recipient(code=403), None),
            (0.06, "telegram", Fault.stall(), 1),
            (0.05, "telegram", Fault.drop(), 1),
        ],
        "sms": [
            (0.04, "twilio", Fault.http(503), None),
            (0.03, "twilio", Fault.stall(), 1),
        ],
        "email": [
            (0.05, "smtp", Fault.smtp(451, stage="rcpt"), 1),
            (0.06, "smtp", Fault.stall(), 1),
            (0.04, "smtp", Fault.drop(), 1),
        ],
    }
    scripted: list[ScriptedFault] = []
    for fields in contacts.values():
        troubled = 0
        for channel, options in menu.items():
            if troubled >= 2:
                break
            roll = rng.random()
            for share, peer, fault, times in options:
                if roll < share:
                    address = str(fields[ADDRESS_FIELD[channel]])
                    scripted.append(ScriptedFault(peer, channel, fault, times, address))
                    troubled += 1
                    break
                roll -= share
    return scripted


def script(sb: Sandbox, faults: Iterable[ScriptedFault]) -> None:
    books = {"twilio": sb.twilio.faults, "telegram": sb.telegram.faults, "smtp": sb.smtp.faults}
    for f in faults:
        books[f.peer].fail(f.channel, f.fault, times=f.times, address=f.address)


def pace(kills: int, contacts: int) -> float:
    """The peers' latency for a run: the work must outlast the kills."""
    return min(0.5, LATENCY * max(1.0, kills / 5) * max(1.0, 300 / max(contacts, 1)))


def config_toml(
    sb: Sandbox, contacts: Mapping[str, Mapping[str, object]], store: StoreRef, latency: float
) -> str:
    fast = {"per_second": 10_000.0, "per_recipient_per_second": 10_000.0, "burst": 100}
    timeout = max(1.0, 12 * latency)  # how long a stalled request holds a worker
    return sb.config_toml(
        contacts=contacts,
        store_path=str(store.path),
        overrides={
            "routing": {"concurrency": CONCURRENCY, "tries_per_channel": 2,
                        "retry_backoff": 0.02, "max_retry_after": 1.0},
            "twilio": {"timeout": timeout, "connect_timeout": timeout},
            "telegram": {"timeout": timeout, "connect_timeout": timeout},
            "email": {"timeout": timeout},
            # Scripted per-address trouble must not take a whole channel down.
            "health": {"failure_threshold": 100_000, "min_requests": 100_000},
            # Pauses over the lease invite a take-over within seconds, not the default 15.
            "store": {**store.section(), "lease": LEASE},
            **{f"limits.{name}": fast for name in ("whatsapp", "telegram", "sms", "voice")},
        },
    )  # fmt: skip


def prepare(
    sb: Sandbox, workdir: Path, count: int, latency: float, rng: random.Random,
    url: str | None = None,
) -> tuple[Path, StoreRef]:
    """Contacts, their trouble scripted into the peers, the peers' pace, and the config:
    returns (config, store)."""
    book = people(count, rng)
    script(sb, trouble(book, rng))
    for peer in (sb.twilio, sb.telegram, sb.smtp):
        peer.latency = latency
    workdir.mkdir(parents=True, exist_ok=True)
    store = StoreRef(workdir / "crash.db", url)
    config = workdir / "backchannel.toml"
    config.write_text(config_toml(sb, book, store, latency), encoding="utf-8")
    return config, store


# -- processes -----------------------------------------------------------------------------


@dataclass(slots=True)
class Process:
    """One ``backchannel`` process and what happened to it."""

    args: tuple[str, ...]
    status: int | None = None
    planned_kill: str = "none"
    """none, early (during start-up) or mid-run (after its first request reached a peer)."""
    killed: bool = False
    """It died of our SIGKILL (not: it finished before the signal)."""
    seconds: float = 0.0
    attempts_before: int = 0
    attempts_after: int = 0
    in_flight: int = 0
    """Attempts it began and left ``sending`` when it died."""
    state_after: str | None = None
    """The message's state afterwards (None: not recorded yet)."""
    integrity: str = ""
    stdout: str = ""
    stderr: str = ""
    pause: Pause | None = None

    @property
    def counts(self) -> bool:
        """A kill that interrupted a broadcast: it sent something, and work was left."""
        return (
            self.killed
            and self.attempts_after > self.attempts_before
            and self.state_after == "pending"
        )

    def summary(self) -> str:
        how = "SIGKILL" if self.killed else f"exit {self.status}"
        return (
            f"{self.args[0]:<9} {how:<8} after {self.seconds:4.1f}s"
            f" (kill planned: {self.planned_kill}); attempts {self.attempts_before}"
            f" -> {self.attempts_after}, {self.in_flight} in flight, message"
            f" {self.state_after}, integrity {self.integrity or '-'}"
            + (f"; {self.pause.line()}" if self.pause is not None else "")
        )


def sends(sb: Sandbox) -> int:
    """Requests that can deliver something, as the peers logged them so far."""
    twilio = sum(r.method == "POST" for r in sb.twilio.requests)
    telegram = sum(r.path.endswith("/sendMessage") for r in sb.telegram.requests)
    return twilio + telegram + sum(e.command == "MAIL" for e in sb.smtp.log)


async def run_process(
    sb: Sandbox,
    args: list[str],
    *,
    workdir: Path,
    store: StoreRef,
    kill: str,
    victims: frozenset[str],
    window: tuple[float, float],
    rng: random.Random,
    deadline: float,
    share: int | None = None,
    pause: tuple[float, bool] | None = None,
    while_paused: Callable[[], Awaitable[bool]] | None = None,
) -> Process:
    """Run one ``backchannel`` command and SIGKILL it as ``kill`` says.

    ``early``: at a random moment of its first 1.2 s, if it has not sent anything by
    then (else it is killed mid-run instead). ``mid-run``: a random moment within
    ``window`` after its first send, once no contact of ``victims`` is pending (or at
    ``deadline``, a loop time, if it never gets there), or as soon as it has settled
    ``share`` deliveries, if that comes first: work is left for the kills to come.

    ``pause`` (seconds, over the lease): first SIGSTOP it that long at a moment within
    ``window`` after its first send; over the lease, ``while_paused`` runs once its
    heartbeat is stale (a resume taking the work over); then SIGCONT, and the kill as
    planned.
    """
    loop = asyncio.get_running_loop()
    process = await asyncio.create_subprocess_exec(
        *command(), *args, cwd=workdir, env=child_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    started = loop.time()
    io = asyncio.ensure_future(process.communicate())
    record = Process(tuple(args), planned_kill=kill)
    sent_before = sends(sb)
    settled_before = settled(store)

    async def until(ready: Callable[[], bool], deadline: float) -> bool:
        while not io.done() and loop.time() < deadline:
            if ready():
                return True
            await asyncio.sleep(0.02)
        return False

    async def settle_some(seconds: float) -> None:
        """Let it work ``seconds``, or until it has settled its ``share``."""
        if share is None:
            await asyncio.wait({io}, timeout=seconds)
        else:
            await until(lambda: settled(store) - settled_before >= share, loop.time() + seconds)

    try:
        early_end = started + rng.uniform(0.1, 1.2)
        if kill == "early" and await until(lambda: sends(sb) > sent_before, early_end):
            kill = record.planned_kill = "mid-run"  # too late: it is sending already
        if pause is not None:
            await until(lambda: sends(sb) > sent_before, min(deadline, started + PROCESS_LIMIT))
            await settle_some(rng.uniform(*window))
            if not io.done() and await stop_between_writes(process, store):
                record.pause = await _sleep(process, store, *pause, while_paused)
            sent_before, settled_before = sends(sb), settled(store)
        if kill == "mid-run":
            await until(lambda: sends(sb) > sent_before and not pending(store, victims),
                        min(deadline, started + PROCESS_LIMIT))  # fmt: skip
            await settle_some(rng.uniform(*window))
        if kill != "none" and not io.done():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
        out, err = await asyncio.wait_for(io, PROCESS_LIMIT)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    record.seconds = loop.time() - started
    record.status = process.returncode
    record.killed = process.returncode == -signal.SIGKILL
    if record.pause is not None:
        record.pause.woke_status = process.returncode
    record.stdout, record.stderr = out.decode(errors="replace"), err.decode(errors="replace")
    return record


async def _sleep(
    process: asyncio.subprocess.Process, store: StoreRef, seconds: float, over_lease: bool,
    while_paused: Callable[[], Awaitable[bool]] | None,
) -> Pause:
    """The process is stopped: keep it so, let another take over if the lease runs out,
    then wake it."""
    pause = Pause(seconds, over_lease)
    began = time.monotonic()
    try:
        if over_lease:
            await until_stale(store)
            if while_paused is not None:
                pause.taken_over = await while_paused()
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - began)))
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
    pause.seconds = time.monotonic() - began
    return pause


@dataclass(slots=True)
class Report:
    seed: int
    target_kills: int
    contacts: int
    latency: float = LATENCY
    target_pauses: int = 0
    processes: list[Process] = field(default_factory=list)
    final_status: int | None = None
    attempts: int = 0
    reconciled: int = 0
    """In-doubt attempts found at Twilio after a kill (accepted, no resend)."""
    settled_unknown: int = 0
    """In-doubt attempts settled as maybe sent (never resent on their channel)."""
    lost: list[str] = field(default_factory=list)
    same_channel: dict[str, list[str]] = field(default_factory=dict)
    """Recipients a peer recorded twice on one channel, by channel."""
    cross_channel: list[str] = field(default_factory=list)
    """Contacts the peers recorded on two or more channels."""
    cross_after_unknown: int = 0
    in_doubt: int = 0
    """Attempts whose fate stayed unknown (maybe sent), by verdict, at the end."""
    left_sending: int = 0
    integrity: str = ""
    problems: list[str] = field(default_factory=list)
    contact_details: dict[str, list[str]] = field(default_factory=dict)

    @property
    def kills(self) -> int:
        return sum(p.counts for p in self.processes)

    @property
    def pauses(self) -> int:
        return sum(p.pause is not None for p in self.processes)

    @property
    def pauses_over_lease(self) -> int:
        return sum(p.pause is not None and p.pause.over_lease for p in self.processes)

    @property
    def taken_over(self) -> int:
        return sum(p.pause is not None and p.pause.taken_over for p in self.processes)

    @property
    def early_kills(self) -> int:
        return sum(p.killed and not p.counts for p in self.processes)

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self.processes if p.killed)

    @property
    def duplicates(self) -> int:
        return sum(len(v) for v in self.same_channel.values())

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        return (
            f"seed {self.seed}: kills {self.kills} (+{self.early_kills} early),"
            f" pauses {self.pauses} ({self.pauses_over_lease} over the lease,"
            f" {self.taken_over} taken over meanwhile),"
            f" latency {self.latency * 1000:.0f} ms,"
            f" processes {len(self.processes) + 1}, contacts {self.contacts},"
            f" lost {len(self.lost)}, duplicates {self.duplicates},"
            f" cross-channel {len(self.cross_channel)} ({self.cross_after_unknown} after"
            f" unknown), in flight at kills {self.in_flight} (reconciled {self.reconciled},"
            f" maybe sent {self.settled_unknown}), in doubt {self.in_doubt},"
            f" attempts {self.attempts}, integrity {self.integrity}"
            + ("" if self.ok else f", {len(self.problems)} PROBLEMS")
        )

    def describe(self) -> str:
        lines = [
            f"crash run with seed {self.seed} (rerun: CRASH_TEST_SEED={self.seed}"
            f" CRASH_TEST_KILLS={self.target_kills} CRASH_TEST_PAUSES={self.target_pauses})",
            self.line(),
            "processes:",
            *(f"  {i + 1}. {p.summary()}" for i, p in enumerate(self.processes)),
            f"  final resume: exit {self.final_status}",
        ]
        if self.problems:
            lines.append(f"problems ({len(self.problems)}):")
            lines += [f"  - {problem}" for problem in self.problems[:40]]
            if len(self.problems) > 40:
                lines.append(f"  ... and {len(self.problems) - 40} more")
        for contact, rows in list(self.contact_details.items())[:10]:
            lines.append(f"contact {contact}:")
            lines += [f"    {row}" for row in rows]
        for p in self.processes[-1:]:
            if p.stderr.strip():
                lines.append("stderr of the last process (tail):")
                lines += [f"    {row}" for row in p.stderr.strip().splitlines()[-15:]]
        return "\n".join(lines)


async def crash_run(
    sb: Sandbox,
    workdir: Path,
    *,
    kills: int = 5,
    pauses: int = 0,
    seed: int,
    contacts: int = 300,
    log: Log | None = None,
    url: str | None = None,
) -> Report:
    """The whole scenario on a started sandbox (fresh: its records are checked)."""
    say = log or (lambda _text: None)
    rng = random.Random(seed)
    events = kills + pauses
    # A pause over the lease also runs (and kills) a taker: it uses up about two kills' work.
    latency = pace(kills + 2 * pauses, contacts)
    config, store = prepare(sb, workdir, contacts, latency, rng, url)
    report = Report(seed, kills, contacts, latency=latency, target_pauses=pauses)
    window = (0.05, KILL_WINDOW)
    # Contacts caught in flight by kills, and how often. The in-doubt contacts are the
    # first a resumed process works on, so the next kill may catch some of them again,
    # on their next channel. Each such kill costs a contact a channel (a request in
    # doubt is never resent on its channel): after five one is rightly unreachable,
    # which would test the schedule of the kills rather than the router. So a contact
    # is caught by two kills at most: the next kill waits until those are settled.
    hits: Counter[str] = Counter()
    broadcast = ["broadcast", "--group", GROUP, "--json", "--yes", "--config", str(config),
                 "--idempotency-key", f"crash-{seed}", TEXT]  # fmt: skip
    resume = ["resume", "--json", "--config", str(config)]
    limit = 8 * events + 20
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RUN_LIMIT * max(1.0, events / 5)

    def share(extra: int = 0) -> int:
        """What one process may settle before its kill: the work left, split between the
        events still to come (and ``extra`` more), with a part kept for the last resume."""
        events_left = max(0, kills - report.kills) + max(0, pauses - report.pauses) + extra
        return max(1, (contacts - settled(store)) // (events_left + 1))

    async def observed(args: list[str], kill: str, pause: tuple[float, bool] | None = None,
                       while_paused: Callable[[], Awaitable[bool]] | None = None,
                       extra: int = 0) -> Process:
        before, watermark, _ = attempt_counts(store)
        twice = frozenset(contact for contact, n in hits.items() if n >= 2)
        process = await run_process(sb, args, workdir=workdir, store=store, kill=kill,
                                    victims=twice, window=window, rng=rng, deadline=deadline,
                                    share=share(extra), pause=pause,
                                    while_paused=while_paused)  # fmt: skip
        process.attempts_before = before
        process.attempts_after, _, process.in_flight = attempt_counts(store, after=watermark)
        hits.update(in_flight(store, after=watermark))
        after = message_state(store)
        process.state_after = None if after is None else after[1]
        if process.killed and store.exists():
            process.integrity = integrity(store)
            if process.integrity != "ok":
                report.problems.append(f"integrity after kill: {process.integrity}")
        report.processes.append(process)
        say(f"  {len(report.processes)}. {process.summary()}")
        if not process.killed and process.status not in (0, 1):
            report.problems.append(f"{args[0]} exited {process.status}: {process.stderr[-2000:]}")
        return process

    async def take_over() -> bool:
        """While the first one sleeps past its lease: a resume takes the work (and is
        killed mid-run in turn, leaving work for the sleeper to wake up to)."""
        taker = await observed(resume, "mid-run", extra=1)
        return taker.attempts_after > taker.attempts_before

    while (report.kills < kills or report.pauses < pauses) and len(report.processes) < limit:
        if loop.time() > deadline:
            report.problems.append(f"the run took over {RUN_LIMIT * max(1.0, events / 5):.0f}s")
            break
        current = message_state(store)
        if current is not None and current[1] != "pending":
            break  # finished before the last event: no work left to interrupt
        planned_early = sum(p.planned_kill == "early" for p in report.processes)
        early = planned_early < max(1, kills // 2) and rng.random() < EARLY_KILLS
        # Recovery as an operator would do it: usually ``resume``; sometimes the same
        # broadcast again (cron repeating its command), which its key turns into a resume.
        restart = resume if rng.random() < 0.75 else broadcast
        args = broadcast if current is None else restart
        if report.pauses < pauses and (report.kills >= kills or rng.random() < 0.5):
            # Up to three shares go in a pause: before it, the taker's, and after it.
            await observed(args, "mid-run", pause_length(rng), take_over, extra=2)
        else:
            await observed(args, "early" if early else "mid-run")
    if report.kills < kills:
        report.problems.append(
            f"only {report.kills} of {kills} kills landed mid-run before the work ran out"
        )
    if report.pauses < pauses:
        report.problems.append(
            f"only {report.pauses} of {pauses} pauses landed mid-run before the work ran out"
        )
    final_args = broadcast if message_state(store) is None else resume
    status, out, err = await run_cli(final_args, workdir)
    report.final_status = status
    if status != 0:
        report.problems.append(f"final {final_args[0]} exited {status}: {err[-2000:]}")
    with contextlib.suppress(ValueError):
        payload = json.loads(out)
        for result in payload.get("resumed", [payload]):
            for r in result.get("results", []):
                if r.get("status") not in REACHED:
                    report.problems.append(f"final output: {r.get('contact')} is {r.get('status')}")
    await check(report, sb, store, workdir, config)
    return report


# -- the checks ------------------------------------------------------------------------------
