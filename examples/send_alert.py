"""Send one alert from your own tool, falling back across channels.

    BACKCHANNEL_CONFIG=examples/backchannel.toml \
        python examples/send_alert.py alice "Disk full on db-1"
"""

from __future__ import annotations

import asyncio
import sys

from router import Message, Router


async def main(contact: str, text: str) -> int:
    async with Router.from_config() as router:
        result = await router.send(Message(text, subject="Alert"), to=contact)
    tried = " -> ".join(f"{a.channel}:{a.outcome.verdict}" for a in result.attempts)
    print(f"{contact}: {result.status} via {result.channel} ({tried})")
    return 0 if result.reached else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
