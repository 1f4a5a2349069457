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
        """One Bot API update, from getUpdates or the webhook.

        Authenticated is not well formed: a field of the wrong type (a future Bot API, a
        buggy relay) makes the update ignored, with a warning, never an exception.
        """
        if not isinstance(update, dict):
            return
        update_id = _integer(update.get("update_id"))
        query = update.get("callback_query")
        message = update.get("message")
        if update_id is None:
            log.warning("Telegram update without a numeric update_id: ignored")
        elif isinstance(query, dict):
            await self._button(update_id, query, apply)
        elif isinstance(message, dict) and isinstance(message.get("text"), str):
            chat_id = _integer(_table(message.get("chat")).get("id"))
            if chat_id is None:
                log.warning("Telegram update %d: a message without a numeric chat id: ignored",
                            update_id)
                return
            await apply(TextReceived("telegram", str(chat_id), message["text"], f"tg:{update_id}"))

    async def _button(self, update_id: int, query: dict[str, object], apply: Apply) -> None:
        from telegram.error import TelegramError

        chat_id = _integer(_table(_table(query.get("message")).get("chat")).get("id"))
        if chat_id is None:
            chat_id = _integer(_table(query.get("from")).get("id"))
        query_id, data = query.get("id"), query.get("data")
        if chat_id is None or not isinstance(query_id, str) or not isinstance(data, str | None):
            log.warning("Telegram update %d: a malformed button press: ignored", update_id)
            return
        reply = await apply(ButtonPressed("telegram", str(chat_id), data or "", f"tg:{update_id}"))
        text = "Acknowledged, thank you." if reply and reply.acknowledged else None
        try:
            await self._bot.answer_callback_query(query_id, text=text)
        except TelegramError:
            log.warning("answerCallbackQuery failed; the button keeps spinning a while")

    async def _webhook(self, request: WebhookRequest, apply: Apply) -> WebhookResponse:
        given = request.headers.get("x-telegram-bot-api-secret-token", "")
        if self._secret is None or not hmac.compare_digest(given, self._secret):
            return FORBIDDEN
        try:
            update = json.loads(request.body)
        except (ValueError, RecursionError):
            # RecursionError: arrays nested thousands deep fit under the size cap.
            return WebhookResponse(400, "not JSON")
        if not isinstance(update, dict):
            return WebhookResponse(400, "not an update")
        await self.handle(update, apply)
        return WebhookResponse(200)


def _integer(value: object) -> int | None:
    """Telegram's ids are integers; JSON's true is not one, whatever Python thinks."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _table(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}
