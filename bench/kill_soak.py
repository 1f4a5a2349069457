"""Kill soak: the crash test's scenario, many times over.

    python -m bench.kill_soak [--rounds 10] [--kills 5] [--pauses 5] [--contacts 300]
                              [--seed S] [--keep] [--backend sqlite|postgres]

Each round serves fresh sandbox peers in this process, starts a real
``backchannel broadcast`` to ``--contacts`` contacts with scripted trouble
(503s, rejected recipients, stalls and drops on every channel), SIGKILLs it at a
random moment after it starts sending, runs ``backchannel resume`` and kills that
too, ``--kills`` times; ``--pauses`` times it stops a sender with SIGSTOP instead,
for a random time (half of them longer than the lease, while a ``resume`` takes the
work over and is killed in turn), and wakes it with SIGCONT (see
``bench/crash_pause.py``); then it lets a last ``resume`` finish and checks what the
peers recorded against the store (see ``bench/crash.py``). One line per round,
then the totals: kills, pauses, contacts, lost (not reached), duplicates on one channel,
cross-channel duplicates (and how many followed an unknown attempt, as they all
must), attempts in flight at the kills (found at Twilio afterwards / settled as
maybe sent), attempts left in doubt, integrity. Exits 1 if any round lost a
contact, sent twice on one channel, or failed any other check.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.crash import Report, crash_run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pg import cluster, fresh_database

from router.sandbox import Sandbox


async def soak(rounds: int, kills: int, pauses: int, contacts: int, seed: int,
               keep: bool, server: str | None = None) -> int:
    reports: list[Report] = []
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="kill-soak-"))
    backend = "PostgreSQL" if server is not None else "SQLite"
    print(f"kill soak on {backend}: {rounds} rounds, {kills} kills and {pauses} pauses each,"
          f" {contacts} contacts, seed {seed}")
    try:
        for index in range(rounds):
            round_seed = seed + index
            url = None if server is None else await fresh_database(server)
            async with Sandbox() as sb:
                report = await crash_run(
                    sb, root / f"round-{index + 1}", kills=kills, pauses=pauses,
                    seed=round_seed, contacts=contacts, url=url,
                )  # fmt: skip
            reports.append(report)
            print(f"round {index + 1:>3}: {report.line()}", flush=True)
            if not report.ok:
                print(report.describe(), flush=True)
    finally:
        if keep:
            print(f"stores and configs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    failed = [r for r in reports if not r.ok]
    total_contacts = sum(r.contacts for r in reports)
    lost = sum(len(r.lost) for r in reports)
    duplicates = sum(r.duplicates for r in reports)
    cross = sum(len(r.cross_channel) for r in reports)
    after_unknown = sum(r.cross_after_unknown for r in reports)
    integrity = "ok" if all(r.integrity == "ok" for r in reports) else "FAILED"
    print(
        f"total: rounds {len(reports)}, kills {sum(r.kills for r in reports)}"
        f" (+{sum(r.early_kills for r in reports)} during start-up),"
        f" pauses {sum(r.pauses for r in reports)}"
        f" ({sum(r.pauses_over_lease for r in reports)} over the lease,"
        f" {sum(r.taken_over for r in reports)} taken over while asleep),"
        f" contacts {total_contacts}, lost {lost}, duplicates on one channel {duplicates},"
        f" cross-channel duplicates {cross} ({after_unknown} after an unknown attempt),"
        f" in flight at kills {sum(r.in_flight for r in reports)}"
        f" (found at Twilio {sum(r.reconciled for r in reports)},"
        f" settled as maybe sent {sum(r.settled_unknown for r in reports)}),"
        f" attempts {sum(r.attempts for r in reports)},"
        f" in doubt {sum(r.in_doubt for r in reports)},"
        f" left sending {sum(r.left_sending for r in reports)}, integrity {integrity},"
        f" rounds failed {len(failed)}, {time.monotonic() - started:.0f}s"
    )
    return 1 if failed or lost or duplicates else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--kills", type=int, default=5, help="mid-run kills per round")
    parser.add_argument("--pauses", type=int, default=5, help="mid-run pauses per round")
    parser.add_argument("--contacts", type=int, default=300)
    parser.add_argument("--seed", type=int, default=None, help="first round's seed")
    parser.add_argument("--keep", action="store_true", help="keep each round's store")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite",
                        help="postgres: a throwaway cluster (or PG_TEST_URL)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.kills < 0 or args.pauses < 0 or args.contacts < 1:
        parser.error("--rounds and --contacts must be at least 1, --kills and --pauses at"
                     " least 0")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    # A client killed in the middle of STARTTLS makes aiosmtpd log a traceback: expected here.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    if args.backend == "sqlite":
        return asyncio.run(soak(args.rounds, args.kills, args.pauses, args.contacts, seed,
                                args.keep))
    with cluster() as server:
        if server is None:
            parser.error("no PostgreSQL: install Debian's postgresql or set PG_TEST_URL")
        return asyncio.run(soak(args.rounds, args.kills, args.pauses, args.contacts, seed,
                                args.keep, server))


if __name__ == "__main__":
    sys.exit(main())
