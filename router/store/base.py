"""The store protocol and the records that cross it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from router.model.health import Breaker
from router.model.inbound import ReceiptState
from router.model.outcome import Outcome
from router.model.results import ResultSource


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message as recorded before anything is sent."""

    message_id: str
    body_json: str
    audience_json: str
    fingerprint: str
    """Hash of body and audience: the same idempotency key must mean the same request."""
    created_at: float
    idempotency_key: str | None = None
    expires_at: float | None = None
    goal: str = "accepted"
    """How far each delivery must get: accepted, delivered or acknowledged."""
    incident_id: str | None = None
    """The incident this message is sent for, if any."""
    incident_entry: str | None = None
    """The entry of that incident's timeline it carries (the opening, an update...)."""


@dataclass(frozen=True, slots=True)
class AttemptStart:
    """An attempt about to be made: recorded durably before the provider call."""

    attempt_id: str
    message_id: str
    contact: str
    channel: str
    address: str
    kind: str
    started_at: float
    round: int = 0
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """What this process should do with a message it asked to run."""

    message_id: str
    action: Literal["new", "record", "resume", "attach", "done"]
    """new: just recorded; record: its recorder died before the whole audience was on
    disk (nothing was sent), now ours to finish recording; resume: interrupted, now ours;
    attach: another live process is running it; done: finished earlier (an idempotent
    repeat)."""
    epoch: int = 0
    """For new and resume: this process's epoch as the message's owner."""


@dataclass(frozen=True, slots=True)
class Fence:
    """Who may start attempts, and at which epoch: the owner of a message (a run), or,
    with ``contact``, the lease holder of that one delivery (a worker). Every take-over
    raises the epoch, so a paused process's old fence no longer matches."""

    owner: str
    epoch: int
    contact: str | None = None
    waiting: bool = False
    """An escalation step's fence (for ``contact``, with no owner or epoch): it starts an
    attempt only while the delivery still waits (nobody acknowledged meanwhile, and its
    incident was not resolved)."""

    @classmethod
    def while_waiting(cls, contact: str) -> Fence:
        return cls("", 0, contact, waiting=True)


class StoreFailure(Exception):
    """The store could not record something: a full disk, an I/O error, a damaged file, a
    lost database connection. Nothing that needed the write went ahead (no provider is
    called before its attempt is durable); what was written before stands."""

    def __init__(self, reason: str, *, requests_made: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.requests_made = requests_made
        """Provider calls this run had made before the store failed."""

    def after(self, requests_made: int) -> StoreFailure:
        return StoreFailure(self.reason, requests_made=requests_made)


class StoreTooNew(StoreFailure):
    """The store was written by a newer backchannel: this one refuses to touch it."""


class KeyConflict(Exception):
    """An idempotency key reused for a different message or audience."""


@dataclass(frozen=True, slots=True)
class StoredAttempt:
    attempt_id: str
    message_id: str
    contact: str
    channel: str
    address: str
    kind: str
    state: str
    """``sending`` (in doubt until settled) or ``done``."""
    verdict: str | None
    scope: str | None
    detail: str | None
    provider_id: str | None
    retry_after: float | None
    started_at: float
    finished_at: float | None
    round: int = 0
    receipt: str | None = None
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class DeliverySeed:
    """One contact of a new message, as recorded before anything is sent."""

    contact: str
    addresses_json: str
    ack_code: str | None = None


@dataclass(frozen=True, slots=True)
class StoredDelivery:
    contact: str
    position: int
    addresses_json: str
    """The contact as it was when the message was recorded: a resume goes where the
    message was meant to go, even if the contact book changed since."""
    status: str
    channel: str | None
    goal: str = "accepted"
    done: bool = False
    round: int = 0
    ack_code: str | None = None
    waiting_for: str | None = None
    waiting_attempt: str | None = None
    next_action_at: float | None = None
    notes: str | None = None
    """What the result said beyond its attempts (JSON: skipped channels, notes)."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message with every delivery and attempt, as recorded."""

    record: MessageRecord
    state: str
    owner: str | None
    heartbeat_at: float | None
    deliveries: tuple[StoredDelivery, ...]
    attempts: tuple[StoredAttempt, ...]
    stopped_at: float | None = None
    """When the message was stopped (its incident resolved): nothing more is sent."""


class OwnerCheck(Protocol):
    def __call__(self, owner: str | None, heartbeat_at: float | None) -> bool:
        """Whether the process that owns a pending message is still running it."""
        ...


@dataclass(frozen=True, slots=True)
class Receipt:
    """A provider status that moved an attempt forward."""

    attempt_id: str
    message_id: str
    contact: str
    channel: str
    state: ReceiptState
    goal: str
    awaited: bool
    """The delivery was waiting on this very attempt."""


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """Something a person sent back: a reply, an acknowledgement, an opt-out."""

    event_id: str
    channel: str
    external_id: str
    """The provider's id (a message or update id): a replay is recognised by it."""
    address: str
    contact: str | None
    kind: str
    """reply, ack or opt_out."""
    text: str
    message_id: str | None
    received_at: float


class Store(Protocol):
    @property
    def dialect(self) -> Literal["sqlite", "postgres"]:
        """Which engine: several instances share rate limits only on PostgreSQL."""
        ...

    @property
    def ordered_writes(self) -> bool:
        """Every write is durable in the order it was issued (one writer): a write need
        not be awaited for a later one to follow it."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def wake_workers(self) -> None:
        """Tell idle workers that work was queued."""
        ...

    async def on_work(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever another process queues work, where the engine can."""
        ...

    async def begin_attempt(
        self, attempt: AttemptStart, fence: Fence | None = None
    ) -> bool:
        """Durable before returning: after a crash, this attempt is known to be in doubt.

        With a ``fence``, the row is written only if that fence is still current (in the
        same transaction) and the message was not stopped; False means ownership was lost
        (or the work stopped) and nothing was written.
        """
        ...

    async def finish_attempt(
        self,
        attempt_id: str,
        outcome: Outcome,
        finished_at: float,
        *,
        delivery_status: str | None = None,
        delivery_channel: str | None = None,
    ) -> None:
        """Record what the attempt came to; optionally settle its delivery in the same commit."""
        ...

    async def finish_delivery(
        self, message_id: str, contact: str, status: str, channel: str | None, at: float
    ) -> None: ...

    async def claim_message(
        self,
        record: MessageRecord,
        contacts: Sequence[DeliverySeed],
        *,
        owner: str | None,
        owner_is_alive: OwnerCheck,
        state: str = "pending",
    ) -> Claim:
        """Record a new message, or find the earlier run of its idempotency key.

        ``state="queued"`` (and no owner) leaves the work to ``backchannel worker``.

        Raises :class:`KeyConflict` when the key was used for a different request.
        """
        ...

    # -- audiences of any size (see router.store.ops_audience) --------------------------

    async def begin_message(
        self, record: MessageRecord, *, owner: str, owner_is_alive: OwnerCheck,
    ) -> Claim:
        """Record a new message (its audience comes next), or find its key's earlier run."""
        ...

    async def record_deliveries(
        self, message_id: str, seeds: Sequence[DeliverySeed], *, first_position: int,
        at: float, goal: str, fence: Fence, fresh: bool,
    ) -> bool:
        """Add a batch of the audience while the recorder still owns it."""
        ...

    async def seal_message(self, message_id: str, *, fence: Fence, queued: bool) -> bool:
        """The whole audience is recorded: ``pending`` (sent by its recorder) or ``queued``."""
        ...

    async def pending_page(
        self, message_id: str, *, after: int, limit: int
    ) -> list[StoredDelivery]: ...

    async def attempts_of(
        self, message_id: str, contacts: Sequence[str]
    ) -> dict[str, list[StoredAttempt]]: ...

    async def in_doubt(self, message_id: str) -> list[StoredAttempt]: ...

    async def delivery_counts(self, message_id: str) -> dict[str, int]: ...

    async def count_deliveries(self, message_id: str) -> int: ...

    async def record_notes(self, message_id: str, contact: str, notes: str) -> None: ...

    async def load_message_record(
        self, message_id: str
    ) -> tuple[MessageRecord, str] | None: ...

    async def message_owner(
        self, message_id: str
    ) -> tuple[str, str | None, float | None] | None: ...

    def results_of(self, message_id: str) -> ResultSource:
        """A message's results, read from the store each time they are iterated."""
        ...

    async def take_over(
        self, message_id: str, *, owner: str, owner_is_alive: OwnerCheck
    ) -> int | None:
        """Become the owner of a pending message whose owner is gone: the new epoch."""
        ...

    async def heartbeat(self, message_ids: Sequence[str], *, owner: str, at: float) -> set[str]:
        """Renew this owner's claim; returns the messages it still owns."""
        ...

    async def finish_message(self, message_id: str, *, owner: str, at: float) -> None: ...

    async def settle_stopped(self, message_id: str, *, at: float) -> bool:
        """Whether the message was stopped (its incident resolved); then what it never sent
        expires."""
        ...

    async def load_message(self, message_id: str) -> StoredMessage | None: ...

    async def orphaned_messages(self, *, owner_is_alive: OwnerCheck) -> list[str]:
        """Pending messages whose owner is gone: work a crash interrupted."""
        ...

    async def history(
        self, *, message_id: str | None = None, contact: str | None = None, limit: int = 200
    ) -> list[StoredAttempt]:
        """Newest attempts first, optionally for one message and/or one contact."""
        ...

    async def message_ids_like(self, part: str, limit: int = 10) -> list[str]:
        """Ids of messages whose id is, starts with or ends with ``part``, newest first."""
        ...

    # -- the way back (receipts, acknowledgements, replies, escalation) ----------------

    async def wait_for(
        self, message_id: str, contact: str, *, waiting_for: str, attempt_id: str | None,
        at: float, round_: int | None = None,
    ) -> None: ...

    async def settle(
        self, message_id: str, contact: str, *, status: str | None, at: float
    ) -> None: ...

    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str, float]]: ...

    async def next_due(self) -> float | None: ...

    async def claim_due(self, message_id: str, contact: str, expected: float) -> bool: ...

    async def load_delivery(
        self, message_id: str, contact: str
    ) -> tuple[MessageRecord, StoredDelivery, list[StoredAttempt]] | None: ...

    async def record_receipt(
        self, provider_id: str, state: ReceiptState, at: float, *,
        attempt_id: str | None = None, dedupe_key: str | None = None,
    ) -> Receipt | None:
        """The status and what it settles, in one transaction (see SqlStore)."""
        ...

    async def record_reply(
        self, event: InboundEvent, *, dedupe_key: str | None = None,
        opted_out: Sequence[str] = (),
    ) -> list[tuple[str, str]] | None:
        """The event and its acknowledgement or opt-out, in one transaction; None: a replay."""
        ...

    async def acknowledge(self, contact: str, at: float) -> list[tuple[str, str]]: ...

    async def waiting_for_ack(self, contact: str) -> list[tuple[str, str | None]]: ...

    async def attempt_by_provider_id(self, provider_id: str) -> StoredAttempt | None: ...

    async def awaiting_receipts(self, limit: int = 200) -> list[StoredAttempt]: ...

    async def unsettled_attempts(
        self, channel: str, address: str, *, since: float, besides: str
    ) -> list[str]:
        """Attempts on ``channel`` to ``address`` begun since ``since`` whose fate is still
        unknown (left sending, or maybe sent with no provider id), other than ``besides``."""
        ...

    async def record_inbound(self, event: InboundEvent) -> bool: ...

    async def inbox(self, limit: int = 100) -> list[InboundEvent]: ...

    async def acknowledged_since(self, since: float) -> set[tuple[str, str]]: ...

    async def first_time(self, key: str, at: float) -> bool: ...

    async def opt_out(self, contact: str, channel: str, at: float) -> None: ...

    async def opt_outs(self) -> set[tuple[str, str]]: ...

    async def get_value(self, key: str) -> str | None: ...

    async def set_value(self, key: str, value: str) -> None: ...

    async def beat_instance(self, instance_id: str, kind: str, at: float) -> None: ...

    async def live_instances(self, kind: str, since: float) -> list[str]: ...

    # -- several instances (workers, shared rate limits, leases) -----------------------

    async def claim_work(
        self, worker: str, *, now: float, lease: float, limit: int
    ) -> list[tuple[str, str, int]]:
        """Lease pending deliveries of queued messages: (message, contact, lease epoch)."""
        ...

    async def renew_leases(
        self, worker: str, keys: Sequence[tuple[str, str]], *, until: float
    ) -> set[tuple[str, str]]:
        """Extend this worker's leases; returns the ones it still holds."""
        ...

    async def release(self, message_id: str, contact: str, worker: str, *, at: float) -> None: ...

    async def release_many(
        self, keys: Sequence[tuple[str, str]], worker: str, *, at: float
    ) -> None: ...

    async def queue_depth(self) -> int: ...

    async def reserve_rate(
        self, key: str, *, not_before: float, clock: Callable[[], float], interval: float,
        burst: int,
    ) -> float: ...

    async def reserve_rates(
        self, key: str, *, not_before: float, clock: Callable[[], float], interval: float,
        burst: int, count: int,
    ) -> list[float]: ...

    async def pause_rate(self, key: str, *, until: float) -> None: ...

    async def try_lease(self, name: str, owner: str, *, now: float, until: float) -> bool: ...

    async def release_leases(self, owner: str) -> None: ...

    async def load_health(self) -> list[Breaker]: ...

    async def save_health(self, breakers: Sequence[Breaker]) -> None:
        """Upsert; a row is only replaced by a newer one (``updated_at``)."""
        ...
