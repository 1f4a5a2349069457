"""WhatsApp through Twilio's Messages API (``whatsapp:`` addresses)."""

from __future__ import annotations

import json

from channels.twilio.account import TwilioAccount, text_with_ack
from channels.twilio.base import SdkRequest, TwilioChannel
from router.model.channel import Rendered
from router.model.outcome import Capabilities

WHATSAPP_MAX_LENGTH = 1600


class WhatsAppChannel(TwilioChannel):
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
        super().__init__(account, "whatsapp:" + sender.removeprefix("whatsapp:"))
        self._content_sid = content_sid

    def _request(self, address: str, message: Rendered, attempt_id: str) -> SdkRequest:
        to = "whatsapp:" + address.removeprefix("whatsapp:")
        text = text_with_ack(message)
        content: dict[str, str] = {"body": text}
        if self._content_sid:
            variables = json.dumps({"1": text}, ensure_ascii=False)
            content = {"content_sid": self._content_sid, "content_variables": variables}
        return lambda: self._account.client.messages.create_async(
            to=to, from_=self._sender, **content, **self._account.callback(attempt_id)
        )

    async def reconcile(
        self, address: str, message: Rendered, *, since: float
    ) -> list[str] | None:
        if self._content_sid:
            # Twilio renders the approved template itself: its body is not ours to match,
            # so a lost template request cannot be told apart from any other. In doubt.
            return None
        return await self._account.sent_since(
            to="whatsapp:" + address.removeprefix("whatsapp:"), from_=self._sender, since=since,
            body=text_with_ack(message),
        )
