"""What the store recorded, as the results a run returns; for a large audience, read back
page by page each time they are iterated instead of held."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from router.model.outcome import Outcome, Scope, Verdict
from router.model.results import (
    Attempt,
    AttemptKind,
    BroadcastResult,
    DeliveryResult,
    Skip,
    Status,
)
from router.store.base import StoredAttempt, StoredMessage
from router.store.sql import Engine, Row

PAGE = 500
REACHED = ("accepted", "delivered", "acknowledged")
ATTEMPT_COLUMNS = (
    "id, message_id, contact, channel, address, kind, state, verdict, scope, detail, provider_id,"
    " retry_after, started_at, finished_at, round, receipt, provider"
)


def stored_attempt(row: StoredAttempt) -> Attempt:
    """An attempt as recorded; one left ``sending`` reads as in doubt."""
    if row.state == "sending" or row.verdict is None:
        outcome = Outcome.unknown("in doubt: the process stopped before the answer was recorded")
    else:
        outcome = Outcome(
            Verdict(row.verdict), Scope(row.scope or Scope.CHANNEL.value), row.detail or "",
            row.provider_id, row.retry_after,
            (row.finished_at or row.started_at) - row.started_at,
        )
    return Attempt(row.attempt_id, row.channel, outcome, row.started_at, AttemptKind(row.kind),
                   row.provider)


def attempts_by_contact(stored: StoredMessage) -> dict[str, list[Attempt]]:
    found: dict[str, list[Attempt]] = {d.contact: [] for d in stored.deliveries}
    for row in stored.attempts:
        found.setdefault(row.contact, []).append(stored_attempt(row))
    return found


def delivery_result(
    message_id: str, contact: str, status: str, channel: str | None,
    attempts: Sequence[Attempt], notes: str | None,
) -> DeliveryResult:
    """One contact's result as recorded; still pending reads as unknown (in doubt)."""
    extra = json.loads(notes) if notes else {}
    return DeliveryResult(
        message_id, contact, Status.UNKNOWN if status == "pending" else Status(status), channel,
        tuple(attempts),
        tuple(Skip(s["channel"], s["reason"], s.get("after", 0), s.get("provider"))
              for s in extra.get("skipped", ())),
        tuple(extra.get("notes", ())),
    )


def notes_json(result: DeliveryResult) -> str | None:
    """What a result says beyond its attempts (skipped channels, notes), to record with it."""
    if not result.skipped and not result.notes:
        return None
    return json.dumps({
        "skipped": [{"channel": s.channel, "reason": s.reason, "after": s.after_attempts,
                     "provider": s.provider} for s in result.skipped],
        "notes": list(result.notes),
    }, ensure_ascii=False)


def recorded_results(stored: StoredMessage) -> BroadcastResult:
    """The results a finished run recorded, as that run returned them."""
    attempts = attempts_by_contact(stored)
    return BroadcastResult(stored.record.message_id, tuple(
        delivery_result(stored.record.message_id, d.contact, d.status, d.channel,
                        attempts.get(d.contact, ()), d.notes)
        for d in stored.deliveries
    ))


class StoredResults:
    """A message's per-contact results in the store, read a page at a time on each
    iteration: iterating 100,000 results holds one page of them."""

    def __init__(self, engine: Engine, message_id: str) -> None:
        self._engine = engine
        self._message_id = message_id
        self._count: int | None = None

    def __len__(self) -> int:
        if self._count is None:
            [(count,)] = self._engine.read_sync(
                "SELECT COUNT(*) FROM deliveries WHERE message_id = ?", self._message_id
            )
            self._count = int(count)
        return self._count

    def unreached(self) -> int:
        [(count,)] = self._engine.read_sync(
            "SELECT COUNT(*) FROM deliveries WHERE message_id = ?"
            " AND status NOT IN ('accepted', 'delivered', 'acknowledged')", self._message_id,
        )
        return int(count)

    def __iter__(self) -> Iterator[DeliveryResult]:
        after = -1
        while True:
            page = self._engine.read_sync(
                "SELECT contact, position, status, channel, notes FROM deliveries"
                " WHERE message_id = ? AND position > ? ORDER BY position LIMIT ?",
                self._message_id, after, PAGE,
            )
            if not page:
                return
            attempts = self._attempts([str(row[0]) for row in page])
            for contact, _, status, channel, notes in page:
                yield delivery_result(self._message_id, str(contact), str(status), channel,
                                      attempts.get(str(contact), ()), notes)
            after = int(page[-1][1])

    def _attempts(self, contacts: list[str]) -> dict[str, list[Attempt]]:
        marks = ", ".join("?" for _ in contacts)
        rows: list[Row] = self._engine.read_sync(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE message_id = ?"  # noqa: S608
            f" AND contact IN ({marks}) ORDER BY started_at, id", self._message_id, *contacts,
        )
        found: dict[str, list[Attempt]] = {}
        for row in rows:
            attempt = stored_attempt(StoredAttempt(*row))
            found.setdefault(str(row[2]), []).append(attempt)
        return found
