"""Bot API objects and request parameters of the Telegram peer, as Telegram shapes them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

from aiohttp import web

from router.sandbox.faults import Fault


class BadRequest(Exception):
    """A request Telegram would answer with an error; ``str(exc)`` is the description."""

    def __init__(self, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.status = status


@dataclass(frozen=True, slots=True)
class TelegramSent:
    """A message the bot sent, as the peer recorded it."""

    chat_id: int
    text: str
    message_id: int
    reply_markup: Mapping[str, object] | None
    time: float
    reply_to_message_id: int | None = None
    parse_mode: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "chat_id": self.chat_id,
            "text": self.text,
            "message_id": self.message_id,
            "reply_markup": None if self.reply_markup is None else dict(self.reply_markup),
            "time": self.time,
            "reply_to_message_id": self.reply_to_message_id,
            "parse_mode": self.parse_mode,
        }


@dataclass(frozen=True, slots=True)
class Webhook:
    """What setWebhook stored."""

    url: str
    secret_token: str | None
    allowed_updates: tuple[str, ...] | None
    max_connections: int = 40


def ok(result: object, description: str | None = None) -> web.Response:
    body: dict[str, object] = {"ok": True, "result": result}
    if description:
        body["description"] = description
    return web.json_response(body)


def failure(status: int, description: str, retry_after: int | None = None) -> web.Response:
    body: dict[str, object] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)


async def read_params(request: web.Request) -> dict[str, object]:
    """Query string plus a form-encoded, multipart or JSON body, as the Bot API accepts.

    Form values are strings (python-telegram-bot JSON-encodes objects into them);
    JSON bodies carry native values. ``integer``/``obj`` below accept both.
    """
    params: dict[str, object] = dict(request.query)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise BadRequest("Bad Request: can't parse JSON object") from None
        if not isinstance(body, dict):
            raise BadRequest("Bad Request: can't parse JSON object")
        params.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params


def as_strings(params: Mapping[str, object]) -> dict[str, str]:
    """Parameters as the request log shows them."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}


def integer(params: Mapping[str, object], key: str, default: int | None = None) -> int | None:
    value = params.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise BadRequest(f"Bad Request: invalid {key} specified")
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        raise BadRequest(f"Bad Request: invalid {key} specified") from None


def number(params: Mapping[str, object], key: str) -> float:
    value = params.get(key)
    if value is None or value == "":
        return 0.0
    try:
        return float(str(value))
    except ValueError:
        raise BadRequest(f"Bad Request: invalid {key} specified") from None


def obj(params: Mapping[str, object], key: str, what: str) -> object:
    """A JSON-typed parameter (sent as a JSON string in forms); None when absent."""
    value = params.get(key)
    if isinstance(value, str):
        try:
            return cast(object, json.loads(value))
        except json.JSONDecodeError:
            raise BadRequest(f"Bad Request: can't parse {what} JSON object") from None
    return value


def chat_id(params: Mapping[str, object]) -> int:
    value = params.get("chat_id")
    if value is None or value == "":
        raise BadRequest("Bad Request: chat_id is empty")
    try:
        return int(str(value))
    except ValueError:
        # "@channelusername": the sandbox knows no public channels.
        raise BadRequest("Bad Request: chat not found") from None


def user(
    user_id: int, first_name: str, *, bot: bool = False, username: str | None = None
) -> dict[str, object]:
    result: dict[str, object] = {"id": user_id, "is_bot": bot, "first_name": first_name}
    if username:
        result["username"] = username
    if not bot:
        result["language_code"] = "en"
    return result


def chat(chat_id: int, first_name: str) -> dict[str, object]:
    if chat_id > 0:
        return {"id": chat_id, "first_name": first_name, "type": "private"}
    kind = "supergroup" if str(chat_id).startswith("-100") else "group"
    return {"id": chat_id, "title": first_name, "type": kind}


def bot_user(bot_id: int, name: str, username: str) -> dict[str, object]:
    """getMe's answer."""
    return user(bot_id, name, bot=True, username=username) | {
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


def inline_keyboard(markup: object) -> Mapping[str, object] | None:
    """The reply_markup a Message echoes: only inline keyboards are part of it."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise BadRequest("Bad Request: can't parse reply keyboard markup JSON object")
    keyboard = markup.get("inline_keyboard")
    if keyboard is None:
        return None
    if not isinstance(keyboard, list) or not all(isinstance(row, list) for row in keyboard):
        raise BadRequest(
            'Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup '
            "should be an Array of Arrays"
        )
    return cast(Mapping[str, object], markup)


def fault_answer(fault: Fault) -> web.Response | None:
    if fault.kind == "http":
        return failure(fault.status, fault.message or default_description(fault.status))
    if fault.kind == "rate_limited":
        seconds = fault.retry_after_seconds
        return failure(429, f"Too Many Requests: retry after {seconds}", seconds)
    if fault.kind == "reject_recipient":
        if fault.code == 403:
            return failure(403, fault.message or "Forbidden: bot was blocked by the user")
        return failure(400, fault.message or "Bad Request: chat not found")
    return None


def default_description(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
