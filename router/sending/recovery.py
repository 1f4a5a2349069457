"""After a crash or a take-over: what did the attempts left ``sending`` do?

Only an unambiguous answer from the provider counts (design notes, section 5);
everything else is settled as maybe sent, and never resent on its channel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from router.model.channel import Channel, Reconciling
from router.model.clock import Clock
from router.model.message import Message
from router.model.outcome import Outcome
from router.store.base import Store, StoredAttempt

RIVAL_WINDOW = 120.0
"""Seconds before an in-doubt attempt in which another one to the same address could still
have created the message found at the provider (a request stalls up to its read timeout)."""
IN_DOUBT = "in doubt: the process stopped before the provider's answer was recorded"


class Recovery:
    """Settles a dead or stalled process's in-doubt attempts, one message at a time."""

    def __init__(self, *, store: Store, channels: Mapping[str, Channel], clock: Clock) -> None:
        self._store = store
        self._channels = channels
        self._clock = clock

    async def settle(self, rows: Sequence[StoredAttempt], message: Message) -> None:
        """Ask the provider about each attempt left ``sending``, else settle it as maybe
        sent; one the provider has settles its delivery too, if that is still pending."""
        claimed: set[str] = set()
        deliveries: dict[str, tuple[bool, str | None]] = {}
        for row in rows:
            if row.state != "sending":
                continue
            if row.contact not in deliveries:
                loaded = await self._store.load_delivery(row.message_id, row.contact)
                delivery = None if loaded is None else loaded[1]
                deliveries[row.contact] = (
                    delivery is not None and delivery.status == "pending",
                    None if delivery is None else delivery.ack_code,
                )
            pending, ack_code = deliveries[row.contact]
            outcome = await self._reconcile(row, message, ack_code, claimed)
            delivered = outcome.ok and pending
            await self._store.finish_attempt(
                row.attempt_id, outcome, self._clock.time(),
                delivery_status="accepted" if delivered else None,
                delivery_channel=row.channel if delivered else None,
            )
            if outcome.provider_id:
                claimed.add(outcome.provider_id)

    async def _reconcile(
        self, row: StoredAttempt, message: Message, ack_code: str | None, claimed: set[str]
    ) -> Outcome:
        """Ask the provider what an in-doubt attempt did. Only an unambiguous answer counts:
        exactly one message with this attempt's words, from its sender to its address,
        created since it began, that no other attempt owns or could have made (another
        attempt to that address still in doubt could be its author: then nobody claims it).
        A call cannot be matched (the provider does not return what it spoke), nor a
        template the provider rendered. Anything else stays in doubt, until a status
        callback that names the attempt settles it: a duplicate on the next channel beats
        silence, and one message's request must never be credited to another."""
        channel = (self._channels.get(f"{row.channel}.{row.provider}")
                   or self._channels.get(row.channel))
        if not isinstance(channel, Reconciling):
            return Outcome.unknown(f"{IN_DOUBT}; the provider cannot say which request it was")
        words = dataclasses.replace(message.render(row.channel), ack_code=ack_code)
        candidates = await channel.reconcile(row.address, words, since=row.started_at)
        if candidates is None:
            return Outcome.unknown(f"{IN_DOUBT}; the provider could not tell")
        rivals = await self._store.unsettled_attempts(
            row.channel, row.address, since=row.started_at - RIVAL_WINDOW, besides=row.attempt_id
        )
        if candidates and rivals:
            return Outcome.unknown(f"{IN_DOUBT}; {len(rivals)} other request(s) to this address"
                                   " are in doubt too: the match would be a guess")
        unowned = [
            sid for sid in candidates
            if sid not in claimed and await self._store.attempt_by_provider_id(sid) is None
        ]
        if len(unowned) == 1:
            return Outcome.accepted(unowned[0], detail="found at the provider after the "
                                    "interruption")
        if unowned:
            return Outcome.unknown(f"{IN_DOUBT}; {len(unowned)} possible matches at the provider")
        return Outcome.unknown(f"{IN_DOUBT}; not found at the provider")
