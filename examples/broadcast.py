"""Broadcast to a group, with a short SMS form and a spoken form for calls.

    BACKCHANNEL_CONFIG=examples/backchannel.toml python examples/broadcast.py ops
"""

from __future__ import annotations

import asyncio
import sys

from router import Message, Router

NOTICE = Message(
    "Major incident: the main site is down. Crisis cell on the usual bridge at 10:15.",
    subject="Major incident",
    by_channel={
        "sms": "Incident: site down. Crisis cell 10:15, usual bridge.",
        "voice": "This is an incident notice. The main site is down. "
        "The crisis cell meets on the usual bridge at ten fifteen.",
    },
)


async def main(group: str) -> int:
    async with Router.from_config() as router:
        result = await router.broadcast(NOTICE, group=group)
    for delivery in result:
        print(f"{delivery.contact:<12} {delivery.status:<9} {delivery.channel or '-'}")
    return 0 if result.reached_all else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ops")))
