"""Who may send: owner identity, liveness, heartbeats, leases and fences.

A message being sent belongs to one process (its owner), which renews a heartbeat
while it works; a queued delivery belongs to the worker holding its lease. A second
run of the same idempotency key attaches to a live owner and waits; work whose owner
died or stalled is taken over (``backchannel resume``, a long-running router, another
worker), and every take-over raises the work's epoch.

Why nothing is ever sent twice on one channel, even across pauses (SIGSTOP, a laptop
lid, a VM pause) as across crashes:

1. An attempt row is started only while the starter's epoch is current: a
   compare-and-set in the same transaction as the insert (:class:`router.store.base.Fence`).
   A process that lost the work to a take-over cannot start a new attempt.
2. The provider is called only after that row is committed, and only if the process's
   own lease, measured on a clock that keeps counting while the machine sleeps
   (``CLOCK_BOOTTIME``), has not run out. A process renews its hold every sixth of the
   lease and trusts it for two thirds of the lease after the last renewal it issued; a
   taker needs a whole lease of silence (by the wall clock the heartbeat was written
   with), so a stalled owner stops calling providers before anyone can take its work, with
   a third of the lease to spare for clock skew between hosts.
3. A pause can still fall between the check and the request leaving this machine. The
   taker then finds that attempt ``sending``: in doubt, never resent on its channel. The
   stalled process may still send it when it wakes up, but it is the one request the
   taker will never make.
Finishing an attempt that was already started is always recorded, whoever owns the
work now: it is the truth about a request that was made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from router.model.tasks import cancel
from router.store.base import Fence, Store

log = logging.getLogger("backchannel.ownership")
LEASE = 15.0
"""Default seconds of silence after which a message's owner counts as gone."""
_SAFETY = 1 / 3
"""Share of the lease an owner gives up for clock skew and scheduling delays."""


class LostOwnership(Exception):
    """Another process took this work over: stop, and leave it to the new owner."""


def boot_clock() -> float:
    """Seconds on a clock that keeps counting while the machine is suspended."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:  # not Linux: the best this platform offers
        return time.monotonic()
    return time.clock_gettime(boottime)


def _read(path: str) -> str:
    with contextlib.suppress(OSError):
        return Path(path).read_text(encoding="ascii", errors="replace").strip()
    return ""


def _namespace() -> str:
    """This process's PID namespace: PID 1 in one container is not PID 1 in another."""
    with contextlib.suppress(OSError):
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    return "-"


_HOST = socket.gethostname().replace(":", "_")
_BOOT = (_read("/proc/sys/kernel/random/boot_id") or "-")[:8]


def new_owner() -> str:
    """host:boot:pid-namespace:pid:token. The token alone makes it unique; the rest lets a
    process on the same host, boot and namespace find a dead owner without waiting."""
    return f"{_HOST}:{_BOOT}:{_namespace()}:{os.getpid()}:{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class Liveness:
    """Whether the owner of some work still runs it, judged the same way on every
    backend: by its heartbeat, or at once when it is visibly dead on this machine."""

    me: str
    lease: float

    def __call__(self, owner: str | None, heartbeat_at: float | None) -> bool:
        if owner is None:
            return False
        if owner == self.me:
            return True
        if self._dead_here(owner):
            return False
        return heartbeat_at is not None and time.time() - heartbeat_at < self.lease

    def _dead_here(self, owner: str) -> bool:
        host, boot, namespace, pid, *_ = [*owner.split(":"), "", "", "", "", ""]
        mine = self.me.split(":")
        if [host, boot, namespace] != mine[:3] or not pid.isdigit():
            return False  # another machine, boot or container: only the heartbeat can tell
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False  # a live process with that PID: perhaps it, perhaps a reused PID


class Holds:
    """What this process holds (messages it owns, deliveries it leased) and since when,
    on the boot clock. ``fence`` gives what the store checks; ``holds`` what this
    process checks before every provider call."""

    def __init__(self, owner: str, lease: float) -> None:
        self.owner = owner
        self.lease = lease
        self._held: dict[object, tuple[Fence, float]] = {}

    def take(self, key: object, fence: Fence, *, at: float | None = None) -> None:
        self._held[key] = (fence, boot_clock() if at is None else at)

    def renewed(self, keys: set[object], *, issued_at: float) -> None:
        """A renewal issued at ``issued_at`` (boot clock) confirmed ``keys``; the rest of
        what was renewed is lost."""
        for key in keys:
            if key in self._held:
                self._held[key] = (self._held[key][0], issued_at)

    def lose(self, key: object) -> None:
        if key in self._held:
            log.warning("%s: another process took this work over; leaving it to them", key)
            self._held.pop(key, None)

    def drop(self, key: object) -> None:
        self._held.pop(key, None)

    def held(self) -> list[object]:
        return list(self._held)

    def fence(self, key: object) -> Fence | None:
        held = self._held.get(key)
        return None if held is None else held[0]

    def holds(self, key: object) -> bool:
        held = self._held.get(key)
        return held is not None and boot_clock() - held[1] < self.lease * (1 - _SAFETY)


@dataclass(frozen=True, slots=True)
class Claimed:
    """One piece of work as its holder sends it: the fence the store checks when an
    attempt starts, the check this process makes before every provider call, and a way
    to renew its hold when that check fails (a pause too short for a take-over)."""

    fence: Fence
    holds: Callable[[], bool]
    renew: Callable[[], Awaitable[bool]]

    @classmethod
    def while_waiting(cls, contact: str) -> Claimed:
        """An escalation step: the compare-and-set on the due delivery made it this
        process's; the store lets it start attempts only while the delivery still waits."""
        async def nothing_to_renew() -> bool:
            return True

        return cls(Fence.while_waiting(contact), lambda: True, nothing_to_renew)

    async def confirm(self) -> None:
        """Return if this process may call a provider now; else raise LostOwnership.

        A lapsed hold is renewed if nobody took the work over (the renewal only succeeds
        while this process is still the owner, and a taker needs a stale heartbeat)."""
        if self.holds() or await self.renew():
            return
        raise LostOwnership(f"another process took the work over (epoch {self.fence.epoch})")


class Heartbeat:
    """Renews this process's claim on the messages it is working on."""

    def __init__(self, store: Store, owner: str, *, lease: float = LEASE) -> None:
        self._store = store
        self.owner = owner
        self.lease = lease
        self.liveness = Liveness(owner, lease)
        self.messages = Holds(owner, lease)
        self._task: asyncio.Task[None] | None = None

    def hold(self, message_id: str, epoch: int) -> Claimed:
        """This process now owns ``message_id`` at ``epoch`` (it just claimed it)."""
        self.messages.take(message_id, Fence(self.owner, epoch))
        return Claimed(Fence(self.owner, epoch), lambda: self.messages.holds(message_id),
                       lambda: self._renew([message_id]))

    def release(self, message_id: str) -> None:
        self.messages.drop(message_id)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="backchannel-heartbeat")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel([task])

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 6)
            held = [str(key) for key in self.messages.held()]
            if held:
                await self._renew(held)

    async def _renew(self, held: list[str]) -> bool:
        """Renew these holds; True if every one of them is still ours."""
        issued = boot_clock()
        try:
            owned = await self._store.heartbeat(held, owner=self.owner, at=time.time())
        except Exception:  # a busy store: try again next beat; the hold runs out if not
            log.warning("heartbeat failed; retrying", exc_info=True)
            return False
        self.messages.renewed(set(owned), issued_at=issued)
        for message_id in set(held) - owned:
            self.messages.lose(message_id)
        return owned >= set(held)
