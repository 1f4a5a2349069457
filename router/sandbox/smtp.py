"""An SMTP peer: aiosmtpd in the caller's event loop, with STARTTLS or implicit TLS
from a throwaway ``trustme`` CA, AUTH PLAIN/LOGIN, a record of every message and
SMTP event, and scripted faults (channel key "email", address = recipient)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import socket
import ssl
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal, NoReturn, cast

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from router.sandbox._net import arm_reset, listen_socket
from router.sandbox._service import Service
from router.sandbox.faults import Fault, FaultBook

TlsMode = Literal["none", "starttls", "implicit"]
_HOSTNAME = "smtp.sandbox.backchannel.test"


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """A message the peer took in (answered 250, or recorded before a stall or drop)."""

    time: float
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message: EmailMessage
    outcome: Literal["accepted", "stall", "drop"] = "accepted"

    @property
    def subject(self) -> str | None:
        value = self.message["Subject"]
        return None if value is None else str(value)

    @property
    def message_id(self) -> str | None:
        value = self.message["Message-ID"]
        return None if value is None else str(value)

    @property
    def text(self) -> str:
        """The plain-text body."""
        part = self.message.get_body(("plain",))
        return "" if part is None else cast(EmailMessage, part).get_content()


@dataclass(frozen=True, slots=True)
class SmtpEvent:
    """One step of an SMTP session: a command and its reply, or a connection event."""

    time: float
    peer: str
    command: str
    """connect, EHLO, HELO, STARTTLS, AUTH, MAIL, RCPT, DATA, NOOP, RSET, QUIT,
    disconnect, stall or drop."""
    argument: str = ""
    reply: str = ""


class SmtpPeer(Service):
    """A local SMTP relay. ``async with SmtpPeer(auth=("demo", "pw")) as smtp:``.

    With ``auth`` set, AUTH is required before MAIL; with ``tls="starttls"`` STARTTLS
    is required first. Clients trust ``ca_pem_path`` (or :meth:`client_context`).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TlsMode = "starttls",
        auth: tuple[str, str] | None = None,
        latency: float = 0.0,
        timeout: float = 300.0,
    ) -> None:
        if tls not in ("none", "starttls", "implicit"):
            raise ValueError(f"tls must be none, starttls or implicit, not {tls!r}")
        self.host = host
        self.tls: TlsMode = tls
        self.auth = auth
        self.latency = latency
        self.faults = FaultBook(
            ("email",), ("smtp", "rate_limited", "stall", "drop", "reject_recipient"),
            normalize=str.lower,
        )  # fmt: skip
        self.received: list[ReceivedMail] = []
        self.log: list[SmtpEvent] = []
        self._port = port
        self._timeout = timeout
        self._server: asyncio.Server | None = None
        self._sessions: set[SMTP] = set()
        self._hooks = _Hooks(self)
        self._tmpdir: Path | None = None
        self._server_context: ssl.SSLContext | None = None

    # Lifecycle ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._tmpdir is None:
            raise RuntimeError("the peer has not been started")
        return self._port

    @property
    def ca_pem_path(self) -> str:
        """The CA certificate clients should trust (removed when the peer closes)."""
        if self._tmpdir is None:
            raise RuntimeError("the peer has not been started")
        return str(self._tmpdir / "ca.pem")

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this peer's certificate."""
        return ssl.create_default_context(cafile=self.ca_pem_path)

    @property
    def refused(self) -> bool:
        return self._tmpdir is not None and self._server is None

    async def start(self) -> None:
        if self._tmpdir is not None:
            raise RuntimeError("the peer is already started")
        ca = trustme.CA(organization_name="backchannel sandbox")
        cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
        self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self._server_context)
        self._tmpdir = Path(tempfile.mkdtemp(prefix="backchannel-sandbox-"))
        ca.cert_pem.write_to_path(str(self._tmpdir / "ca.pem"))
        try:
            await self._listen()
        except BaseException:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            raise

    async def close(self) -> None:
        try:
            await self.refuse()
        finally:
            self.discard_files()

    def discard_files(self) -> None:
        """Remove the CA file and its directory (``close`` does; safe at any time)."""
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    async def refuse(self) -> None:
        """Stop listening and drop open sessions, as if the relay went away."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for session in list(self._sessions):
            if isinstance(session.transport, asyncio.Transport):
                session.transport.abort()
        await server.wait_closed()

    async def restore(self) -> None:
        """Listen again, on the same port."""
        if self._server is None and self._tmpdir is not None:
            await self._listen()

    async def _listen(self) -> None:
        sock = listen_socket(self.host, self._port)
        self._port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        ssl_context = self._server_context if self.tls == "implicit" else None
        try:
            self._server = await loop.create_server(self._protocol, sock=sock, ssl=ssl_context)
        except BaseException:
            sock.close()
            raise

    def _protocol(self) -> SMTP:
        loop = asyncio.get_running_loop()
        with warnings.catch_warnings():
            # aiosmtpd warns when AUTH does not wait for STARTTLS; with implicit TLS the
            # whole session is encrypted, and with tls="none" plain AUTH is the point.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return _SandboxSMTP(
                self,
                self._hooks,
                hostname=_HOSTNAME,
                ident="backchannel sandbox ESMTP",
                tls_context=self._server_context if self.tls == "starttls" else None,
                require_starttls=self.tls == "starttls",
                auth_required=self.auth is not None,
                auth_require_tls=self.tls == "starttls",
                authenticator=self._hooks.authenticate if self.auth else None,
                auth_exclude_mechanism=None if self.auth else ("LOGIN", "PLAIN"),
                enable_SMTPUTF8=True,
                timeout=self._timeout,
                loop=loop,
            )

    def event(self, session: Session, command: str, argument: str = "", reply: str = "") -> None:
        peer = session.peer
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.log.append(SmtpEvent(time.time(), where, command, argument, reply))


class _SandboxSMTP(SMTP):
    """aiosmtpd's protocol, telling the peer which sessions are open."""

    def __init__(self, peer: SmtpPeer, handler: _Hooks, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._peer = peer

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # STARTTLS calls this again with the TLS transport
        sock = transport.get_extra_info("socket")
        if first and sock is not None:
            # Multi-line replies otherwise wait on the client's delayed ACK (40 ms each).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        if first and self.session is not None:
            self._peer._sessions.add(self)
            self._peer.event(self.session, "connect")

    def connection_lost(self, error: Exception | None) -> None:
        self._peer._sessions.discard(self)
        if self.session is not None:
            self._peer.event(self.session, "disconnect", "" if error is None else str(error))
        super().connection_lost(error)


class _Session(Session):
    """aiosmtpd sets its own deprecated ``login_data`` after every AUTH and logs a
    warning each time; the sandbox keeps the value without the noise."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _Hooks:
    """aiosmtpd handler hooks: log each step, inject faults, record messages."""

    def __init__(self, peer: SmtpPeer) -> None:
        self.peer = peer

    async def _reply(self, session: Session, command: str, argument: str, reply: str) -> str:
        if self.peer.latency > 0:
            await asyncio.sleep(self.peer.latency)
        self.peer.event(session, command, argument, reply)
        return reply

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        expected = self.peer.auth
        good = (
            expected is not None
            and isinstance(data, LoginPassword)
            and (data.login, data.password) == (expected[0].encode(), expected[1].encode())
        )
        login = data.login.decode(errors="replace") if isinstance(data, LoginPassword) else ""
        reply = (
            "235 2.7.0 Authentication successful"
            if good
            else "535 5.7.8 Authentication credentials invalid"
        )
        self.peer.event(session, "AUTH", f"{mechanism} {login}", reply)
        return AuthResult(success=good, handled=False, message=reply)

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:
        self.peer.event(session, "STARTTLS", "", "220 Ready to start TLS")
        return True

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:  # fmt: skip
        session.host_name = hostname
        await self._reply(session, "EHLO", hostname, responses[0])
        return responses

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        session.host_name = hostname
        return await self._reply(session, "HELO", hostname, f"250 {_HOSTNAME}")

    async def handle_NOOP(
        self, server: SMTP, session: Session, envelope: Envelope, arg: str
    ) -> str:
        return await self._reply(session, "NOOP", arg, "250 2.0.0 OK")

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return await self._reply(session, "RSET", "", "250 2.0.0 OK")

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return await self._reply(session, "QUIT", "", "221 2.0.0 Bye")

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        options: list[str],
    ) -> str:  # fmt: skip
        fault = self.peer.faults.take("email", None, where=_at_stage("mail"))
        if fault is None:
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return await self._reply(session, "MAIL", address, _fault_reply(fault, address, "2.1.0"))

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        options: list[str],
    ) -> str:  # fmt: skip
        fault = self.peer.faults.take("email", address, where=_at_stage("rcpt"))
        if fault is None:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return await self._reply(session, "RCPT", address, _fault_reply(fault, address, "2.1.5"))

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = None
        for rcpt in envelope.rcpt_tos:
            fault = self.peer.faults.take("email", rcpt, where=_at_stage("data"))
            if fault is not None:
                break
        if fault is not None and fault.kind == "smtp":
            return await self._reply(session, "DATA", "", _fault_reply(fault, "", ""))
        data = envelope.original_content or b""
        outcome: Literal["accepted", "stall", "drop"] = "accepted" if fault is None else "stall"
        if fault is not None and fault.kind == "drop":
            outcome = "drop"
        message = email.message_from_bytes(data, policy=email.policy.default)
        self.peer.received.append(
            ReceivedMail(
                time.time(), str(envelope.mail_from), tuple(envelope.rcpt_tos), data,
                message, outcome,
            )
        )  # fmt: skip
        if outcome != "accepted":
            await self._hang_up(server, session, outcome)
        return await self._reply(
            session, "DATA", "", f"250 2.0.0 Ok: queued as {uuid.uuid4().hex[:12].upper()}"
        )

    async def _hang_up(self, server: SMTP, session: Session, how: str) -> NoReturn:
        """Never send the final reply: stall until the client leaves (or the peer stops),
        or drop the connection with a reset. Either way the session task is cancelled."""
        self.peer.event(session, how)
        if how == "drop" and isinstance(server.transport, asyncio.Transport):
            arm_reset(server.transport.get_extra_info("socket"))
            server.transport.abort()
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")  # pragma: no cover


def _at_stage(stage: str) -> Callable[[Fault], bool]:
    """Which faults an SMTP step can inject."""
    kinds = {"mail": ("rate_limited",), "rcpt": ("reject_recipient",), "data": ("stall", "drop")}

    def applies(fault: Fault) -> bool:
        return fault.kind in kinds[stage] or (fault.kind == "smtp" and fault.stage == stage)

    return applies


def _fault_reply(fault: Fault | None, address: str, ok_status: str) -> str:
    if fault is None:
        return f"250 {ok_status} Ok"
    if fault.kind == "rate_limited":
        return "451 4.7.1 rate limited, try again later"
    if fault.kind == "reject_recipient":
        text = fault.message or f"5.1.1 <{address}>: Recipient address rejected: User unknown"
        return f"{fault.code or 550} {text}"
    default = "4.3.0 temporary failure" if (fault.code or 0) < 500 else "5.0.0 rejected"
    return f"{fault.code} {fault.message or default}"
