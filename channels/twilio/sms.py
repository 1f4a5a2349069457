"""SMS through Twilio's Messages API."""

from __future__ import annotations

from channels.twilio.account import text_with_ack
from channels.twilio.base import SdkRequest, TwilioChannel
from router.model.channel import Rendered
from router.model.outcome import Capabilities

# Twilio refuses bodies over 1,600 characters (error 21617): about ten concatenated parts.
SMS_MAX_LENGTH = 1600


class SmsChannel(TwilioChannel):
    """Plain text messages to a mobile number."""

    name = "sms"
    capabilities = Capabilities(
        max_length=SMS_MAX_LENGTH,
        failure_domains=frozenset({"twilio", "carrier"}),
        reports_delivery=True,
        reports_acknowledgement=True,
    )

    def _request(self, address: str, message: Rendered, attempt_id: str) -> SdkRequest:
        return lambda: self._account.client.messages.create_async(
            to=address, from_=self._sender, body=text_with_ack(message),
            **self._account.callback(attempt_id),
        )

    async def reconcile(
        self, address: str, message: Rendered, *, since: float
    ) -> list[str] | None:
        return await self._account.sent_since(
            to=address, from_=self._sender, since=since, body=text_with_ack(message)
        )
