"""Telegram through the Bot API, with python-telegram-bot.

python-telegram-bot turns HTTP answers into typed errors, and transport
failures into ``TimedOut``/``NetworkError`` raised *from* the httpx exception;
:func:`classify` reads that cause to tell "not sent" from "maybe sent".
"""

from __future__ import annotations

import dataclasses
import re
import time
import warnings
from datetime import timedelta
from typing import Any

import httpx
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest

from channels.telegram.updates import TelegramUpdates
from config.sections import TelegramSettings
from router.model.channel import Rendered
from router.model.outcome import Capabilities, Outcome, Scope
from router.model.redact import Redactor

TELEGRAM_MAX_LENGTH = 4096
# httpx failures that happen before the request can have left this machine.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
# HTTP statuses that say "a gateway gave up waiting on Telegram", which may have acted.
MAYBE_SENT_STATUSES: dict[int, str] = {
    504: "gateway timeout: Telegram may have acted on the request",
}


class MaybeSentStatus(NetworkError):
    """A complete HTTP answer whose status says the request may still have been acted on
    (python-telegram-bot keeps only the description of an error answer, not its status)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class _StatusRequest(HTTPXRequest):
    """python-telegram-bot's httpx transport, raising :class:`MaybeSentStatus` for the
    statuses :data:`MAYBE_SENT_STATUSES` names, before the status is lost."""

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        status, payload = await super().do_request(*args, **kwargs)
        if status in MAYBE_SENT_STATUSES:
            raise MaybeSentStatus(status)
        return status, payload


class TelegramChannel:
    """Private messages from a bot to a numeric chat id, as plain text (no parse mode)."""

    name = "telegram"
    capabilities = Capabilities(
        max_length=TELEGRAM_MAX_LENGTH,
        failure_domains=frozenset({"telegram"}),
        reports_delivery=False,
        reports_acknowledgement=True,
    )

    def __init__(self, settings: TelegramSettings, *, pool_size: int = 64) -> None:
        self._request = _StatusRequest(
            connection_pool_size=pool_size,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.timeout,
            write_timeout=settings.timeout,
            pool_timeout=settings.connect_timeout,
        )
        token = settings.bot_token.get_secret_value()
        # Error descriptions come from whatever answers at api_base (a gateway may quote
        # the request URL, which holds the token); PTB may also recase them.
        self._token = re.compile(
            "|".join(re.escape(s) for s in (token, token.partition(":")[2])), re.IGNORECASE
        )
        self._redact = Redactor()  # and anything else shaped like a bot token
        # Bot.initialize() would call getMe and put the token in its error text:
        # the request object needs no initialisation of its own, so it is skipped.
        self.bot = Bot(
            token,
            base_url=str(settings.api_base).rstrip("/") + "/bot",
            request=self._request,
            get_updates_request=self._request,
        )

    async def send(self, address: str, message: Rendered, *, attempt_id: str) -> Outcome:
        started = time.monotonic()
        try:
            markup = None
            if message.ack_code is not None:  # a real inline keyboard: one tap acknowledges
                code = message.ack_code
                button = InlineKeyboardButton("Acknowledge", callback_data=f"ack:{code}")
                markup = InlineKeyboardMarkup([[button]])
            sent = await self.bot.send_message(
                chat_id=int(address), text=message.text, reply_markup=markup
            )
        except TelegramError as exc:
            return self._classify(exc).timed(time.monotonic() - started)
        return Outcome.accepted(f"{address}/{sent.message_id}").timed(time.monotonic() - started)

    async def check(self) -> Outcome:
        """getMe: proves the API answers and the token is valid, sends nothing."""
        started = time.monotonic()
        try:
            me = await self.bot.get_me()
        except TelegramError as exc:
            return self._classify(exc).timed(time.monotonic() - started)
        return Outcome.accepted(detail=f"bot @{me.username}").timed(time.monotonic() - started)

    def updates(self, *, webhook_secret: str | None) -> TelegramUpdates:
        """What comes back to this bot, by polling or by webhook."""
        return TelegramUpdates(self.bot, webhook_secret=webhook_secret)

    async def aclose(self) -> None:
        await self._request.shutdown()

    def _classify(self, exc: TelegramError) -> Outcome:
        """:func:`classify`, with the token scrubbed from the detail."""
        outcome = classify(exc)
        detail = self._redact(self._token.sub("***", outcome.detail))
        return outcome if detail == outcome.detail else dataclasses.replace(outcome, detail=detail)


def classify(exc: TelegramError) -> Outcome:
    """The one place where a Bot API failure becomes an outcome (design.md section 4)."""
    if isinstance(exc, RetryAfter):
        return Outcome.transient("Telegram flood control", retry_after=_seconds(exc))
    if isinstance(exc, MaybeSentStatus):
        return Outcome.unknown(f"Telegram {exc.status}: {MAYBE_SENT_STATUSES[exc.status]}")
    if isinstance(exc, InvalidToken):
        return Outcome.permanent("Telegram rejected the bot token", Scope.CHANNEL)
    if isinstance(exc, Forbidden):
        return Outcome.permanent(f"Telegram 403: {exc.message}", Scope.RECIPIENT)
    if isinstance(exc, ChatMigrated):
        return Outcome.permanent(
            f"group moved to chat id {exc.new_chat_id}: update the contact", Scope.RECIPIENT
        )
    # BadRequest subclasses NetworkError, so it must be handled before it.
    if isinstance(exc, BadRequest):
        return Outcome.permanent(f"Telegram 400: {exc.message}", Scope.RECIPIENT)
    if isinstance(exc, NetworkError):
        cause = exc.__cause__
        if isinstance(cause, _NOT_SENT):
            return Outcome.transient(f"cannot reach Telegram: {type(cause).__name__}")
        if isinstance(cause, httpx.HTTPError):
            return Outcome.unknown(f"no answer from Telegram: {type(cause).__name__}")
        if cause is None or isinstance(cause, TelegramError):
            # Raised for a complete HTTP answer with an error status (5xx, 409...). When
            # its body is not the Bot API's JSON (a gateway's error page), PTB chains the
            # parsing failure and quotes the whole page: keep the status only.
            reason = exc.message.partition(". Parsing the server response")[0]
            return Outcome.transient(f"Telegram error: {reason}")
        return Outcome.unknown(f"Telegram request failed: {type(cause).__name__}")
    return Outcome.unknown(f"Telegram error: {type(exc).__name__}")


def _seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():
        # The int-or-timedelta transition warns on every read of retry_after.
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
