"""Local provider peers: try a setup offline, and give tests and benchmarks real peers.

:class:`Sandbox` runs a Twilio REST API, a Vonage API (SMS, voice, balance), a Telegram
Bot API and an SMTP relay on 127.0.0.1 in the caller's event loop, and writes a router
config that points at them (Vonage as a second SMS and voice provider on request)::

    async with Sandbox() as sb:
        Path("backchannel.toml").write_text(sb.config_toml())
        sb.twilio.faults.fail("whatsapp", Fault.http(503), times=1)
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from router.sandbox._service import Service
from router.sandbox.faults import Fault, FaultBook
from router.sandbox.proxy import TcpProxy
from router.sandbox.smtp import SmtpPeer, TlsMode
from router.sandbox.telegram import DEFAULT_BOT_TOKEN, TelegramPeer
from router.sandbox.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, TwilioPeer
from router.sandbox.vonage import VonagePeer

__all__ = [
    "DEFAULT_CONTACTS",
    "Fault",
    "FaultBook",
    "Sandbox",
    "SmtpPeer",
    "TcpProxy",
    "TelegramPeer",
    "TwilioPeer",
    "VonagePeer",
]

DEFAULT_CONTACTS: Mapping[str, Mapping[str, object]] = {
    "alice": {"phone": "+33612345678", "telegram": 111111111, "email": "alice@example.com"},
    "bob": {"phone": "+14155552671", "email": "bob@example.com"},
    "carol": {"telegram": 333333333, "email": "carol@example.com"},
    "dave": {"phone": "+447911123456", "telegram": 444444444},
}
"""Example contacts with valid test numbers; all four are in the group ``ops``."""

WHATSAPP_SENDER = "whatsapp:+14155238886"
PHONE_SENDER = "+15005550006"
VONAGE_SENDER = "+447400123456"
EMAIL_SENDER = "alerts@example.com"


class Sandbox(Service):
    """The three peers together, with well-formed fake credentials by default."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        smtp_tls: TlsMode = "starttls",
        smtp_auth: tuple[str, str] | None = ("demo", "demo-password"),
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        bot_token: str = DEFAULT_BOT_TOKEN,
        host: str = "127.0.0.1",
        twilio_port: int = 0,
        telegram_port: int = 0,
        smtp_port: int = 0,
        vonage_port: int = 0,
        telegram_flood_limit: tuple[int, int] | None = None,
    ) -> None:
        """``telegram_flood_limit=(overall, per_chat)`` makes the Telegram peer answer 429
        beyond 110 % of those rates per second, as Telegram's flood control does."""
        self.twilio = TwilioPeer(account_sid, auth_token, host=host, port=twilio_port,
                                 latency=latency)  # fmt: skip
        overall, per_chat = telegram_flood_limit or (30, 1)
        self.telegram = TelegramPeer(
            bot_token, host=host, port=telegram_port, latency=latency,
            flood_limit=telegram_flood_limit is not None, overall_per_second=overall,
            per_chat_per_second=per_chat,
        )
        self.smtp = SmtpPeer(host=host, port=smtp_port, tls=smtp_tls, auth=smtp_auth,
                             latency=latency)  # fmt: skip
        self.vonage = VonagePeer(host=host, port=vonage_port, latency=latency)
        self._keys: Path | None = None
        # One control endpoint scripts every channel, so a sandbox in another process
        # can be driven with curl against either HTTP peer.
        books = {
            **self.twilio.control_books,
            **self.vonage.control_books,
            **self.telegram.control_books,
            "email": self.smtp.faults,
        }
        for peer in (self.twilio, self.vonage, self.telegram):
            peer.control_books.update(books)
        for name, contact in DEFAULT_CONTACTS.items():
            chat = contact.get("telegram")
            if isinstance(chat, int):
                self.telegram.chat_names[chat] = name.capitalize()

    @property
    def twilio_url(self) -> str:
        return self.twilio.url

    @property
    def telegram_url(self) -> str:
        return self.telegram.url

    @property
    def vonage_url(self) -> str:
        return self.vonage.url

    @property
    def vonage_key_path(self) -> str:
        """The Vonage voice application's private key, written when the sandbox starts."""
        if self._keys is None:
            raise RuntimeError("the sandbox has not been started")
        return str(self._keys / "vonage.key")

    async def start(self) -> None:
        started: list[TwilioPeer | VonagePeer | TelegramPeer | SmtpPeer] = []
        self._keys = Path(tempfile.mkdtemp(prefix="backchannel-sandbox-keys-"))
        self.vonage.write_private_key(Path(self.vonage_key_path))
        try:
            for peer in (self.twilio, self.vonage, self.telegram, self.smtp):
                await peer.start()
                started.append(peer)
        except BaseException:
            await asyncio.gather(*(p.close() for p in started), return_exceptions=True)
            shutil.rmtree(self._keys, ignore_errors=True)
            raise

    async def close(self) -> None:
        try:
            await asyncio.gather(self.twilio.close(), self.vonage.close(),
                                 self.telegram.close(), self.smtp.close())
        finally:
            self.discard_files()

    def discard_files(self) -> None:
        """Remove the files the peers wrote (the SMTP relay's CA, the Vonage key): done by
        ``close``, and safe to call at any time, even from a process forced to stop."""
        if self._keys is not None:
            shutil.rmtree(self._keys, ignore_errors=True)
        self.smtp.discard_files()

    def received(self) -> dict[str, list[str]]:
        """Recipients of everything each provider recorded as sent, by channel, in order
        (a stalled or dropped request counts: the provider got it)."""
        received = {
            channel: [r.to for r in self.twilio.sent(channel)]
            for channel in ("whatsapp", "sms", "voice")
        }
        # Vonage carries SMS and voice too: one phone, whichever provider reached it.
        received["sms"] += ["+" + m.to for m in self.vonage.sms]
        received["voice"] += ["+" + c.to for c in self.vonage.calls.values()]
        received["telegram"] = [str(s.chat_id) for s in self.telegram.sent]
        received["email"] = [rcpt for mail in self.smtp.received for rcpt in mail.rcpt_tos]
        return received

    async def clear(self) -> None:
        """Clear every scripted fault and listen again where refused."""
        for book in (self.twilio.faults, self.vonage.faults, self.telegram.faults,
                     self.smtp.faults):
            book.clear()
        await asyncio.gather(self.twilio.restore(), self.vonage.restore(),
                             self.telegram.restore(), self.smtp.restore())

    def config_toml(
        self,
        contacts: Mapping[str, Mapping[str, object]] | None = None,
        store_path: str = "backchannel.db",
        overrides: Mapping[str, Mapping[str, object]] | None = None,
        *,
        vonage: bool = False,
    ) -> str:
        """A router config (design section 7) whose providers are these peers; with
        ``vonage``, Vonage carries SMS and voice after Twilio.

        ``overrides`` maps table headers (``"routing"``, ``"limits.sms"``) to keys that
        replace or extend that table's; unknown headers become new tables.
        """
        contacts = DEFAULT_CONTACTS if contacts is None else contacts
        email: dict[str, object] = {"host": self.smtp.host, "port": self.smtp.port}
        if self.smtp.auth is not None:
            email |= {"username": self.smtp.auth[0], "password": self.smtp.auth[1]}
        email |= {"sender": EMAIL_SENDER, "starttls": self.smtp.tls == "starttls"}
        if self.smtp.tls == "implicit":
            email["use_tls"] = True
        email["ca_file"] = self.smtp.ca_pem_path
        tables: list[tuple[str, Mapping[str, object]]] = [
            ("routing", {"order": ["whatsapp", "telegram", "sms", "voice", "email"]}),
            ("twilio", {"account_sid": self.twilio.account_sid,
                        "auth_token": self.twilio.auth_token, "api_base": self.twilio_url}),
            ("telegram", {"bot_token": self.telegram.bot_token, "api_base": self.telegram_url}),
            ("email", email),
            ("channels.whatsapp", {"sender": WHATSAPP_SENDER}),
            ("channels.sms", {"sender": PHONE_SENDER}),
            ("channels.voice", {"sender": PHONE_SENDER}),
            ("store", {"path": store_path}),
        ]  # fmt: skip
        if vonage:
            peer = self.vonage
            tables[2:2] = [("vonage", {
                "api_key": peer.api_key, "api_secret": peer.api_secret,
                "signature_secret": peer.signature_secret,
                "signature_method": peer.signature_method,
                "application_id": peer.application_id, "private_key": self.vonage_key_path,
                "api_base": self.vonage_url, "voice_api_base": self.vonage_url,
            })]
            tables += [("channels.sms.vonage", {"sender": VONAGE_SENDER}),
                       ("channels.voice.vonage", {"sender": VONAGE_SENDER})]
        tables += [(f"contacts.{toml_key(name)}", fields) for name, fields in contacts.items()]
        tables.append(("groups", {"ops": list(contacts)}))
        for header, extra in (overrides or {}).items():
            index = next((i for i, (name, _) in enumerate(tables) if name == header), None)
            if index is None:
                tables.append((header, extra))
            else:
                tables[index] = (header, {**tables[index][1], **extra})
        return "\n".join(
            f"[{header}]\n" + "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in body.items())
            for header, body in tables
        )


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}  # fmt: skip


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_string(text: str) -> str:
    """A TOML basic string; control characters are escaped, everything else kept."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
