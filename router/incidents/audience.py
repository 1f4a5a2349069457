"""Who an incident has reached, and on which channel each of them was last reached.

An update and the all-clear go to exactly those the incident reached (a message that may
have arrived counts), each on the channel that last worked for them first: a delivery
taken there, or an acknowledgement sent from there, whichever is latest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from config.contacts import Contact
from router.sending.outbox import contact_from_json
from router.store.incidents import Acknowledgement, Trace

TAKEN = ("accepted", "delivered", "acknowledged")


def last_worked(traces: Sequence[Trace], acks: Sequence[Acknowledgement]) -> dict[str, str]:
    """Contact -> the channel that last worked for them in this incident."""
    latest: dict[str, tuple[float, str]] = {}

    def saw(contact: str, at: float, channel: str) -> None:
        if contact not in latest or at >= latest[contact][0]:
            latest[contact] = (at, channel)

    for trace in traces:
        if trace.status in TAKEN and trace.channel:
            saw(trace.contact, trace.sent_at, trace.channel)
    for ack in acks:
        saw(ack.contact, ack.at, ack.channel)
    return {contact: channel for contact, (_, channel) in latest.items()}


def reached(
    traces: Sequence[Trace],
    acks: Sequence[Acknowledgement],
    book: Mapping[str, Contact],
    ranking: Sequence[str],
) -> list[Contact]:
    """Everyone the incident reached, in the order it first went to them, each with the
    channel that last worked for them ranked first (the rest of their order kept)."""
    recorded: dict[str, str] = {}
    for trace in traces:
        if trace.reached:
            recorded[trace.contact] = trace.addresses_json
    channels = last_worked(traces, acks)
    people = []
    for name, addresses in recorded.items():
        # The book as it is now; a contact removed since is reached where it was.
        contact = book.get(name) or contact_from_json(name, addresses)
        base = contact.order if contact.order is not None else tuple(ranking)
        first = channels.get(name)
        if first is not None and first in base:
            contact = dataclasses.replace(
                contact, order=(first, *(channel for channel in base if channel != first)))
        people.append(contact)
    return people
