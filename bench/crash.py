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
attempts and left work behind). Now and then a process is killed during its
start-up instead (loading, claiming, reconciling): those are extra. A last
``backchannel resume`` must then finish (exit 0), and everything is checked against
what the peers themselves recorded and the store file:

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
import os
import random
import signal
import sqlite3
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
PROCESS_LIMIT = 120.0
"""No process may run longer (the run fails instead of hanging)."""
RUN_LIMIT = 240.0
"""Nor may the kills of a run take longer than this, per 5 kills."""
REACHED = frozenset({"accepted", "delivered", "acknowledged"})

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
    sb: Sandbox, contacts: Mapping[str, Mapping[str, object]], store: Path, latency: float
) -> str:
    fast = {"per_second": 10_000.0, "per_recipient_per_second": 10_000.0, "burst": 100}
    timeout = max(1.0, 12 * latency)  # how long a stalled request holds a worker
    return sb.config_toml(
        contacts=contacts,
        store_path=str(store),
        overrides={
            "routing": {"concurrency": CONCURRENCY, "tries_per_channel": 2,
                        "retry_backoff": 0.02, "max_retry_after": 1.0},
            "twilio": {"timeout": timeout, "connect_timeout": timeout},
            "telegram": {"timeout": timeout, "connect_timeout": timeout},
            "email": {"timeout": timeout},
            # Scripted per-address trouble must not take a whole channel down.
            "health": {"failure_threshold": 100_000, "min_requests": 100_000},
            **{f"limits.{name}": fast for name in ("whatsapp", "telegram", "sms", "voice")},
        },
    )  # fmt: skip


def prepare(
    sb: Sandbox, workdir: Path, count: int, latency: float, rng: random.Random
) -> tuple[Path, Path]:
    """Contacts, their trouble scripted into the peers, the peers' pace, and the config:
    returns (config, store)."""
    book = people(count, rng)
    script(sb, trouble(book, rng))
    for peer in (sb.twilio, sb.telegram, sb.smtp):
        peer.latency = latency
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "crash.db"
    config = workdir / "backchannel.toml"
    config.write_text(config_toml(sb, book, store, latency), encoding="utf-8")
    return config, store


# -- processes -----------------------------------------------------------------------------


def command() -> list[str]:
    """The installed console script next to this interpreter, else the module."""
    script_path = Path(sys.executable).with_name("backchannel")
    if script_path.exists():
        return [str(script_path)]
    return [sys.executable, "-m", "router.cli"]


def child_env() -> dict[str, str]:
    """No BACKCHANNEL_* variable reaches the router (the crash test's own knobs would be
    read as config overrides), no colours, a wide console."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("BACKCHANNEL_")}
    return env | {"NO_COLOR": "1", "TERM": "dumb", "PYTHONIOENCODING": "utf-8",
                  "COLUMNS": "200"}  # fmt: skip


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
    store: Path,
    kill: str,
    victims: frozenset[str],
    window: tuple[float, float],
    rng: random.Random,
    deadline: float,
) -> Process:
    """Run one ``backchannel`` command and SIGKILL it as ``kill`` says.

    ``early``: at a random moment of its first 1.2 s, if it has not sent anything by
    then (else it is killed mid-run instead). ``mid-run``: a random moment within
    ``window`` after its first send, once no contact of ``victims`` is pending (or at
    ``deadline``, a loop time, if it never gets there).
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

    async def until(ready: Callable[[], bool], deadline: float) -> bool:
        while not io.done() and loop.time() < deadline:
            if ready():
                return True
            await asyncio.sleep(0.02)
        return False

    try:
        early_end = started + rng.uniform(0.1, 1.2)
        if kill == "early" and await until(lambda: sends(sb) > sent_before, early_end):
            kill = record.planned_kill = "mid-run"  # too late: it is sending already
        if kill == "mid-run":
            await until(lambda: sends(sb) > sent_before and not pending(store, victims),
                        min(deadline, started + PROCESS_LIMIT))  # fmt: skip
            await asyncio.wait({io}, timeout=rng.uniform(*window))
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
    record.stdout, record.stderr = out.decode(errors="replace"), err.decode(errors="replace")
    return record


async def run_cli(args: list[str], workdir: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command(), *args, cwd=workdir, env=child_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), PROCESS_LIMIT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


# -- the store, read-only --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptRow:
    attempt_id: str
    contact: str
    channel: str
    address: str
    state: str
    verdict: str | None
    detail: str | None
    provider_id: str | None
    started_at: float

    def describe(self) -> str:
        return (
            f"{self.attempt_id} {self.channel:<8} {self.address:<22} {self.state:<7}"
            f" {self.verdict or '-':<9} {self.provider_id or '-'} {self.detail or ''}"
        )


def _query(store: Path, sql: str) -> list[tuple[Any, ...]]:
    if not store.exists():
        return []
    # Read-only: the file stays exactly as the killed process left it for the next one.
    connection = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        connection.close()


def message_state(store: Path) -> tuple[str, str] | None:
    rows = _query(store, "SELECT id, state FROM messages ORDER BY created_at")
    return None if not rows else (str(rows[-1][0]), str(rows[-1][1]))


def attempt_counts(store: Path, after: int = 0) -> tuple[int, int, int]:
    """(attempts, highest rowid, attempts still ``sending`` above rowid ``after``).

    Attempts are only ever added: the highest rowid before a process started tells
    the attempts it began from the ones an earlier process left in doubt."""
    rows = _query(
        store,
        "SELECT COUNT(*), COALESCE(MAX(rowid), 0), COALESCE(SUM(state = 'sending'"  # noqa: S608
        f" AND rowid > {int(after)}), 0) FROM attempts",
    )
    return (int(rows[0][0]), int(rows[0][1]), int(rows[0][2])) if rows else (0, 0, 0)


def pending(store: Path, contacts: frozenset[str]) -> bool:
    """Whether any of ``contacts`` still waits for its delivery to be settled."""
    if not contacts:
        return False
    rows = _query(store, "SELECT contact FROM deliveries WHERE status = 'pending'")
    return any(row[0] in contacts for row in rows)


def in_flight(store: Path, after: int) -> set[str]:
    """Contacts with an attempt above rowid ``after`` left ``sending``."""
    return {
        str(row[0])
        for row in _query(
            store,
            "SELECT DISTINCT contact FROM attempts"  # noqa: S608
            f" WHERE state = 'sending' AND rowid > {int(after)}",
        )
    }


def integrity(store: Path) -> str:
    if not store.exists():
        return "no file"
    rows = _query(store, "PRAGMA integrity_check")
    return "; ".join(str(row[0]) for row in rows)


def attempts(store: Path) -> list[AttemptRow]:
    rows = _query(
        store,
        "SELECT id, contact, channel, address, state, verdict, detail, provider_id, started_at"
        " FROM attempts ORDER BY started_at, rowid",
    )
    return [AttemptRow(*row) for row in rows]


def deliveries(store: Path) -> dict[str, tuple[str, str | None]]:
    rows = _query(store, "SELECT contact, status, channel FROM deliveries")
    return {str(contact): (str(status), channel) for contact, status, channel in rows}


# -- what the peers recorded ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerRecord:
    channel: str
    address: str
    """Normalised like the attempt's address (no ``whatsapp:`` prefix)."""
    provider_id: str
    """What an accepted attempt records for it: SID, ``chat/message_id`` or Message-ID."""


def peer_records(sb: Sandbox) -> list[PeerRecord]:
    records = [
        PeerRecord(channel, m.to.removeprefix("whatsapp:"), m.sid)
        for channel in ("whatsapp", "sms")
        for m in sb.twilio.sent(channel)
    ]
    records += [PeerRecord("voice", c.to, c.sid) for c in sb.twilio.sent("voice")]
    records += [
        PeerRecord("telegram", str(s.chat_id), f"{s.chat_id}/{s.message_id}")
        for s in sb.telegram.sent
    ]
    records += [
        PeerRecord("email", rcpt.lower(), mail.message_id or "")
        for mail in sb.smtp.received
        for rcpt in mail.rcpt_tos
    ]
    return records


def peer_requests(sb: Sandbox) -> Counter[tuple[str, str]]:
    """Every request that could have sent something, by (channel, address), whatever the
    peer answered (503s and rejections included), as the peers logged them."""
    found: Counter[tuple[str, str]] = Counter()
    for r in sb.twilio.requests:
        if r.method == "POST" and r.channel in ("whatsapp", "sms", "voice"):
            found[(r.channel, _norm(r.channel, r.params.get("To", "")))] += 1
    for r in sb.telegram.requests:
        if r.path.endswith("/sendMessage"):
            found[("telegram", str(r.params.get("chat_id", "")))] += 1
    for e in sb.smtp.log:
        if e.command == "RCPT":
            found[("email", _norm("email", e.argument.strip("<>")))] += 1
    return found


def _norm(channel: str, address: str) -> str:
    address = address.removeprefix("whatsapp:")
    return address.lower() if channel == "email" else address


# -- a whole run -----------------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    seed: int
    target_kills: int
    contacts: int
    latency: float = LATENCY
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
            f" CRASH_TEST_KILLS={self.target_kills})",
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
    seed: int,
    contacts: int = 300,
    log: Log | None = None,
) -> Report:
    """The whole scenario on a started sandbox (fresh: its records are checked)."""
    say = log or (lambda _text: None)
    rng = random.Random(seed)
    latency = pace(kills, contacts)
    config, store = prepare(sb, workdir, contacts, latency, rng)
    report = Report(seed, kills, contacts, latency=latency)
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
    limit = 6 * kills + 20
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RUN_LIMIT * max(1.0, kills / 5)
    while report.kills < kills and len(report.processes) < limit:
        if loop.time() > deadline:
            report.problems.append(f"the kills took over {RUN_LIMIT * max(1.0, kills / 5):.0f}s")
            break
        current = message_state(store)
        if current is not None and current[1] != "pending":
            break  # finished before the last kill: no work left to interrupt
        planned_early = sum(p.planned_kill == "early" for p in report.processes)
        early = planned_early < max(1, kills // 2) and rng.random() < EARLY_KILLS
        kill = "early" if early else "mid-run"
        # Recovery as an operator would do it: usually ``resume``; sometimes the same
        # broadcast again (cron repeating its command), which its key turns into a resume.
        restart = resume if rng.random() < 0.75 else broadcast
        args = broadcast if current is None else restart
        before, watermark, _ = attempt_counts(store)
        twice = frozenset(contact for contact, n in hits.items() if n >= 2)
        process = await run_process(sb, args, workdir=workdir, store=store, kill=kill,
                                    victims=twice, window=window, rng=rng,
                                    deadline=deadline)  # fmt: skip
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
    if report.kills < kills:
        report.problems.append(
            f"only {report.kills} of {kills} kills landed mid-run before the work ran out"
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


async def check(report: Report, sb: Sandbox, store: Path, workdir: Path, config: Path) -> None:
    """Checks 1-6 of the module docstring; problems and figures go into ``report``."""
    problems = report.problems
    rows = attempts(store)
    report.attempts = len(rows)
    delivered = deliveries(store)
    records = peer_records(sb)
    state = message_state(store)
    owner = {(r.channel, _norm(r.channel, r.address)): r.contact for r in rows}
    by_contact: dict[str, list[AttemptRow]] = defaultdict(list)
    for r in rows:
        by_contact[r.contact].append(r)
    suspects: set[str] = set()

    # 4. The file itself, and the message finished.
    report.integrity = integrity(store)
    if report.integrity != "ok":
        problems.append(f"PRAGMA integrity_check: {report.integrity}")
    if state is None or state[1] != "done":
        problems.append(f"the message is {state and state[1]!r}, not done")

    # 6. Nothing left in doubt in the store's own terms.
    sending = [r for r in rows if r.state == "sending"]
    report.left_sending = len(sending)
    problems += [f"attempt left sending: {r.describe()}" for r in sending]
    suspects |= {r.contact for r in sending}
    report.in_doubt = sum(r.verdict == "unknown" for r in rows)
    report.reconciled = sum("after the interruption" in (r.detail or "") for r in rows)
    report.settled_unknown = sum((r.detail or "").startswith("in doubt") for r in rows)

    # 2. Once per channel, as the peers count.
    for channel, recipients in sb.received().items():
        twice = sorted(r for r, n in Counter(recipients).items() if n > 1)
        if twice:
            report.same_channel[channel] = twice
            problems.append(f"{channel}: sent twice to {twice[:10]}")
            suspects |= {c for (ch, a), c in owner.items()
                         if ch == channel and a in {_norm(ch, t) for t in twice}}  # fmt: skip

    # 3. Every request a peer took is one attempt of its own; every accepted attempt is
    #    at a peer under the provider id it recorded.
    by_key: dict[tuple[str, str], list[AttemptRow]] = defaultdict(list)
    for r in rows:
        by_key[(r.channel, _norm(r.channel, r.address))].append(r)
    at_peer: dict[tuple[str, str], list[str]] = defaultdict(list)
    for rec in records:
        at_peer[(rec.channel, rec.address)].append(rec.provider_id)
    asked = peer_requests(sb)
    for key in sorted(set(by_key) | set(at_peer) | set(asked)):
        found = _match(key[0], by_key.get(key, []), at_peer.get(key, []))
        if asked[key] > len(by_key.get(key, [])):
            found.append(f"the {key[0]} peer received {asked[key]} requests for {key[1]},"
                         f" the store has {len(by_key.get(key, []))} attempts")  # fmt: skip
        if found:
            name = owner.get(key, f"<no contact: {key[0]} {key[1]}>")
            problems += [f"{name}: {problem}" for problem in found]
            suspects.add(name)

    # 1. Reached: the delivery says so, and the peer has it on that channel.
    seen: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        if (reached := owner.get((rec.channel, rec.address))) is not None:
            seen[reached].add(rec.channel)
    if len(delivered) != report.contacts:
        problems.append(f"{len(delivered)} deliveries recorded for {report.contacts} contacts")
    for contact, (status, via) in sorted(delivered.items()):
        if status not in REACHED or via is None or via not in seen[contact]:
            report.lost.append(contact)
            suspects.add(contact)
            problems.append(f"{contact}: not reached (delivery {status} on {via},"
                            f" peers saw {sorted(seen[contact])})")  # fmt: skip

    # 5. Two channels only after an unknown, and the history says so.
    report.cross_channel = sorted(c for c, channels in seen.items() if len(channels) > 1)
    shown = await _history(workdir, config, state[0] if state else None, len(rows))
    problems += shown.problems
    for contact in report.cross_channel:
        found = _cross_channel(contact, by_contact[contact], seen[contact],
                               delivered.get(contact, ("", None))[1], shown.outcomes)  # fmt: skip
        problems += [f"{contact}: {problem}" for problem in found]
        if found:
            suspects.add(contact)
        else:
            report.cross_after_unknown += 1
    # ...and as a person would look one up.
    for contact in report.cross_channel[:2]:
        final = delivered.get(contact, ("", None))[1]
        exit_status, out, err = await run_cli(
            ["history", "--contact", contact, "--json", "--config", str(config)], workdir
        )
        if exit_status != 0:
            problems.append(f"history --contact {contact} exited {exit_status}: {err[-500:]}")
            continue
        listed = json.loads(out)["attempts"]
        for channel in sorted(seen[contact] - {final or ""}):
            if not any(a["channel"] == channel and a["outcome"] == "unknown" for a in listed):
                problems.append(f"history --contact {contact} shows no unknown {channel} attempt")
                suspects.add(contact)

    for contact in sorted(suspects)[:10]:
        report.contact_details[contact] = [r.describe() for r in by_contact.get(contact, [])] + [
            f"peer got {rec.channel} {rec.address} {rec.provider_id}" for rec in records
            if owner.get((rec.channel, rec.address)) == contact
        ]  # fmt: skip


def _match(channel: str, mine: list[AttemptRow], theirs: list[str]) -> list[str]:
    """Pair what a peer recorded for one address with the attempts to that address."""
    problems: list[str] = []
    left = Counter(theirs)
    for r in mine:
        if r.verdict != "accepted":
            continue
        if left[r.provider_id or ""] > 0:
            left[r.provider_id or ""] -= 1
        else:
            problems.append(f"accepted {channel} attempt {r.attempt_id} says {r.provider_id!r},"
                            " which the peer never recorded")  # fmt: skip
    maybe = [r for r in mine if r.verdict == "unknown"]
    for provider_id in sorted(left.elements()):
        if channel == "email":  # the Message-ID carries the attempt id: exactly that one
            match = next((r for r in maybe if provider_id.startswith(f"<{r.attempt_id}@")), None)
        else:
            match = maybe[0] if maybe else None
        if match is None:
            problems.append(f"the {channel} peer recorded {provider_id}, and no accepted or"
                            " unknown attempt accounts for it")  # fmt: skip
        else:
            maybe.remove(match)
    return problems


def _cross_channel(
    contact: str,
    rows: list[AttemptRow],
    channels: set[str],
    final: str | None,
    shown: Mapping[tuple[str, str], set[str]],
) -> list[str]:
    """A contact reached on several channels: each but the delivering one must have an
    ``unknown`` attempt made before the delivering attempt, shown by the history."""
    problems: list[str] = []
    final_at = min(
        (r.started_at for r in rows if r.channel == final and r.verdict == "accepted"),
        default=None,
    )
    for channel in sorted(channels - {final or ""}):
        doubt = [r for r in rows if r.channel == channel and r.verdict == "unknown"
                 and (final_at is None or r.started_at < final_at)]  # fmt: skip
        if not doubt:
            problems.append(f"got it on {channel} and on {final} with no unknown"
                            f" {channel} attempt before")  # fmt: skip
        elif "unknown" not in shown.get((contact, channel), set()):
            problems.append(f"history --json shows no unknown {channel} attempt")
    return problems


@dataclass(slots=True)
class _History:
    outcomes: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


async def _history(workdir: Path, config: Path, message_id: str | None, count: int) -> _History:
    """``backchannel history --message ID --json``: outcomes by (contact, channel)."""
    found = _History()
    if message_id is None:
        return found
    status, out, err = await run_cli(
        ["history", "--message", message_id, "--limit", str(count + 10), "--json",
         "--config", str(config)], workdir,
    )  # fmt: skip
    if status != 0:
        found.problems.append(f"history --message exited {status}: {err[-500:]}")
        return found
    listed = json.loads(out)["attempts"]
    if len(listed) != count:
        found.problems.append(f"history shows {len(listed)} attempts, the store has {count}")
    for a in listed:
        found.outcomes.setdefault((a["contact"], a["channel"]), set()).add(a["outcome"])
        if a.get("in_doubt"):
            found.problems.append(f"history: {a['contact']} {a['channel']} still in doubt")
    return found
