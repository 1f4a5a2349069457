"""Asking providers for what would otherwise come by webhook.

Telegram updates come by ``getUpdates`` long polling unless a webhook is set;
without a public URL, Twilio cannot call back, so the status of the messages
a delivery waits on is fetched instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from router.store.base import Store
from router.twoway.inbound import Inbound

if TYPE_CHECKING:
    # python-telegram-bot (and httpx under it) is about 35 MB of a process: imported
    # where a bot is actually used, never by a deployment without Telegram.
    from telegram import Bot

log = logging.getLogger("backchannel.pollers")
OFFSET_KEY = "telegram.update_offset"
StatusFetcher = Callable[[str], Awaitable[str | None]]
Lease = Callable[[float], Awaitable[bool]]
"""Hold a named lease for this many seconds: only one instance polls at a time."""


async def _always(seconds: float) -> bool:
    return True


class TelegramPoller:
    """One long-polling reader of the bot's updates (Telegram allows only one)."""

    def __init__(self, bot: Bot, inbound: Inbound, store: Store, *, timeout: int = 20,
                 lease: Lease = _always) -> None:
        self._bot = bot
        self._inbound = inbound
        self._store = store
        self._timeout = timeout
        self._lease = lease

    async def run(self) -> None:
        from telegram.error import Conflict, TelegramError

        backoff = 1.0
        while True:
            if not await self._lease(self._timeout * 1.5):
                await asyncio.sleep(self._timeout)  # another instance reads the updates
                continue
            try:
                await self.poll_once()
                backoff = 1.0
            except Conflict:
                # Another process polls this bot (or a webhook is set): it gets the updates.
                log.warning("another reader takes this bot's updates; retrying in 30s")
                await asyncio.sleep(30)
            except TelegramError as exc:
                log.warning("getUpdates failed (%s); retrying in %.0fs", type(exc).__name__,
                            backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60)

    async def poll_once(self, wait: int | None = None) -> int:
        offset = int(await self._store.get_value(OFFSET_KEY) or 0)
        updates = await self._bot.get_updates(
            offset=offset or None, timeout=self._timeout if wait is None else wait,
            allowed_updates=["message", "callback_query"],
        )
        for update in updates:
            await handle_update(self._inbound, self._bot, update.to_dict())
            # Saved after each update: a crash re-reads at most the one in hand, and the
            # inbound table recognises it by its id.
            await self._store.set_value(OFFSET_KEY, str(update.update_id + 1))
        return len(updates)


async def handle_update(inbound: Inbound, bot: Bot, update: dict[str, object]) -> None:
    """One Bot API update, from getUpdates or the webhook."""
    from telegram.error import TelegramError

    update_id = update.get("update_id")
    query = update.get("callback_query")
    message = update.get("message")
    if isinstance(query, dict):
        chat = (query.get("message") or {}).get("chat") or {}
        sender = query.get("from") or {}
        chat_id = str(chat.get("id") or sender.get("id"))
        reply = await inbound.button(chat_id, str(query.get("data") or ""), f"tg:{update_id}")
        text = "Acknowledged, thank you." if reply and reply.kind == "ack" else None
        try:
            await bot.answer_callback_query(str(query.get("id")), text=text)
        except TelegramError:
            log.warning("answerCallbackQuery failed; the button keeps spinning a while")
    elif isinstance(message, dict) and isinstance(message.get("text"), str):
        chat = message.get("chat") or {}
        if isinstance(chat, dict):
            await inbound.text("telegram", str(chat.get("id")), str(message["text"]),
                               f"tg:{update_id}")


class ReceiptPoller:
    """Fetches the status of the Twilio messages and calls that deliveries wait on."""

    def __init__(self, fetch: StatusFetcher, inbound: Inbound, store: Store, *,
                 interval: float, lease: Lease = _always) -> None:
        self._fetch = fetch
        self._inbound = inbound
        self._store = store
        self._interval = interval
        self._lease = lease

    async def run(self) -> None:
        while True:
            try:
                if await self._lease(self._interval * 3):
                    await self.poll_once()
            except Exception:  # the store or Twilio may be briefly unavailable
                log.exception("receipt polling failed; retrying")
            await asyncio.sleep(self._interval)

    async def poll_once(self) -> int:
        changed = 0
        for attempt in await self._store.awaiting_receipts():
            if attempt.channel not in ("whatsapp", "sms", "voice") or not attempt.provider_id:
                continue
            status = await self._fetch(attempt.provider_id)
            if status is not None and await self._inbound.receipt(attempt.provider_id, status):
                changed += 1
        return changed
