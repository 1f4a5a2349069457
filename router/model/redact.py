"""Keep credentials out of every log, error and report, and personal addresses out of logs.

The Telegram token sits inside every Bot API URL, so anything that prints a URL
(httpx's request log, an exception's text) would leak it: :class:`Redactor`
scrubs known secrets and anything shaped like a bot token, and
:class:`RedactingFilter` applies that to the client libraries' loggers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from router.model.text import terminal_safe

_BOT_TOKEN = re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{20,}")
# Numbers are E.164 everywhere in backchannel and in the providers' messages.
_PHONE = re.compile(r"(?<![\w+])\+\d{7,15}\b")
_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b")
# Filters attach to a logger, not its children, so these are the exact names the libraries use.
LIBRARY_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "telegram",
    "telegram.Bot",
    "telegram.BaseRequest",
    "telegram.HTTPXRequest",
    "twilio.http_client",
    "twilio.async_http_client",
    "aiosmtplib",
    "aiohttp.client",
)


def mask_phone(number: str) -> str:
    """``+33612345678`` -> ``+336•••••678``: enough to tell two numbers apart, not to dial."""
    prefix = "whatsapp:" if number.startswith("whatsapp:") else ""
    digits = number.removeprefix("whatsapp:")
    if len(digits) <= 6:
        return prefix + "•" * len(digits)
    return prefix + digits[:4] + "•" * (len(digits) - 7) + digits[-3:]


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}•••@{domain}" if domain else "•••"


def mask_address(channel: str, address: str) -> str:
    if channel == "email":
        return mask_email(address)
    if channel == "telegram":
        return address[:2] + "•" * max(len(address) - 4, 1) + address[-2:]
    return mask_phone(address)


def mask_personal(text: str) -> str:
    """Mask anything that looks like a phone number or a mailbox in free text."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}•••@{m.group(2)}", text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


class Redactor:
    """Replaces known secrets and bot-token-shaped strings with ``***``."""

    __slots__ = ("_pattern",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        literal = sorted({s for s in secrets if s}, key=len, reverse=True)
        parts = [re.escape(s) for s in literal] + [_BOT_TOKEN.pattern]
        self._pattern = re.compile("|".join(parts))

    def __call__(self, text: str) -> str:
        return self._pattern.sub("***", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with secrets removed, addresses masked, and terminal
    controls and line breaks escaped (a reply or a provider's error cannot forge a log
    line or act on the terminal that tails the log)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not take logging down
            message = str(record.msg)
        record.msg = terminal_safe(mask_personal(self._redact(message)), multiline=False)
        record.args = None
        return True


def install(redactor: Redactor, names: Iterable[str] = LIBRARY_LOGGERS) -> list[RedactingFilter]:
    """Attach a filter to the client libraries' loggers; returns them for :func:`uninstall`.

    The CLI also puts one on its own handler, which sees every record; a library
    user who logs at DEBUG should do the same with :class:`RedactingFilter`.
    """
    installed: list[RedactingFilter] = []
    for name in names:
        log_filter = RedactingFilter(redactor)
        logging.getLogger(name).addFilter(log_filter)
        installed.append(log_filter)
    return installed


def uninstall(filters: Iterable[RedactingFilter], names: Iterable[str] = LIBRARY_LOGGERS) -> None:
    for name, log_filter in zip(names, filters, strict=False):
        logging.getLogger(name).removeFilter(log_filter)
