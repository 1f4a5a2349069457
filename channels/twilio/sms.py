"""SMS through Twilio's Messages API."""

from __future__ import annotations

from channels.twilio.account import TwilioAccount, text_with_ack
from router.model.channel import Rendered
from router.model.outcome import Capabilities, Outcome

# Twilio refuses bodies over 1,600 characters (error 21617): about ten concatenated parts.
SMS_MAX_LENGTH = 1600


class SmsChannel:
    """Plain text messages to a mobile number."""

    name = "sms"
    capabilities = Capabilities(
        max_length=SMS_MAX_LENGTH,
        failure_domains=frozenset({"twilio", "carrier"}),
        reports_delivery=True,
        reports_acknowledgement=True,
    )

    def __init__(self, account: TwilioAccount, sender: str) -> None:
        self._account = account
        self._sender = sender

    async def send(self, address: str, message: Rendered, *, attempt_id: str) -> Outcome:
        created, failure = await self._account.call(
            lambda: self._account.client.messages.create_async(
                to=address, from_=self._sender, body=text_with_ack(message),
                **self._account.callback(),
            )
        )
        return failure or Outcome.accepted(created.sid)

    async def reconcile(
        self, address: str, message: Rendered, *, since: float
    ) -> list[str] | None:
        return await self._account.sent_since(
            to=address, from_=self._sender, since=since, body=text_with_ack(message)
        )

    async def check(self) -> Outcome:
        return await self._account.check()

    async def aclose(self) -> None:
        """The shared account is closed by whoever opened it."""
