"""The board's HTML: Jinja2 with autoescape on (unlike message templates, these are pages),
rendered on the server, whole for the first paint and part by part for live updates."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined

from router.store.board_view import STATUSES

PARTS = ("incidents", "health", "messages", "detail", "inbox", "reach")
"""The page's parts, each replaced as a whole when it changes."""
CONTACTS_PER_PAGE = 50
MESSAGES_PER_PAGE = 15


@dataclass(frozen=True, slots=True)
class ViewParams:
    """What one viewer looks at: the selected message, the filter box, the pages."""

    m: str = ""
    q: str = ""
    status: str = ""
    channel: str = ""
    p: int = 1
    mp: int = 1

    def query(self, **changes: Any) -> str:
        chosen = replace(self, **changes)
        pairs = [(key, value) for key, value in (
            ("m", chosen.m), ("q", chosen.q), ("status", chosen.status),
            ("channel", chosen.channel), ("p", chosen.p), ("mp", chosen.mp),
        ) if value not in ("", 1)]  # fmt: skip
        return urlencode(pairs)


class BadParam(ValueError):
    """A query parameter the board cannot use; the message names it."""


def parse_params(query: Mapping[str, str], channels: tuple[str, ...]) -> ViewParams:
    def number(name: str) -> int:
        text = query.get(name, "1") or "1"
        if not text.isdigit() or not 1 <= int(text) <= 1_000_000:
            raise BadParam(f"{name}: must be a page number")
        return int(text)

    status, channel = query.get("status", ""), query.get("channel", "")
    if status and status not in STATUSES:
        raise BadParam(f"status: must be one of {', '.join(STATUSES)}")
    if channel and channel not in channels:
        raise BadParam(f"channel: must be one of {', '.join(channels)}")
    name, message = query.get("q", ""), query.get("m", "")
    if len(name) > 100:
        raise BadParam("q: 100 characters at most")
    if len(message) > 100 or (not message.replace("_", "").replace("-", "").isalnum() and message):
        raise BadParam("m: not a message id")
    return ViewParams(m=message, q=name.strip(), status=status, channel=channel,
                      p=number("p"), mp=number("mp"))


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


class Pages:
    """Renders the login page, the board, and each of its parts."""

    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("router.board", "templates"),
            autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
            enable_async=False,
        )
        self.env.filters["utc"] = _utc
        self.env.filters["iso"] = _iso
        self.env.globals["statuses"] = STATUSES

    def login(self, **context: Any) -> str:
        return self.env.get_template("login.html").render(**context)

    def board(self, data: Mapping[str, Any], params: ViewParams, **context: Any) -> str:
        return self.env.get_template("board.html").render(
            **self._context(data, params), now=time.time(), **context)

    def part(self, name: str, data: Mapping[str, Any], params: ViewParams) -> str:
        return self.env.get_template(f"_{name}.html").render(**self._context(data, params))

    def _context(self, data: Mapping[str, Any], params: ViewParams) -> dict[str, Any]:
        def link(**changes: Any) -> str:
            return "/board?" + params.query(**changes)

        return {**data, "params": params, "link": link}
