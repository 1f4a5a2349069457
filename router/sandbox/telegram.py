"""A Telegram Bot API peer: ``/bot<token>/<method>`` with getMe, sendMessage,
getUpdates (long polling), answerCallbackQuery and the webhook methods.

Inbound traffic is injected with :meth:`TelegramPeer.push_message` and
:meth:`TelegramPeer.push_callback_query`. Scripted faults use the channel key
"telegram" and the chat id as address; they apply to sendMessage, and the
address-less ones to getMe too (the health probe), never to the update methods.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from router.sandbox import _telegram_api as tg
from router.sandbox._http import STATE, HttpPeer
from router.sandbox._ratelimit import SlidingWindow
from router.sandbox._telegram_api import BadRequest, TelegramSent, Webhook
from router.sandbox.faults import FaultBook

DEFAULT_BOT_TOKEN = "123456789:AAHbackchannelSandboxToken000000000"  # noqa: S105 (placeholder)
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")

Method = Callable[[web.Request, dict[str, object]], Awaitable[web.Response]]


class TelegramPeer(HttpPeer):
    """A local Telegram Bot API. ``async with TelegramPeer() as peer:``.

    With ``flood_limit`` on, sendMessage beyond ``tolerance`` times
    ``overall_per_second`` (all chats) or ``per_chat_per_second`` (one chat) in any
    sliding second gets 429 with ``retry_after``, counted in ``rate_limited_count``.
    """

    def __init__(
        self,
        bot_token: str = DEFAULT_BOT_TOKEN,
        *,
        bot_username: str = "backchannel_sandbox_bot",
        bot_name: str = "Backchannel Sandbox",
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        flood_limit: bool = False,
        overall_per_second: int = 30,
        per_chat_per_second: int = 1,
        tolerance: float = 1.1,
    ) -> None:
        super().__init__(FaultBook(("telegram",), ("http", "rate_limited", "stall", "drop",
                                                   "reject_recipient")), host=host, port=port,
                         latency=latency)  # fmt: skip
        self.bot_token = bot_token
        self.bot_username = bot_username
        self.bot_name = bot_name
        self.bot_id = int(bot_token.partition(":")[0]) if bot_token[:1].isdigit() else 1
        self.flood_limit = flood_limit
        self.sent: list[TelegramSent] = []
        self.updates: list[dict[str, object]] = []
        """Updates not yet confirmed by getUpdates (or not yet taken by the webhook)."""
        self.answered_callbacks: list[dict[str, object]] = []
        self.chat_names: dict[int, str] = {}
        """First names (or group titles) by chat id; unknown chats get "User <id>"."""
        self.webhook: Webhook | None = None
        self.webhook_error: tuple[int, str] | None = None
        self.rate_limited_count = 0
        self._overall = SlidingWindow(max(1, int(overall_per_second * tolerance)))
        self._per_chat = SlidingWindow(max(1, int(per_chat_per_second * tolerance)))
        self._allowed: tuple[str, ...] | None = None
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._history: dict[tuple[int, int], dict[str, object]] = {}
        self._queries: dict[str, dict[str, object]] = {}
        self._poller: asyncio.Future[str] | None = None
        self._webhook_lock = asyncio.Lock()
        self._methods: dict[str, Method] = {
            "getme": self._get_me,
            "sendmessage": self._send_message,
            "getupdates": self._get_updates,
            "answercallbackquery": self._answer_callback_query,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
        }

    @property
    def polling(self) -> bool:
        """Whether a getUpdates long poll is waiting for an update right now."""
        return self._poller is not None and not self._poller.done()

    def _sent_json(self) -> list[dict[str, object]]:
        return [s.to_json() for s in self.sent]

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.route("*", "/bot{token}/{method}", self._dispatch),
            web.route("*", "/{tail:.*}", self._not_found),
        ]

    async def _not_found(self, request: web.Request) -> web.Response:
        return tg.failure(404, "Not Found")

    async def _dispatch(self, request: web.Request) -> web.Response:
        self.tag(request, "telegram", {})
        if not secrets.compare_digest(request.match_info["token"], self.bot_token):
            return tg.failure(401, "Unauthorized")
        method = self._methods.get(request.match_info["method"].lower())
        if method is None:
            return tg.failure(404, "Not Found")
        try:
            params = await tg.read_params(request)
            self.tag(request, "telegram", tg.as_strings(params))
            return await method(request, params)
        except BadRequest as exc:
            return tg.failure(exc.status, str(exc))

    def _apply_fault(self, request: web.Request, chat: int | None) -> web.Response | None:
        """Answer a fault that fails the request outright; remember stalls and drops."""
        fault = self.faults.take(
            "telegram",
            None if chat is None else str(chat),
            where=None if chat is not None else (lambda f: f.kind != "reject_recipient"),
        )
        if fault is None:
            return None
        request[STATE].fault = fault
        return tg.fault_answer(fault)

    async def _finish(self, request: web.Request, response: web.Response) -> web.Response:
        fault = request[STATE].fault
        if fault is not None and fault.kind == "stall":
            await self.stall(request)
        if fault is not None and fault.kind == "drop":
            await self.drop(request)
        return response

    # Methods ------------------------------------------------------------------------

    async def _get_me(self, request: web.Request, params: dict[str, object]) -> web.Response:
        if failed := self._apply_fault(request, None):
            return failed
        me = tg.bot_user(self.bot_id, self.bot_name, self.bot_username)
        return await self._finish(request, tg.ok(me))

    async def _send_message(self, request: web.Request, params: dict[str, object]) -> web.Response:
        chat = tg.chat_id(params)
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("Bad Request: message text is empty")
        if len(text) > 4096:
            raise BadRequest("Bad Request: message is too long")
        markup = tg.inline_keyboard(tg.obj(params, "reply_markup", "reply keyboard markup"))
        reply_to = self._reply_target(chat, params)
        if failed := self._apply_fault(request, chat):
            return failed
        if throttled := self._throttle(chat):
            return throttled
        message = self._new_message(chat, tg.user(self.bot_id, self.bot_name, bot=True,
                                    username=self.bot_username), text, reply_to)  # fmt: skip
        if markup is not None:
            message["reply_markup"] = markup
        parse_mode = params.get("parse_mode")
        self.sent.append(
            TelegramSent(
                chat, text, int(str(message["message_id"])), markup, time.time(),
                None if reply_to is None else int(str(reply_to["message_id"])),
                parse_mode if isinstance(parse_mode, str) else None,
            )
        )  # fmt: skip
        return await self._finish(request, tg.ok(message))

    def _reply_target(self, chat: int, params: dict[str, object]) -> dict[str, object] | None:
        reply = tg.obj(params, "reply_parameters", "reply parameters")
        if isinstance(reply, dict):
            target, lenient = (
                reply.get("message_id"),
                bool(reply.get("allow_sending_without_reply")),
            )
        else:
            target = tg.integer(params, "reply_to_message_id")
            lenient = str(params.get("allow_sending_without_reply", "")).lower() == "true"
        if target is None:
            return None
        found = self._history.get((chat, int(str(target))))
        if found is None and not lenient:
            raise BadRequest("Bad Request: message to be replied not found")
        return found

    def _throttle(self, chat: int) -> web.Response | None:
        if not self.flood_limit:
            return None
        now = time.monotonic()
        wait = max(self._overall.wait(None, now), self._per_chat.wait(chat, now))
        if wait > 0:
            self.rate_limited_count += 1
            seconds = max(1, int(wait + 0.999))
            return tg.failure(429, f"Too Many Requests: retry after {seconds}", seconds)
        self._overall.record(None, now)
        self._per_chat.record(chat, now)
        return None

    async def _get_updates(self, request: web.Request, params: dict[str, object]) -> web.Response:
        if self.webhook is not None:
            raise BadRequest(
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
                409,
            )
        offset = tg.integer(params, "offset", 0) or 0
        limit = min(100, max(1, tg.integer(params, "limit", 100) or 100))
        timeout = max(0.0, tg.number(params, "timeout"))
        allowed = tg.obj(params, "allowed_updates", "allowed updates")
        if isinstance(allowed, list):
            self._allowed = tuple(str(a) for a in allowed) or None
        if offset < 0:
            del self.updates[: max(0, len(self.updates) + offset)]
        else:
            self.updates = [u for u in self.updates if int(str(u["update_id"])) >= offset]
        if self._poller is not None and not self._poller.done():
            self._poller.set_result("conflict")  # Telegram ends the older poll, not this one
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            batch = self.updates[:limit]
            remaining = deadline - loop.time()
            if batch or remaining <= 0:
                return tg.ok(batch)
            waiter: asyncio.Future[str] = loop.create_future()
            self._poller = waiter
            try:
                await asyncio.wait({waiter}, timeout=remaining)
            finally:
                if self._poller is waiter:
                    self._poller = None
            if waiter.done() and waiter.result() == "conflict":
                raise BadRequest(
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                    409,
                )

    async def _answer_callback_query(
        self, request: web.Request, params: dict[str, object]
    ) -> web.Response:
        query_id = str(params.get("callback_query_id") or "")
        if query_id not in self._queries:
            raise BadRequest(
                "Bad Request: query is too old and response timeout expired or query ID is invalid"
            )
        answer: dict[str, object] = {"callback_query_id": query_id}
        answer |= {k: params[k] for k in ("text", "show_alert", "url", "cache_time") if k in params}
        self.answered_callbacks.append(answer)
        return tg.ok(True)

    async def _set_webhook(self, request: web.Request, params: dict[str, object]) -> web.Response:
        url = str(params.get("url") or "")
        if not url:
            return await self._delete_webhook(request, params)
        # Telegram insists on HTTPS; the sandbox lets local http:// applications in.
        if not url.startswith(("http://", "https://")):
            raise BadRequest("Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not (isinstance(secret, str) and _SECRET.fullmatch(secret)):
            raise BadRequest("Bad Request: secret token contains unallowed characters")
        allowed = tg.obj(params, "allowed_updates", "allowed updates")
        kinds = tuple(str(a) for a in allowed) if isinstance(allowed, list) and allowed else None
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self.updates.clear()
        self.webhook = Webhook(
            url, secret or None, kinds, tg.integer(params, "max_connections", 40) or 40
        )
        self.webhook_error = None
        return tg.ok(True, "Webhook was set")

    async def _delete_webhook(
        self, request: web.Request, params: dict[str, object]
    ) -> web.Response:
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self.updates.clear()
        existed, self.webhook = self.webhook is not None, None
        return tg.ok(True, "Webhook was deleted" if existed else "Webhook is already deleted")

    async def _get_webhook_info(
        self, request: web.Request, params: dict[str, object]
    ) -> web.Response:
        hook = self.webhook
        info: dict[str, object] = {
            "url": "" if hook is None else hook.url,
            "has_custom_certificate": False,
            "pending_update_count": len(self.updates),
        }
        if hook is not None:
            info["max_connections"] = hook.max_connections
            if hook.allowed_updates:
                info["allowed_updates"] = list(hook.allowed_updates)
        if self.webhook_error is not None:
            info["last_error_date"], info["last_error_message"] = self.webhook_error
        return tg.ok(info)

    # Inbound traffic ------------------------------------------------------------------

    def _new_message(
        self, chat: int, sender: dict[str, object], text: str, reply_to: dict[str, object] | None
    ) -> dict[str, object]:
        message_id = next(self._message_ids.setdefault(chat, itertools.count(1)))
        name = self.chat_names.get(chat, f"User {chat}")
        message: dict[str, object] = {
            "message_id": message_id,
            "from": sender,
            "chat": tg.chat(chat, name),
            "date": int(time.time()),
            "text": text,
        }
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        self._history[(chat, message_id)] = message
        return message

    def _person(self, chat: int) -> dict[str, object]:
        return tg.user(abs(chat), self.chat_names.get(chat, f"User {chat}"))

    async def push_message(
        self, chat_id: int, text: str, reply_to_message_id: int | None = None
    ) -> dict[str, object]:
        """A person writes to the bot. Returns the Update (long pollers get it at once;
        with a webhook set, it is POSTed before this returns)."""
        reply_to = None
        if reply_to_message_id is not None:
            reply_to = self._history.get((chat_id, reply_to_message_id))
            if reply_to is None:
                raise ValueError(f"chat {chat_id} has no message {reply_to_message_id}")
        message = self._new_message(chat_id, self._person(chat_id), text, reply_to)
        return await self._push({"message": message})

    async def push_callback_query(
        self, chat_id: int, message_id: int, data: str
    ) -> dict[str, object]:
        """A person presses an inline button under one of the bot's messages."""
        message = self._history.get((chat_id, message_id))
        if message is None:
            raise ValueError(f"chat {chat_id} has no message {message_id}")
        query: dict[str, object] = {
            "id": str(secrets.randbits(63)),
            "from": self._person(chat_id),
            "message": message,
            "chat_instance": str(abs(hash((self.bot_id, chat_id))) % 10**18),
            "data": data,
        }
        self._queries[str(query["id"])] = query
        return await self._push({"callback_query": query})

    async def _push(self, content: dict[str, object]) -> dict[str, object]:
        update: dict[str, object] = {"update_id": next(self._update_ids), **content}
        kind = next(iter(content))
        allowed = self.webhook.allowed_updates if self.webhook else self._allowed
        if allowed is not None and kind not in allowed:
            return update  # Telegram does not even keep updates the bot did not ask for
        self.updates.append(update)
        if self.webhook is not None:
            await self._flush_webhook()
        elif self._poller is not None and not self._poller.done():
            self._poller.set_result("update")
        return update

    async def _flush_webhook(self) -> None:
        """POST pending updates in order; stop at the first failure (kept for later)."""
        async with self._webhook_lock:
            while self.webhook is not None and self.updates:
                hook = self.webhook
                headers = (
                    {"X-Telegram-Bot-Api-Secret-Token": hook.secret_token}
                    if hook.secret_token
                    else {}
                )
                status = await self.post_outbound(
                    hook.url, json_body=self.updates[0], headers=headers
                )
                if status is None or not 200 <= status < 300:
                    error = (
                        "Connection refused"
                        if status is None
                        else f"Wrong response from the webhook: {status}"
                    )
                    self.webhook_error = (int(time.time()), error)
                    return
                self.updates.pop(0)

    async def _inbound_json(self, payload: Mapping[str, object]) -> dict[str, object]:
        chat = int(str(payload["chat_id"]))
        if "data" in payload:
            return await self.push_callback_query(
                chat, int(str(payload["message_id"])), str(payload["data"])
            )
        reply = payload.get("reply_to_message_id")
        return await self.push_message(
            chat, str(payload["text"]), None if reply is None else int(str(reply))
        )
