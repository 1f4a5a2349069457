"""A scripted in-memory channel and a fake clock, for router logic without a network."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Iterable

from router import Capabilities, Outcome, Rendered


class FakeClock:
    """Time that moves only when someone sleeps (or a test says so)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedChannel:
    """Answers each send with the next scripted outcome (default: accepted)."""

    def __init__(
        self,
        name: str,
        *,
        max_length: int | None = None,
        domains: Iterable[str] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.name = name
        self.capabilities = Capabilities(
            max_length=max_length, failure_domains=frozenset(domains or {name})
        )
        self.delay = delay
        self.script: deque[Outcome | Exception] = deque()
        self.by_address: dict[str, deque[Outcome | Exception]] = defaultdict(deque)
        self.sent: list[tuple[str, str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.checks = 0
        self._sending = asyncio.Event()

    def will(self, *outcomes: Outcome | Exception, address: str | None = None) -> ScriptedChannel:
        (self.by_address[address] if address else self.script).extend(outcomes)
        return self

    async def send(self, address: str, message: Rendered, *, attempt_id: str) -> Outcome:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            self.sent.append((address, message.text, attempt_id))
            self._sending.set()
            queue = self.by_address.get(address) or self.script
            default = Outcome.accepted(f"{self.name}-{len(self.sent)}")
            next_outcome = queue.popleft() if queue else default
            if isinstance(next_outcome, Exception):
                raise next_outcome
            return next_outcome
        finally:
            self.in_flight -= 1

    async def wait_sent(self, count: int = 1, *, within: float = 60.0) -> None:
        """Until ``count`` sends were made (``within``: a bound against hanging, not a
        timing assertion)."""
        async with asyncio.timeout(within):
            while len(self.sent) < count:
                self._sending.clear()
                await self._sending.wait()

    async def check(self) -> Outcome:
        self.checks += 1
        return Outcome.accepted(detail="scripted")

    async def aclose(self) -> None:
        return None
