"""What comes back from Telegram: button presses and messages, by long polling
(``getUpdates``) or by webhook (``/webhooks/telegram``, with the secret token that
``setWebhook`` was given in ``X-Telegram-Bot-Api-Secret-Token``)."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from router.model.inbound import (
    FORBIDDEN,
    Apply,
    ButtonPressed,
    Endpoint,
    FeedConflict,
    FeedUnavailable,
    TextReceived,
    WebhookRequest,
    WebhookResponse,
)

if TYPE_CHECKING:
    from telegram import Bot

log = logging.getLogger("backchannel.telegram")
ALLOWED_UPDATES = ["message", "callback_query"]


class TelegramUpdates:
    """One bot's updates, as a feed to poll and as a webhook."""

    name = "telegram-updates"

    def __init__(self, bot: Bot, *, webhook_secret: str | None) -> None:
        self._bot = bot
        self._secret = webhook_secret

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("/webhooks/telegram", self._webhook)]

    async def fetch(self, cursor: int | None, wait: int) -> Sequence[tuple[int, object]]:
        from telegram.error import Conflict, TelegramError

        try:
            updates = await self._bot.get_updates(
                offset=cursor or None, timeout=wait, allowed_updates=ALLOWED_UPDATES
            )
        except Conflict:
            raise FeedConflict("another reader takes this bot's updates") from None
        except TelegramError as exc:
            raise FeedUnavailable(f"getUpdates failed ({type(exc).__name__})") from None
        return [(update.update_id + 1, update.to_dict()) for update in updates]

    async def handle(self, update: object, apply: Apply) -> None:
        """One Bot API update, from getUpdates or the webhook."""
        from telegram.error import TelegramError

        if not isinstance(update, dict):
            return
        update_id = update.get("update_id")
        query = update.get("callback_query")
        message = update.get("message")
        if isinstance(query, dict):
            chat = (query.get("message") or {}).get("chat") or {}
            sender = query.get("from") or {}
            chat_id = str(chat.get("id") or sender.get("id"))
            reply = await apply(ButtonPressed(
                "telegram", chat_id, str(query.get("data") or ""), f"tg:{update_id}"
            ))
            text = "Acknowledged, thank you." if reply and reply.acknowledged else None
            try:
                await self._bot.answer_callback_query(str(query.get("id")), text=text)
            except TelegramError:
                log.warning("answerCallbackQuery failed; the button keeps spinning a while")
        elif isinstance(message, dict) and isinstance(message.get("text"), str):
            chat = message.get("chat") or {}
            if isinstance(chat, dict):
                await apply(TextReceived(
                    "telegram", str(chat.get("id")), str(message["text"]), f"tg:{update_id}"
                ))

    async def _webhook(self, request: WebhookRequest, apply: Apply) -> WebhookResponse:
        given = request.headers.get("x-telegram-bot-api-secret-token", "")
        if self._secret is None or not hmac.compare_digest(given, self._secret):
            return FORBIDDEN
        try:
            update = json.loads(request.body)
        except ValueError:
            return WebhookResponse(400, "not JSON")
        if not isinstance(update, dict):
            return WebhookResponse(400, "not an update")
        await self.handle(update, apply)
        return WebhookResponse(200)
