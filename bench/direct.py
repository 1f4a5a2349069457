"""The baselines: the same client libraries the router uses, called directly.

Each loop uses its library the way the library's documentation recommends for
throughput, at the router's concurrency, against the same peers. A weak baseline
would flatter every ratio, so none of them does work the router avoids:

- Twilio: one ``Client`` over one ``AsyncTwilioHttpClient`` (its pooled aiohttp
  session), ``messages.create_async``. twilio has no base-URL setting; the only
  change is the URL rewrite in ``request`` (the seam ``channels/twilio/account.py`` uses).
- Telegram: one ``Bot`` with ``HTTPXRequest(connection_pool_size=concurrency)``,
  ``send_message``.
- Vonage SMS: aiohttp (the client the router ships; Vonage's own SDK is synchronous, see
  ``bench/vonage_sdk.py``), one pooled session sized to the concurrency, a form POST to
  ``/sms/json`` with the fields the router sends (credentials, from, to, text and a
  ``client-ref``), and the JSON answer's status read.
- Email: aiosmtplib, as many persistent sessions as the router keeps
  (``[email] sessions``), each sending one message after another with
  ``sendmail``. The MIME body is built once with the standard library and only the
  per-recipient headers are written per message, as the router does (building an
  ``EmailMessage`` per recipient costs over a millisecond of CPU).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import aiosmtplib
from telegram import Bot
from telegram.error import TelegramError
from telegram.request import HTTPXRequest
from twilio.base.exceptions import TwilioException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from bench.common import pool


class LocalTwilioHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's own async client, sending to ``api_base`` instead of api.twilio.com."""

    def __init__(self, api_base: str) -> None:
        super().__init__()  # pool_connections=True: one shared aiohttp session
        base = urlsplit(api_base)
        self._scheme, self._netloc = base.scheme, base.netloc

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts = urlsplit(url)
        local = urlunsplit((self._scheme, self._netloc, parts.path, parts.query, parts.fragment))
        response: Response = await super().request(method, local, *args, **kwargs)
        return response


class DirectSms:
    """``async with DirectSms(config) as sms: await sms.run(numbers, text, concurrency)``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._twilio = config["twilio"]
        self._sender = str(config["channels"]["sms"]["sender"])
        self._http: LocalTwilioHttpClient | None = None
        self._client: Any = None

    async def __aenter__(self) -> DirectSms:
        self._http = LocalTwilioHttpClient(str(self._twilio["api_base"]))
        self._client = Client(
            self._twilio["account_sid"], self._twilio["auth_token"], http_client=self._http
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()

    async def run(self, numbers: Sequence[str], text: str, concurrency: int) -> int:
        messages = self._client.messages

        async def send(number: str) -> bool:
            try:
                await messages.create_async(to=number, from_=self._sender, body=text)
            except TwilioException:
                return False
            return True

        return await pool(concurrency, numbers, send)


class DirectVonageSms:
    """``async with DirectVonageSms(config, concurrency) as sms: await sms.run(...)``."""

    def __init__(self, config: dict[str, Any], concurrency: int) -> None:
        vonage = config["vonage"]
        self._url = str(vonage["api_base"]).rstrip("/") + "/sms/json"
        self._credentials = {"api_key": str(vonage["api_key"]),
                             "api_secret": str(vonage["api_secret"])}
        self._sender = str(config["channels"]["sms"]["vonage"]["sender"]).removeprefix("+")
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DirectVonageSms:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def run(self, numbers: Sequence[str], text: str, concurrency: int) -> int:
        session = self._session
        assert session is not None

        async def send(item: tuple[int, str]) -> bool:
            index, number = item
            form = {**self._credentials, "from": self._sender, "to": number.removeprefix("+"),
                    "text": text, "client-ref": f"direct-{index}"}
            try:
                async with session.post(self._url, data=form) as response:
                    answer = await response.json()
            except (aiohttp.ClientError, ValueError):
                return False
            return all(part.get("status") == "0" for part in answer.get("messages", []))

        return await pool(concurrency, enumerate(numbers), send)


class DirectTelegram:
    """python-telegram-bot's ``Bot.send_message`` over a pool sized to the concurrency."""

    def __init__(self, config: dict[str, Any], concurrency: int) -> None:
        telegram = config["telegram"]
        self._bot = Bot(
            telegram["bot_token"],
            base_url=str(telegram["api_base"]).rstrip("/") + "/bot",
            request=HTTPXRequest(connection_pool_size=concurrency),
        )

    async def __aenter__(self) -> DirectTelegram:
        await self._bot.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._bot.shutdown()

    async def run(self, chat_ids: Sequence[int], text: str, concurrency: int) -> int:
        bot = self._bot

        async def send(chat_id: int) -> bool:
            try:
                await bot.send_message(chat_id=chat_id, text=text)
            except TelegramError:
                return False
            return True

        return await pool(concurrency, chat_ids, send)


class DirectEmail:
    """aiosmtplib with ``sessions`` persistent sessions, one worker per session."""

    def __init__(self, config: dict[str, Any], sessions: int = 4) -> None:
        self._email = config["email"]
        self._sessions = sessions
        self._open: list[aiosmtplib.SMTP] = []

    async def __aenter__(self) -> DirectEmail:
        email = self._email
        context = ssl.create_default_context(cafile=email.get("ca_file"))
        for _ in range(self._sessions):
            session = aiosmtplib.SMTP(
                hostname=email["host"], port=int(email["port"]),
                start_tls=bool(email.get("starttls")), use_tls=bool(email.get("use_tls")),
                tls_context=context, username=email.get("username"),
                password=email.get("password"),
            )
            await session.connect()
            self._open.append(session)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in self._open:
            try:
                await session.quit()
            except (aiosmtplib.SMTPException, OSError):
                session.close()

    async def run(self, addresses: Sequence[str], text: str, subject: str) -> int:
        sender = str(self._email["sender"])
        domain = sender.rpartition("@")[2]
        mail = EmailMessage(policy=SMTP_POLICY)
        mail["From"], mail["Subject"] = sender, subject
        mail.set_content(text)
        body = mail.as_bytes()
        idle = list(self._open)

        async def send(address: str) -> bool:
            session = idle.pop()
            try:
                headers = (
                    f"To: {address}\r\nDate: {formatdate(usegmt=True)}\r\n"
                    f"Message-ID: {make_msgid(domain=domain)}\r\n"
                )
                await session.sendmail(sender, [address], headers.encode() + body)
            except (aiosmtplib.SMTPException, OSError):
                return False
            finally:
                idle.append(session)
            return True

        # One worker per session: each session sends its messages back to back.
        return await pool(len(self._open), addresses, send)
