"""What Twilio's WhatsApp, SMS and voice adapters share: one account, one way to
create a resource and classify what came of it, one probe, reconciliation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from channels.twilio.account import TwilioAccount
from router.model.channel import Rendered
from router.model.outcome import Capabilities, Outcome

SdkRequest = Callable[[], Awaitable[Any]]


class TwilioChannel:
    """A channel carried by a :class:`TwilioAccount`; subclasses say what to create."""

    name: str
    capabilities: Capabilities

    def __init__(self, account: TwilioAccount, sender: str) -> None:
        self._account = account
        self._sender = sender

    async def send(self, address: str, message: Rendered, *, attempt_id: str) -> Outcome:
        return await self._submit(self._request(address, message, attempt_id))

    def _request(self, address: str, message: Rendered, attempt_id: str) -> SdkRequest:
        """The SDK call that creates the message or call (not yet awaited)."""
        raise NotImplementedError

    async def _submit(self, request: SdkRequest) -> Outcome:
        created, failure = await self._account.call(request)
        return failure or Outcome.accepted(created.sid)

    async def check(self) -> Outcome:
        return await self._account.check()

    async def aclose(self) -> None:
        """The shared account is closed by whoever opened it."""
