"""What the store recorded, back into results and messages; and named leases.

Ownership of running work (heartbeats, fences, take-overs) is in
:mod:`router.sending.ownership`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

from config.contacts import Contact
from router.model.message import Message
from router.store.base import Store


def contact_json(contact: Contact) -> str:
    """The contact as recorded with a delivery: where this message was meant to go."""
    return json.dumps(
        {"addresses": dict(contact.addresses), "order": contact.order}, sort_keys=True
    )


def contact_from_json(name: str, text: str) -> Contact:
    data = json.loads(text)
    order = tuple(data["order"]) if data.get("order") is not None else None
    return Contact(name=name, addresses=data["addresses"], order=order)


def message_from_json(text: str) -> Message:
    data = json.loads(text)
    data.pop("until", None)  # recorded with the words, for the idempotency fingerprint
    return Message(**data)


def named_lease(store: Store, name: str, owner: str) -> Callable[[float], Awaitable[bool]]:
    """A job only one instance on this store should do at a time (polling, probing)."""
    async def hold(seconds: float) -> bool:
        now = time.time()
        return await store.try_lease(name, owner, now=now, until=now + seconds)

    return hold
