"""Pauses for the crash run: a process stopped (SIGSTOP) mid-run and woken (SIGCONT).

A laptop lid, Ctrl-Z or a paused VM stops a sender without killing it. Some pauses
here are shorter than the lease (the process must carry on as if nothing happened);
the others are longer, and while the process sleeps a ``backchannel resume`` takes its
work over (and is itself killed at a random moment mid-run, as in the rest of the
run). When the first process wakes it must start nothing more: the checks of
:mod:`bench.crash` then find nothing sent twice on one channel and every request a
peer took matched to exactly one attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bench.crash_io import PROCESS_LIMIT, StoreRef, command, query

LEASE = 2.0
"""The crash runs' ``[store] lease``: pauses longer than this invite a take-over."""


@dataclass(slots=True)
class Pause:
    """One pause of one process, and what happened while it slept."""

    seconds: float
    over_lease: bool
    taken_over: bool = False
    """A resume took the work over while it slept."""
    woke_status: int | None = None

    def line(self) -> str:
        over = "over the lease" if self.over_lease else "under the lease"
        taken = ", taken over meanwhile" if self.taken_over else ""
        return f"paused {self.seconds:.1f}s ({over}{taken}), then exit {self.woke_status}"


async def stop_between_writes(process: asyncio.subprocess.Process, store: StoreRef) -> bool:
    """SIGSTOP ``process`` at a moment when it holds no SQLite write lock.

    A process paused inside a write transaction holds the file's write lock until it
    wakes (that is SQLite: everyone else waits, then gets a clear 'locked' error). What
    these pauses test is what the sleeper does when it wakes, so the pause must land
    between writes; False if the process ended first.
    """
    for _ in range(200):
        if process.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGSTOP)
        if store.postgres:
            return True  # no file-wide lock: the server ends a session idle in a transaction
        probe = sqlite3.connect(store.path, timeout=0.1, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.01)
        finally:
            probe.close()
    return False


def heartbeat_age(store: StoreRef) -> float | None:
    """Seconds since the current message's owner last renewed its heartbeat."""
    rows = query(store, "SELECT owner, heartbeat_at FROM messages ORDER BY created_at DESC")
    row = rows[0] if rows else None
    if row is None or row[0] is None or row[1] is None:
        return None
    return time.time() - float(row[1])


async def until_stale(store: StoreRef, limit: float = PROCESS_LIMIT) -> None:
    """Wait until the sleeping owner's heartbeat is older than the lease."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        age = heartbeat_age(store)
        if age is None or age > LEASE:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the paused owner's heartbeat never went stale")


def pause_length(rng: random.Random) -> tuple[float, bool]:
    """Half under the lease (a hiccup), half over it (a real stall)."""
    if rng.random() < 0.5:
        return rng.uniform(0.1, LEASE * 0.6), False
    return rng.uniform(LEASE * 1.1, LEASE * 2.5), True


async def spawn(args: list[str], workdir: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command(), *args, cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
