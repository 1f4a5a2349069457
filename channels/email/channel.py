"""Email through an SMTP relay, with aiosmtplib: STARTTLS, implicit TLS and AUTH.

Sessions are kept open and reused (a new connection and TLS handshake per
message caps a sender at a few dozen messages a second), and each message is
sent step by step so that a failure is classified by the step it happened in:
anything before DATA certainly did not send; silence after the content may have.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate
from functools import lru_cache

import aiosmtplib

from config.sections import EmailSettings
from router.model.channel import Rendered
from router.model.outcome import Capabilities, Outcome, Scope, Verdict
from router.model.text import header_safe


class EmailChannel:
    """One plain-text email per recipient, ``Message-ID`` carrying the attempt id."""

    name = "email"

    def __init__(self, settings: EmailSettings) -> None:
        self._settings = settings
        self._domain = settings.sender.rpartition("@")[2]
        self._tls = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file else None
        )
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()
        self._open_slots = asyncio.Semaphore(settings.sessions)
        self.capabilities = Capabilities(
            max_length=None,
            failure_domains=frozenset({f"smtp:{settings.host}"}),
            reports_delivery=False,
            reports_acknowledgement=False,
        )

    async def send(self, address: str, message: Rendered, *, attempt_id: str) -> Outcome:
        started = time.monotonic()
        content = self._content(address, message, attempt_id)
        async with self._open_slots:
            outcome = await self._send_once(address, content, attempt_id, reuse=True)
        return outcome.timed(time.monotonic() - started)

    async def _send_once(
        self, address: str, content: bytes, attempt_id: str, *, reuse: bool
    ) -> Outcome:
        session: aiosmtplib.SMTP | None = None
        fresh = True
        try:
            if reuse and not self._idle.empty():
                session, fresh = self._idle.get_nowait(), False
            else:
                session = await self._connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            return Outcome.permanent(f"SMTP {exc.code}: credentials rejected", Scope.CHANNEL)
        except aiosmtplib.SMTPResponseException as exc:
            return _refused("connect", exc)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Outcome.transient(f"cannot reach the SMTP relay: {_describe(exc)}")
        step = "mail"
        try:
            await session.mail(self._settings.sender)
            step = "rcpt"
            await session.rcpt(address)
            step = "data"
            await session.data(content)
        except aiosmtplib.SMTPResponseException as exc:
            await self._recycle(session, reset=True)
            return _refused(step, exc)
        except (aiosmtplib.SMTPException, OSError) as exc:
            session.close()
            if step == "mail" and not fresh:
                # A pooled session the relay closed while idle: nothing was sent yet.
                return await self._send_once(address, content, attempt_id, reuse=False)
            if step == "data":
                return Outcome.unknown(f"SMTP connection lost during DATA: {_describe(exc)}")
            return Outcome.transient(f"SMTP connection lost at {step}: {_describe(exc)}")
        await self._recycle(session, reset=False)
        return Outcome.accepted(_message_id(attempt_id, self._domain))

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self._settings
        session = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            use_tls=settings.tls_mode == "implicit",
            start_tls=settings.tls_mode == "starttls",
            tls_context=self._tls,
            timeout=settings.timeout,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
        )
        await session.connect()
        return session

    async def _recycle(self, session: aiosmtplib.SMTP, *, reset: bool) -> None:
        if not session.is_connected:
            return
        if reset:
            try:
                await session.rset()
            except (aiosmtplib.SMTPException, OSError):
                session.close()
                return
        self._idle.put_nowait(session)

    def _content(self, address: str, message: Rendered, attempt_id: str) -> bytes:
        subject = message.subject or _subject(message.text)
        per_message = (
            f"To: {address}\r\nDate: {formatdate(usegmt=True)}\r\n"
            f"Message-ID: {_message_id(attempt_id, self._domain)}\r\n"
        )
        return per_message.encode() + _template(self._settings.sender, subject, message.text)

    async def check(self) -> Outcome:
        """Connect, EHLO, STARTTLS and AUTH as configured, then NOOP: sends nothing."""
        started = time.monotonic()
        session: aiosmtplib.SMTP | None = None
        try:
            session = await self._connect()
            await session.noop()
            await session.quit()
        except aiosmtplib.SMTPAuthenticationError as exc:
            outcome = Outcome.permanent(f"SMTP {exc.code}: credentials rejected", Scope.CHANNEL)
        except aiosmtplib.SMTPResponseException as exc:
            outcome = _refused("connect", exc)
        except (aiosmtplib.SMTPException, OSError) as exc:
            outcome = Outcome.transient(f"cannot reach the SMTP relay: {_describe(exc)}")
        else:
            outcome = Outcome.accepted(detail="relay answered")
        if session is not None and session.is_connected and not outcome.ok:
            session.close()  # NOOP failed after connecting: do not leak the connection
        return outcome.timed(time.monotonic() - started)

    async def aclose(self) -> None:
        while not self._idle.empty():
            session = self._idle.get_nowait()
            try:
                await session.quit()
            except (aiosmtplib.SMTPException, OSError):
                session.close()


def _refused(step: str, exc: aiosmtplib.SMTPResponseException) -> Outcome:
    detail = f"SMTP {exc.code} at {step.upper()}"
    if exc.code == 535:
        return Outcome.permanent(f"{detail}: credentials rejected", Scope.CHANNEL)
    if 400 <= exc.code < 500:
        scope = Scope.RECIPIENT if step == "rcpt" else Scope.CHANNEL
        return Outcome(Verdict.TRANSIENT, scope, f"{detail}: try again later")
    if step in ("rcpt", "data"):
        return Outcome.permanent(f"{detail}: recipient or content refused", Scope.RECIPIENT)
    return Outcome.permanent(f"{detail}: relay refused the sender", Scope.CHANNEL)


def _describe(exc: BaseException) -> str:
    reason = exc.strerror if isinstance(exc, OSError) else None
    return f"{type(exc).__name__} ({reason})" if reason else type(exc).__name__


def _message_id(attempt_id: str, domain: str) -> str:
    return f"<{attempt_id}@{domain}>"


def _subject(text: str) -> str:
    # A given subject was checked (router.model.message); one taken from the body may
    # still hold controls that a relay would choke on.
    first_line = header_safe(text.strip().splitlines()[0]) if text.strip() else "Message"
    return first_line if len(first_line) <= 78 else first_line[:75] + "..."


@lru_cache(maxsize=64)
def _template(sender: str, subject: str, text: str) -> bytes:
    """The encoded message without its per-recipient headers, built once per text.

    The standard library needs over a millisecond of CPU to build and encode a
    message; a broadcast sends the same words to every recipient, so only To,
    Date and Message-ID are written per message.
    """
    mail = EmailMessage(policy=SMTP_POLICY)
    mail["From"] = sender
    mail["Subject"] = subject
    mail["Auto-Submitted"] = "auto-generated"
    # Quoted-printable keeps non-ASCII text 7-bit clean for relays without 8BITMIME.
    mail.set_content(text, cte=None if text.isascii() else "quoted-printable")
    return mail.as_bytes()
