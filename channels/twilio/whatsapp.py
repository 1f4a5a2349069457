"""WhatsApp through Twilio's Messages API (``whatsapp:`` addresses)."""

from __future__ import annotations

import json

from channels.twilio.account import TwilioAccount, text_with_ack
from router.model.channel import Rendered
from router.model.outcome import Capabilities, Outcome

WHATSAPP_MAX_LENGTH = 1600


class WhatsAppChannel:
    """WhatsApp messages; with ``content_sid``, an approved template carrying the text.

    Outside the 24 hours after a person last wrote to the sender, WhatsApp only
    delivers approved templates: free text then fails with Twilio error 63016.
    """

    name = "whatsapp"
    capabilities = Capabilities(
        max_length=WHATSAPP_MAX_LENGTH,
        failure_domains=frozenset({"twilio", "meta"}),
        reports_delivery=True,
        reports_acknowledgement=True,
    )

    def __init__(self, account: TwilioAccount, sender: str, content_sid: str | None = None) -> None:
        self._account = account
        self._sender = "whatsapp:" + sender.removeprefix("whatsapp:")
        self._content_sid = content_sid

    async def send(self, address: str, message: Rendered, *, attempt_id: str) -> Outcome:
        to = "whatsapp:" + address.removeprefix("whatsapp:")
        text = text_with_ack(message)
        content: dict[str, str] = {"body": text, **self._account.callback()}
        if self._content_sid:
            variables = json.dumps({"1": text}, ensure_ascii=False)
            content = {"content_sid": self._content_sid, "content_variables": variables,
                       **self._account.callback()}
        created, failure = await self._account.call(
            lambda: self._account.client.messages.create_async(
                to=to, from_=self._sender, **content
            )
        )
        return failure or Outcome.accepted(created.sid)

    async def reconcile(
        self, address: str, message: Rendered, *, since: float
    ) -> list[str] | None:
        return await self._account.sent_since(
            to="whatsapp:" + address.removeprefix("whatsapp:"), from_=self._sender, since=since,
            body=None if self._content_sid else text_with_ack(message),
        )

    async def check(self) -> Outcome:
        return await self._account.check()

    async def aclose(self) -> None:
        """The shared account is closed by whoever opened it."""
