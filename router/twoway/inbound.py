"""What comes back: delivery receipts, replies, acknowledgements and opt-outs.

Every entry point here has already been authenticated by its caller (the
webhook server checks signatures; the pollers asked the provider themselves).
Each provider event is recorded once, by its own id, so a replay changes
nothing; a receipt only ever moves an attempt forward; an acknowledgement is
taken only from the contact's own address on that channel, and stops every
pending escalation for that contact.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable

from config.contacts import Contact
from config.twoway import EscalationSettings
from router.model.clock import Clock
from router.model.ids import new_id
from router.model.inbound import (
    ButtonPressed,
    Incoming,
    KeyPressed,
    OptedOut,
    ReceiptEvent,
    ReceiptState,
    Reply,
    ReplyKind,
    TextReceived,
)
from router.model.text import valid_unicode
from router.rules.routing import Routing
from router.sending.escalation import Escalator
from router.store.base import InboundEvent, Store

log = logging.getLogger("backchannel.inbound")
_CODE = re.compile(r"\b\d{4}\b")
_ALONE = re.compile(r"[\W_]*(\w+)[\W_]*")
"""One word, with any spaces and punctuation around it."""


ReplyHook = Callable[[Reply], None]


class Inbound:
    """Applies what providers and people send back."""

    def __init__(
        self,
        *,
        store: Store,
        book: Callable[[], Iterable[Contact]],
        settings: EscalationSettings,
        escalator: Escalator,
        routing: Routing,
        clock: Clock,
    ) -> None:
        self._store = store
        self._settings = settings
        self._escalator = escalator
        self._routing = routing
        self._clock = clock
        self._book = book
        self._index: dict[tuple[str, str], list[str]] | None = None
        self.listeners: list[asyncio.Queue[Reply]] = []
        self.hooks: list[ReplyHook] = []

    async def _who(self, channel: str, address: str) -> list[str]:
        """Who has this address on this channel: the index is built at the first reply, not
        at start (a one-shot broadcast never needs it), in a thread (the book may be files
        of a million lines)."""
        if self._index is None:
            self._index = await asyncio.to_thread(self._build_index)
        return self._index.get((channel, address), [])

    def _build_index(self) -> dict[tuple[str, str], list[str]]:
        index: dict[tuple[str, str], list[str]] = {}
        for contact in self._book():
            for channel, address in contact.addresses.items():
                index.setdefault((channel, address), []).append(contact.name)
        return index

    async def apply(self, event: Incoming) -> Reply | None:
        """The one entry for what providers hand back, already authenticated and parsed.

        Returns the Reply for what a person did; None for a receipt or a replay.
        """
        dedupe = event.dedupe_key
        match event:
            case ReceiptEvent():
                await self.receipt(event.provider_id, event.state, attempt_id=event.attempt_id,
                                   dedupe_key=dedupe)
                return None
            case TextReceived():
                return await self.text(event.channel, event.address, event.text,
                                       event.external_id, dedupe_key=dedupe)
            case KeyPressed():
                return await self.keypress(event.channel, event.provider_id, event.address,
                                           event.digits, event.external_id, dedupe_key=dedupe)
            case ButtonPressed():
                return await self.button(event.channel, event.address, event.data,
                                         event.external_id, dedupe_key=dedupe)
            case OptedOut():
                return await self._record(event.channel, event.address, event.text,
                                          event.external_id, "opt_out", None,
                                          dedupe_key=dedupe)

    # -- receipts ------------------------------------------------------------------------

    async def receipt(
        self, provider_id: str, state: ReceiptState, *, attempt_id: str | None = None,
        dedupe_key: str | None = None,
    ) -> bool:
        """A provider status for one of our requests; True if it changed anything.

        The status and what it settles (a delivered receipt ends the wait, a failed one
        makes the delivery due for escalation now) are one transaction: a crash leaves
        both or neither, and the provider's retry then applies it.
        """
        receipt = await self._store.record_receipt(
            provider_id, state, self._clock.time(), attempt_id=attempt_id, dedupe_key=dedupe_key
        )
        if receipt is not None and receipt.awaited and receipt.state is ReceiptState.FAILED:
            log.info("%s: %s receipt failed: escalating", receipt.contact, receipt.channel)
        return receipt is not None

    # -- people --------------------------------------------------------------------------

    async def text(self, channel: str, address: str, text: str, external_id: str, *,
                   dedupe_key: str | None = None) -> Reply | None:
        """A text from ``address`` on ``channel``: an opt-out, an acknowledgement or a reply.

        Returns None for a replay (already recorded).
        """
        words = text.strip().split()
        # "/stop", "OK," and "Ok!" count: people type on phones in a hurry.
        first = re.sub(r"\W", "", words[0]).upper() if words else ""
        # Carriers' opt-out keywords apply to a message that is the keyword alone: "Stop
        # the failover, I'm on it. 3898" is an answer (with its code), not an opt-out.
        alone = _ALONE.fullmatch(text)
        if alone is not None and alone.group(1).upper() in self._settings.opt_out_words:
            return await self._record(channel, address, text, external_id, "opt_out", None,
                                      dedupe_key=dedupe_key)
        contacts = await self._who(channel, address)
        for contact in contacts:
            waiting = await self._store.waiting_for_ack(contact)
            codes = set(_CODE.findall(text))
            matched = next((m for m, code in waiting if code and code in codes), None)
            if matched is None and first in self._settings.ack_words and waiting:
                matched = waiting[0][0]
            if matched is not None:
                return await self._record(channel, address, text, external_id, "ack", matched,
                                          contact, dedupe_key=dedupe_key)
        return await self._record(channel, address, text, external_id, "reply", None,
                                  dedupe_key=dedupe_key)

    async def keypress(
        self, channel: str, call_id: str, callee: str, digits: str, external_id: str, *,
        dedupe_key: str | None = None,
    ) -> Reply | None:
        """A digit pressed during one of our calls; 1 acknowledges."""
        attempt = await self._store.attempt_by_provider_id(call_id)
        if attempt is None or attempt.address != callee:
            return None
        if digits != "1":
            return await self._record(channel, callee, digits, external_id, "reply", None,
                                      attempt.contact, dedupe_key=dedupe_key)
        return await self._record(channel, callee, digits, external_id, "ack",
                                  attempt.message_id, attempt.contact, dedupe_key=dedupe_key)

    async def button(self, channel: str, address: str, data: str, external_id: str, *,
                     dedupe_key: str | None = None) -> Reply | None:
        """A button under one of our messages (``ack:<code>``)."""
        code = data.removeprefix("ack:")
        for contact in await self._who(channel, address):
            waiting = await self._store.waiting_for_ack(contact)
            matched = next((m for m, c in waiting if c == code), None)
            if matched is not None:
                return await self._record(channel, address, "[Acknowledge]", external_id,
                                          "ack", matched, contact, dedupe_key=dedupe_key)
        return await self._record(channel, address, data, external_id, "reply", None,
                                  dedupe_key=dedupe_key)

    async def _record(
        self, channel: str, address: str, text: str, external_id: str, kind: ReplyKind,
        message_id: str | None, contact: str | None = None, *, dedupe_key: str | None = None,
    ) -> Reply | None:
        """Record the event and its effect (an acknowledgement, an opt-out) in one
        transaction: a crash leaves both or neither, and the provider's retry applies it."""
        now = self._clock.time()
        # What a person typed, as the provider passed it on: a lone surrogate in a JSON
        # escape could not be stored (nor printed) otherwise.
        text, address = valid_unicode(text), valid_unicode(address)
        names = [contact] if contact else await self._who(channel, address)
        event = InboundEvent(new_id("in"), channel, external_id, address,
                             names[0] if names else None, kind, text, message_id, now)
        ended = await self._store.record_reply(
            event, dedupe_key=dedupe_key, opted_out=names if kind == "opt_out" else ()
        )
        if ended is None:
            return None  # a replay: it already had its effect
        if kind == "ack" and event.contact is not None:
            log.info("%s acknowledged on %s: %d escalation(s) stopped", event.contact, channel,
                     len(ended))
        elif kind == "opt_out":
            for name in names:
                self._routing.opt_out(name, channel)
            log.info("%s opted out of %s", ", ".join(names) or "an unknown sender", channel)
        reply = Reply(channel, event.contact, address, text, kind, message_id, now)
        for queue in self.listeners:
            queue.put_nowait(reply)
        for hook in self.hooks:
            try:
                hook(reply)
            except Exception:  # a user's hook must not lose the next reply
                log.exception("reply hook raised")
        return reply
