"""``reachability --send-test --ack-wait``: did a person answer each test, and where?

Each test message then asks for an acknowledgement (a reply code, a button, a
keypress). The run waits for answers, escalating nothing itself (every test is
narrowed to one channel), then stops the tests' pending waits so that no repeat
ever follows a test. An answer counts for the channel it came back on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from router.core import Router
from router.twoway.services import servers_running


async def await_acknowledgements(
    router: Router,
    message_ids: Iterable[str],
    tested: set[tuple[str, str]],
    *,
    since: float,
    wait: float,
) -> set[tuple[str, str]]:
    """(contact, channel) pairs whose person acknowledged within ``wait`` seconds."""
    if not await servers_running(router.store):
        router.services.start(server=False)  # polls Telegram when no server does
    deadline = time.monotonic() + wait
    answered: set[tuple[str, str]] = set()
    while True:
        answered = await router.store.acknowledged_since(since) & tested
        if answered == tested or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.25)
    now = time.time()
    for message_id in message_ids:
        stored = await router.store.load_message(message_id)
        for delivery in stored.deliveries if stored is not None else ():
            if not delivery.done:
                await router.store.settle(message_id, delivery.contact, status=None, at=now)
    return answered
