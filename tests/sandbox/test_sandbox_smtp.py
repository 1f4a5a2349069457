"""The SMTP peer through aiosmtplib, over real sockets and real TLS."""

from __future__ import annotations

import asyncio
import ssl
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from sandbox_helpers import eventually

from router.sandbox.faults import Fault
from router.sandbox.smtp import SmtpPeer

AUTH = ("demo", "demo-password")


def message(to: str = "alice@example.com", subject: str = "disk full") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alerts@backchannel.test"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = "<attempt-42@backchannel.test>"
    msg.set_content("db1 is at 99%")
    return msg


def client(peer: SmtpPeer, **kwargs: object) -> aiosmtplib.SMTP:
    options: dict[str, object] = {
        "hostname": "127.0.0.1", "port": peer.port, "timeout": 2.0,
        "tls_context": peer.client_context(),
    }  # fmt: skip
    if peer.tls == "starttls":
        options["start_tls"] = True
    if peer.tls == "implicit":
        options["use_tls"] = True
    if peer.tls == "none":
        options["start_tls"] = False
    if peer.auth:
        options["username"], options["password"] = peer.auth
    options.update(kwargs)
    return aiosmtplib.SMTP(**options)  # type: ignore[arg-type]


async def send(peer: SmtpPeer, msg: EmailMessage | None = None, **kwargs: object) -> None:
    smtp = client(peer, **kwargs)
    await smtp.connect()
    try:
        await smtp.send_message(msg or message())
    finally:
        if smtp.is_connected:
            await smtp.quit()


async def test_starttls_and_auth(smtp_peer: SmtpPeer) -> None:
    await send(smtp_peer)
    (mail,) = smtp_peer.received
    assert mail.mail_from == "alerts@backchannel.test"
    assert mail.rcpt_tos == ("alice@example.com",)
    assert mail.subject == "disk full"
    assert mail.message_id == "<attempt-42@backchannel.test>"
    assert mail.text.strip() == "db1 is at 99%"
    assert mail.outcome == "accepted"
    await eventually(lambda: smtp_peer.log[-1].command == "disconnect")
    commands = [e.command for e in smtp_peer.log]
    assert commands[:4] == ["connect", "EHLO", "STARTTLS", "EHLO"]
    assert commands[4:] == ["AUTH", "MAIL", "RCPT", "DATA", "QUIT", "disconnect"]
    assert smtp_peer.log[4].reply.startswith("235")
    assert "demo-password" not in repr(smtp_peer.log)


async def test_starttls_is_required_and_the_ca_is_needed(smtp_peer: SmtpPeer) -> None:
    with pytest.raises(aiosmtplib.SMTPException):
        await send(smtp_peer, start_tls=False)
    with pytest.raises(ssl.SSLCertVerificationError):
        await send(smtp_peer, tls_context=ssl.create_default_context())
    assert smtp_peer.received == []


async def test_bad_password_is_535(smtp_peer: SmtpPeer) -> None:
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
        await send(smtp_peer, password="wrong")
    assert caught.value.code == 535
    assert smtp_peer.received == []


async def test_implicit_tls() -> None:
    async with SmtpPeer(tls="implicit", auth=AUTH) as peer:
        await send(peer)
        assert len(peer.received) == 1
        assert "STARTTLS" not in [e.command for e in peer.log]


async def test_plain_without_auth() -> None:
    async with SmtpPeer(tls="none") as peer:
        await send(peer)
        assert peer.received[0].rcpt_tos == ("alice@example.com",)


async def test_health_probe_records_no_message(smtp_peer: SmtpPeer) -> None:
    smtp = client(smtp_peer)
    await smtp.connect()
    await smtp.noop()
    await smtp.quit()
    await eventually(lambda: smtp_peer.log[-1].command == "disconnect")
    assert [e.command for e in smtp_peer.log if e.command not in ("EHLO", "STARTTLS", "AUTH")] == [
        "connect", "NOOP", "QUIT", "disconnect"
    ]  # fmt: skip
    assert smtp_peer.received == []


async def test_rejected_recipient_is_550_at_rcpt(smtp_peer: SmtpPeer) -> None:
    smtp_peer.faults.fail("email", Fault.reject_recipient(), address="Bob@example.com")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as caught:
        await send(smtp_peer, message(to="bob@example.com"))
    assert caught.value.recipients[0].code == 550
    assert "5.1.1" in caught.value.recipients[0].message
    await send(smtp_peer)
    assert [m.rcpt_tos for m in smtp_peer.received] == [("alice@example.com",)]


async def test_rate_limited_is_451_at_mail(smtp_peer: SmtpPeer) -> None:
    smtp_peer.faults.fail("email", Fault.rate_limited(), times=1)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
        await send(smtp_peer)
    assert caught.value.code == 451
    assert "rate limited" in caught.value.message


async def test_smtp_fault_at_data(smtp_peer: SmtpPeer) -> None:
    smtp_peer.faults.fail("email", Fault.smtp(554, "5.7.1 spam", stage="data"), times=1)
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        await send(smtp_peer)
    assert caught.value.code == 554
    assert smtp_peer.received == []


async def test_stall_after_data_times_out_the_client(smtp_peer: SmtpPeer) -> None:
    smtp_peer.faults.fail("email", Fault.stall(), times=1)
    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        await send(smtp_peer, timeout=0.5)
    assert [m.outcome for m in smtp_peer.received] == ["stall"]


async def test_drop_after_data_disconnects(smtp_peer: SmtpPeer) -> None:
    smtp_peer.faults.fail("email", Fault.drop(), times=1)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await send(smtp_peer)
    assert [m.outcome for m in smtp_peer.received] == ["drop"]
    assert "drop" in [e.command for e in smtp_peer.log]


async def test_refuse_and_restore_on_the_same_port(smtp_peer: SmtpPeer) -> None:
    port = smtp_peer.port
    await smtp_peer.refuse()
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await send(smtp_peer)
    await smtp_peer.restore()
    assert smtp_peer.port == port
    await send(smtp_peer)
    assert len(smtp_peer.received) == 1


async def test_close_removes_the_ca_file_and_ends_stalled_sessions() -> None:
    peer = SmtpPeer(tls="none")
    await peer.start()
    ca = Path(peer.ca_pem_path)
    pem = await asyncio.to_thread(ca.read_text)
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    peer.faults.fail("email", Fault.stall())
    sending = asyncio.create_task(send(peer, timeout=30.0))
    await eventually(lambda: len(peer.received) == 1)
    await peer.close()
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await sending
    assert not await asyncio.to_thread(ca.exists)
