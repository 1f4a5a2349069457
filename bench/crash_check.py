"""The checks a crash run must pass, against what the peers and the store recorded
(numbered as in :mod:`bench.crash`)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.crash_io import (
    REACHED,
    AttemptRow,
    StoreRef,
    attempts,
    deliveries,
    integrity,
    message_state,
    normalised,
    peer_records,
    peer_requests,
    run_cli,
)
from router.sandbox import Sandbox
from router.store.sqlstore import LATE_ANSWER

if TYPE_CHECKING:
    from bench.crash import Report


async def check(report: Report, sb: Sandbox, store: StoreRef, workdir: Path,
                config: Path) -> None:
    """Checks 1-6 of the module docstring; problems and figures go into ``report``."""
    problems = report.problems
    rows = attempts(store)
    report.attempts = len(rows)
    delivered = deliveries(store)
    records = peer_records(sb)
    state = message_state(store)
    owner = {(r.channel, normalised(r.channel, r.address)): r.contact for r in rows}
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
                         if ch == channel and a in {normalised(ch, t) for t in twice}}  # fmt: skip

    # 3. Every request a peer took is one attempt of its own; every accepted attempt is
    #    at a peer under the provider id it recorded.
    by_key: dict[tuple[str, str], list[AttemptRow]] = defaultdict(list)
    for r in rows:
        by_key[(r.channel, normalised(r.channel, r.address))].append(r)
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
        found = cross_channel_problems(contact, by_contact[contact], seen[contact],
                               delivered.get(contact, ("", None))[1], shown.outcomes)  # fmt: skip
        problems += [f"{contact}: {problem}" for problem in found]
        if found:
            suspects.add(contact)
        else:
            report.cross_after_unknown += 1
    # ...and as a person would look one up.
    for contact in report.cross_channel[:2]:
        final, _ = _last_tried(by_contact[contact], seen[contact],
                               delivered.get(contact, ("", None))[1])
        exit_status, out, err = await run_cli(
            ["history", "--contact", contact, "--json", "--config", str(config)], workdir
        )
        if exit_status != 0:
            problems.append(f"history --contact {contact} exited {exit_status}: {err[-500:]}")
            continue
        listed = json.loads(out)["attempts"]
        for channel in sorted(seen[contact] - {final or ""}):
            if not any(a["channel"] == channel and _was_in_doubt(a["outcome"], a.get("detail"))
                       for a in listed):
                problems.append(f"history --contact {contact} shows no unknown {channel} attempt")
                suspects.add(contact)

    for contact in sorted(suspects)[:10]:
        report.contact_details[contact] = [r.describe() for r in by_contact.get(contact, [])] + [
            f"peer got {rec.channel} {rec.address} {rec.provider_id}" for rec in records
            if owner.get((rec.channel, rec.address)) == contact
        ]  # fmt: skip


def _was_in_doubt(verdict: str | None, detail: str | None) -> bool:
    """Maybe sent when the next channel was tried: still unknown, or answered only after
    the process that took the work over had settled it as maybe sent (the sender had
    been paused past its lease)."""
    return verdict == "unknown" or LATE_ANSWER.strip(" ()") in (detail or "")


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


def cross_channel_problems(
    contact: str,
    rows: list[AttemptRow],
    channels: set[str],
    final: str | None,
    shown: Mapping[tuple[str, str], set[str]],
) -> list[str]:
    """A contact reached on several channels: each but the last one tried must have an
    attempt that was in doubt (``unknown``, or answered late) made before that last
    channel's, and the history must show it.

    The last one tried, by time, not the delivery's channel: a paused sender's late answer
    on an earlier channel makes that one the delivery's channel (it took the message
    first), while the channel the taker went on to afterwards took it too."""
    problems: list[str] = []
    last, last_at = _last_tried(rows, channels, final)
    for channel in sorted(channels - {last or ""}):
        doubt = [r for r in rows if r.channel == channel and _was_in_doubt(r.verdict, r.detail)
                 and (last_at is None or r.started_at < last_at)]  # fmt: skip
        if not doubt:
            problems.append(f"got it on {channel} and on {last} with no unknown"
                            f" {channel} attempt before")  # fmt: skip
        elif not shown.get((contact, channel), set()) & {"unknown", "late"}:
            problems.append(f"history --json shows no unknown {channel} attempt")
    return problems


def _last_tried(
    rows: list[AttemptRow], channels: set[str], final: str | None
) -> tuple[str | None, float | None]:
    """Of the channels a contact got the message on, the one whose sending attempt (taken
    or in doubt) began last, and when (else the delivery's channel)."""
    tried = {channel: min((r.started_at for r in rows if r.channel == channel
                           and (r.verdict == "accepted" or _was_in_doubt(r.verdict, r.detail))),
                          default=None)
             for channel in channels}  # fmt: skip
    known = {channel: at for channel, at in tried.items() if at is not None}
    if not known:
        return final, None
    last = max(known, key=lambda channel: known[channel])
    return last, known[last]


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
        outcome = "late" if _was_in_doubt(a["outcome"], a.get("detail")) else a["outcome"]
        found.outcomes.setdefault((a["contact"], a["channel"]), set()).add(outcome)
        if a.get("in_doubt"):
            found.problems.append(f"history: {a['contact']} {a['channel']} still in doubt")
    return found
