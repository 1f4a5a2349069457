"""The adapter contract (design.md sections 3, 4, 8 and 9), over all five adapters.

Every adapter is built the way the product builds it (a sandbox config, parsed and
validated, then ``router.registry.build_providers`` inside the running loop) and
talks through its real client library (twilio, python-telegram-bot, aiosmtplib) to
the sandbox peers over real sockets. Each row of the classification table is one
test per channel, and each asserts three things: the verdict and scope exactly, a
detail a person can act on that leaks no credential, and what the peer recorded,
because the peers' logs are what a provider would have done.

A few tests put a plain aiohttp server where the provider should be (a gateway or
captive portal answering on its behalf), for answers no sandbox peer gives.
"""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from config.settings import Settings, settings_from_mapping
from router.model.channel import Channel, Rendered
from router.model.outcome import Outcome, Scope, Verdict
from router.registry import Providers, build_providers
from router.sandbox import EMAIL_SENDER, PHONE_SENDER, WHATSAPP_SENDER, Fault, Sandbox
from router.sandbox.proxy import TcpProxy
from router.sandbox.smtp import ReceivedMail, SmtpPeer
from router.sandbox.telegram import DEFAULT_BOT_TOKEN
from router.sandbox.twilio import DEFAULT_AUTH_TOKEN

CHANNELS = ("whatsapp", "sms", "voice", "telegram", "email")
TWILIO_CHANNELS = ("whatsapp", "sms", "voice")

PHONE = "+33612345678"
CHAT = "111111111"
MAILBOX = "alice@example.com"
ADDRESS = {"whatsapp": PHONE, "sms": PHONE, "voice": PHONE, "telegram": CHAT, "email": MAILBOX}
"""What the router hands each adapter (config.contacts addresses)."""
PROVIDER_TO = {**ADDRESS, "whatsapp": "whatsapp:" + PHONE}
"""The recipient as the provider records it."""

# Markup characters must arrive as written: escaped in TwiML, not parsed by Telegram.
TEXT = 'Disk <full> on "db1" & it\'s at 99% \u2014 caf\u00e9 \u2713'
SUBJECT = 'db1: disk <full> & "rising"'
SMTP_AUTH = ("demo", "demo-password")

WRONG_AUTH_TOKEN = "f" * 32
WRONG_BOT_TOKEN = "123456789:WrongSecretWrongSecretWrongSecret00"
WRONG_SMTP_PASSWORD = "not-the-demo-password"

GENEROUS: dict[str, dict[str, object]] = {
    "twilio": {"timeout": 30.0, "connect_timeout": 30.0},
    "telegram": {"timeout": 30.0, "connect_timeout": 30.0},
    "email": {"timeout": 30.0},
}
"""Timeouts no busy machine reaches: an answer that is coming must never be cut short.
A test that waits for a timeout on purpose (a stall, a blackhole) shortens the one it
waits for with :func:`expiring`."""

TWILIO_SID = {"whatsapp": r"SM[0-9a-f]{32}", "sms": r"SM[0-9a-f]{32}", "voice": r"CA[0-9a-f]{32}"}
TRANSPORT_SECTION = {
    "whatsapp": "twilio", "sms": "twilio", "voice": "twilio", "telegram": "telegram",
    "email": "email",
}  # fmt: skip

Overrides = Mapping[str, Mapping[str, object]]


# Building adapters the way the product does ---------------------------------------------


def make_settings(
    sb: Sandbox, only: str | None = None, overrides: Overrides | None = None
) -> Settings:
    """The sandbox's own config with generous timeouts, then ``overrides`` by (dotted) table;
    a None value removes a key. With ``only``, just that channel's transport is enabled
    (the three Twilio channels come together: they share one account)."""
    data: dict[str, Any] = tomllib.loads(sb.config_toml())
    if only is not None:
        keep = TRANSPORT_SECTION[only]
        for section in ("twilio", "telegram", "email"):
            if section != keep:
                del data[section]
        if keep != "twilio":
            del data["channels"]
    generous = {section: values for section, values in GENEROUS.items() if section in data}
    for layer in (generous, overrides or {}):
        for section, values in layer.items():
            table = data
            for part in section.split("."):
                table = table[part]
            for key, value in values.items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
    return settings_from_mapping(data)


@dataclass(slots=True)
class Rig:
    """The adapters built from one config, and the credentials they must never show."""

    settings: Settings
    built: Providers

    def __getitem__(self, name: str) -> Channel:
        return self.built.channels[name]

    async def send(
        self, name: str, text: str = TEXT, *, attempt_id: str = "att_contract_0001",
        address: str | None = None,
    ) -> Outcome:  # fmt: skip
        rendered = Rendered(text, SUBJECT)
        outcome = await self[name].send(address or ADDRESS[name], rendered, attempt_id=attempt_id)
        self.assert_clean(outcome)
        return outcome

    async def check(self, name: str) -> Outcome:
        outcome = await self[name].check()
        self.assert_clean(outcome)
        return outcome

    def assert_clean(self, outcome: Outcome) -> None:
        """Every outcome explains itself and shows no credential (design.md section 10)."""
        assert isinstance(outcome, Outcome)
        assert outcome.detail.strip() or outcome.provider_id, outcome
        secrets = [*self.settings.secrets(), *SANDBOX_SECRETS]
        shown = f"{outcome.detail} {outcome.provider_id or ''}".casefold()
        for secret in secrets:
            # Case-insensitively: python-telegram-bot recases some error descriptions.
            assert secret.casefold() not in shown, f"a credential leaked into {outcome!r}"
        assert outcome.elapsed >= 0


SANDBOX_SECRETS = (
    DEFAULT_AUTH_TOKEN, DEFAULT_BOT_TOKEN, DEFAULT_BOT_TOKEN.partition(":")[2], SMTP_AUTH[1]
)  # fmt: skip
"""The right credentials, which must not show either when a wrong one is configured."""


@asynccontextmanager
async def rig(
    sb: Sandbox, only: str | None, overrides: Overrides | None = None
) -> AsyncIterator[Rig]:
    """Adapters for one channel's transport (``only``), or for all five (None)."""
    settings = make_settings(sb, only, overrides)
    built = build_providers(settings)  # inside the running loop, as the product does
    try:
        expected = (
            CHANNELS if only is None
            else TWILIO_CHANNELS if only in TWILIO_CHANNELS
            else (only,)
        )  # fmt: skip
        assert set(built.channels) == set(expected)
        yield Rig(settings, built)
    finally:
        await built.aclose()


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sandbox:
        yield sandbox


# What the peers recorded ----------------------------------------------------------------


def spoken(twiml: str | None) -> str:
    """The text a call reads out: the <Say> element, parsed as XML (unescaped)."""
    assert twiml is not None
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    (say,) = root.iter("Say")
    return say.text or ""


def recorded(sb: Sandbox, name: str) -> list[tuple[str, str]]:
    """(recipient, text) of everything the provider took on a channel, in order."""
    if name == "voice":
        return [(call.to, spoken(call.twiml)) for call in sb.twilio.sent("voice")]
    if name in ("whatsapp", "sms"):
        return [(message.to, message.body) for message in sb.twilio.sent(name)]
    if name == "telegram":
        return [(str(sent.chat_id), sent.text) for sent in sb.telegram.sent]
    return [(rcpt, mail_text(mail)) for mail in sb.smtp.received for rcpt in mail.rcpt_tos]


def mail_text(mail: ReceivedMail) -> str:
    """The plain-text body as written: SMTP lines end in CRLF on the wire, and
    set_content() ends a text body with one line break."""
    return mail.text.replace("\r\n", "\n").removesuffix("\n")


def nothing_sent_anywhere(sb: Sandbox) -> bool:
    return all(not recipients for recipients in sb.received().values())


def requests_seen(sb: Sandbox, name: str) -> int:
    """Requests (HTTP) or sessions (SMTP) that reached the provider for this channel."""
    if name in TWILIO_CHANNELS:
        return len(sb.twilio.requests)
    if name == "telegram":
        return len(sb.telegram.requests)
    return sum(1 for event in sb.smtp.log if event.command == "connect")


def smtp_commands(peer: SmtpPeer) -> list[str]:
    return [event.command for event in peer.log]


def fail(sb: Sandbox, name: str, fault: Fault) -> None:
    """Script the next request of a channel to fail (the Twilio peer tells the three
    Twilio channels apart by the ``whatsapp:`` prefix and the Calls resource)."""
    if name in TWILIO_CHANNELS:
        sb.twilio.faults.fail(name, fault, times=1)
    elif name == "telegram":
        sb.telegram.faults.fail("telegram", fault, times=1)
    else:
        sb.smtp.faults.fail("email", fault, times=1)


async def refuse(sb: Sandbox, name: str) -> None:
    if name in TWILIO_CHANNELS:
        await sb.twilio.refuse()
    elif name == "telegram":
        await sb.telegram.refuse()
    else:
        await sb.smtp.refuse()


def peer_port(sb: Sandbox, name: str) -> int:
    if name in TWILIO_CHANNELS:
        return sb.twilio.port
    return sb.telegram.port if name == "telegram" else sb.smtp.port


def endpoint(name: str, host: str, port: int, *, scheme: str = "http") -> Overrides:
    """Config overrides that point one channel's transport at ``host:port``."""
    section = TRANSPORT_SECTION[name]
    if section == "email":
        return {"email": {"host": host, "port": port}}
    return {section: {"api_base": f"{scheme}://{host}:{port}"}}


def expiring(name: str, key: str = "timeout", seconds: float = 0.3) -> Overrides:
    """A shorter timeout for a test that waits for one on purpose (SMTP has one timeout)."""
    section = TRANSPORT_SECTION[name]
    return {section: {"timeout" if section == "email" else key: seconds}}


def merged(*layers: Overrides) -> Overrides:
    result: dict[str, dict[str, object]] = {}
    for layer in layers:
        for section, values in layer.items():
            result.setdefault(section, {}).update(values)
    return result


def assert_failed(
    outcome: Outcome, verdict: Verdict, scope: Scope, *, retry_after: float | None = None
) -> None:
    assert (outcome.verdict, outcome.scope) == (verdict, scope), outcome
    assert outcome.retry_after == retry_after, outcome
    assert outcome.provider_id is None
    assert outcome.detail.strip(), outcome
    assert not outcome.ok


async def eventually(check: Callable[[], bool], within: float = 60.0) -> None:
    """Poll until ``check()`` holds (a bound against hanging, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


channels = pytest.mark.parametrize("name", CHANNELS)
twilio_channels = pytest.mark.parametrize("name", TWILIO_CHANNELS)
http_channels = pytest.mark.parametrize("name", [*TWILIO_CHANNELS, "telegram"])


# Row 1: accepted --------------------------------------------------------------------------


@channels
async def test_accepted(sb: Sandbox, name: str) -> None:
    async with rig(sb, name) as r:
        outcome = await r.send(name, attempt_id="att_0001contract")
    assert outcome.verdict is Verdict.ACCEPTED and outcome.ok
    assert outcome.scope is Scope.CHANNEL
    assert outcome.retry_after is None
    assert outcome.provider_id
    assert not outcome.counts_against_channel
    # Exactly one message, to the right address, with the text as written.
    assert recorded(sb, name) == [(PROVIDER_TO[name], TEXT)]
    assert sum(len(r) for r in sb.received().values()) == 1

    if name in ("whatsapp", "sms"):
        (message,) = sb.twilio.sent(name)
        assert re.fullmatch(TWILIO_SID[name], outcome.provider_id)
        assert outcome.provider_id == message.sid
        assert message.from_ == (WHATSAPP_SENDER if name == "whatsapp" else PHONE_SENDER)
    elif name == "voice":
        (call,) = sb.twilio.sent("voice")
        assert re.fullmatch(TWILIO_SID["voice"], outcome.provider_id)
        assert outcome.provider_id == call.sid
        assert call.from_ == PHONE_SENDER
        # Markup in the text is spoken, not interpreted: one <Say>, nothing else inside.
        root = ET.fromstring(call.twiml or "")
        (say,) = root.iter("Say")
        assert list(say) == []
        assert say.get("loop") == "2"
    elif name == "telegram":
        (sent,) = sb.telegram.sent
        assert outcome.provider_id == f"{CHAT}/{sent.message_id}"
        assert sent.parse_mode is None  # plain text: "<full>" must not be parsed as HTML
    else:
        (mail,) = sb.smtp.received
        assert mail.outcome == "accepted"
        assert mail.mail_from == EMAIL_SENDER
        assert mail.rcpt_tos == (MAILBOX,)
        assert mail.subject == SUBJECT
        assert mail.message_id == outcome.provider_id
        assert "att_0001contract" in outcome.provider_id
        assert mail.message["To"] == MAILBOX
        assert mail.message["From"] == EMAIL_SENDER


async def test_voice_text_with_twiml_tags_is_spoken_literally(sb: Sandbox) -> None:
    text = "</Say><Hangup/><Say>x & y \"z\" 'w'"
    async with rig(sb, "voice") as r:
        outcome = await r.send("voice", text)
    assert outcome.verdict is Verdict.ACCEPTED
    (call,) = sb.twilio.sent("voice")
    root = ET.fromstring(call.twiml or "")
    assert [element.tag for element in root.iter()] == ["Response", "Say"]
    assert spoken(call.twiml) == text


async def test_whatsapp_template_carries_the_text(sb: Sandbox) -> None:
    content_sid = "HX" + "0123abcd" * 4
    async with rig(sb, "whatsapp", {"channels.whatsapp": {"content_sid": content_sid}}) as r:
        outcome = await r.send("whatsapp", attempt_id="att_template")
    assert outcome.verdict is Verdict.ACCEPTED
    (message,) = sb.twilio.sent("whatsapp")
    assert outcome.provider_id == message.sid
    assert message.to == PROVIDER_TO["whatsapp"]
    assert message.content_sid == content_sid
    assert json.loads(message.content_variables or "null") == {"1": TEXT}


# Row 2: connection refused ------------------------------------------------------------


@channels
async def test_refused(sb: Sandbox, name: str) -> None:
    async with rig(sb, name) as r:
        await refuse(sb, name)
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert outcome.counts_against_channel
    assert nothing_sent_anywhere(sb)
    assert requests_seen(sb, name) == 0


# Row 3: connect timeout -------------------------------------------------------------------


@channels
async def test_connect_timeout(sb: Sandbox, name: str) -> None:
    async with TcpProxy("127.0.0.1", peer_port(sb, name), mode="connect_timeout") as proxy:
        overrides = merged(
            endpoint(name, "127.0.0.1", proxy.port), expiring(name, "connect_timeout")
        )
        async with rig(sb, name, overrides) as r:
            outcome = await r.send(name)
        assert sum(proxy.connections.values()) == 0  # never accepted: the SYN went nowhere
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert nothing_sent_anywhere(sb)
    assert requests_seen(sb, name) == 0


# TLS handshake failure (same row as connect errors): certainly not sent ------------------


@channels
async def test_tls_handshake_failure(sb: Sandbox, name: str) -> None:
    if name == "email":
        # STARTTLS against a relay whose certificate the system store does not trust.
        overrides: Overrides = {"email": {"ca_file": None}}
    else:
        # https:// against a peer that speaks plain HTTP: the handshake cannot complete.
        overrides = endpoint(name, "127.0.0.1", peer_port(sb, name), scheme="https")
    async with rig(sb, name, overrides) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert nothing_sent_anywhere(sb)
    if name in TWILIO_CHANNELS:
        assert sb.twilio.requests == []
    elif name == "telegram":
        assert sb.telegram.requests == []
    else:
        assert "AUTH" not in smtp_commands(sb.smtp)  # no password over an untrusted channel


@channels
async def test_dns_failure(sb: Sandbox, name: str) -> None:
    # .invalid never resolves (RFC 6761); a slow resolver ends in the connect timeout.
    overrides = merged(
        endpoint(name, "backchannel-contract.invalid", 443), expiring(name, "connect_timeout")
    )
    async with rig(sb, name, overrides) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert nothing_sent_anywhere(sb)


@http_channels
async def test_pool_timeout(sb: Sandbox, name: str) -> None:
    # One connection in the pool, held by a stalled request: the next request waits for
    # the pool, gives up before it was ever written, and so is certainly not sent.
    # The pool wait is the connect timeout (aiohttp's and python-telegram-bot's): short,
    # since the wait is the point; the stalled request's read timeout stays generous, so
    # that it still holds the connection however slowly the machine runs.
    overrides = {"routing": {"concurrency": 1},
                 TRANSPORT_SECTION[name]: {"connect_timeout": 0.3}}  # fmt: skip
    fail(sb, name, Fault.stall())
    async with rig(sb, name, overrides) as r:
        stalled = asyncio.ensure_future(r.send(name, attempt_id="att_stalled"))
        await eventually(lambda: requests_seen(sb, name) == 1)
        queued = await r.send(name, "queued behind", attempt_id="att_queued")
        assert not stalled.done()  # it held the only connection all along
        await refuse(sb, name)  # then the provider hangs up on it, unanswered
        first = await stalled
    assert_failed(first, Verdict.UNKNOWN, Scope.CHANNEL)
    assert_failed(queued, Verdict.TRANSIENT, Scope.CHANNEL)
    assert recorded(sb, name) == [(PROVIDER_TO[name], TEXT)]


# Row 4: 5xx with a full response (SMTP: a 4xx reply) -------------------------------------


@channels
async def test_server_error(sb: Sandbox, name: str) -> None:
    if name == "email":
        fault = Fault.smtp(421, "4.3.2 service not available, closing channel", stage="mail")
    else:
        fault = Fault.http(503)
    fail(sb, name, fault)
    async with rig(sb, name) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert nothing_sent_anywhere(sb)
    if name in TWILIO_CHANNELS:
        assert [rq.answer for rq in sb.twilio.requests] == [503]
    elif name == "telegram":
        assert [rq.answer for rq in sb.telegram.requests] == [503]
    else:
        mail = [e for e in sb.smtp.log if e.command == "MAIL"]
        assert [e.reply[:3] for e in mail] == ["421"]
        assert "RCPT" not in smtp_commands(sb.smtp)


@pytest.mark.parametrize("status", [500, 502])
@pytest.mark.parametrize("name", ["sms", "telegram"])
async def test_other_server_errors_are_transient(sb: Sandbox, name: str, status: int) -> None:
    fail(sb, name, Fault.http(status))
    async with rig(sb, name) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert nothing_sent_anywhere(sb)


# Row 4, continued: HTTP 504, a gateway that gave up waiting on a backend that may have acted


@http_channels
async def test_gateway_timeout_is_unknown(sb: Sandbox, name: str) -> None:
    fail(sb, name, Fault.http(504, message="Gateway Timeout"))
    async with rig(sb, name) as r:
        outcome = await r.send(name)
        probe = await r.check(name)
    assert_failed(outcome, Verdict.UNKNOWN, Scope.CHANNEL)
    assert "504" in outcome.detail and "may have" in outcome.detail, outcome
    assert probe.ok  # one answer was scripted: the next request is served
    peer = sb.twilio if name in TWILIO_CHANNELS else sb.telegram
    assert [rq.answer for rq in peer.requests][:1] == [504]


@http_channels
async def test_gateway_timeout_page_is_unknown(sb: Sandbox, gateway: Gateway, name: str) -> None:
    # A load balancer's own 504 page, not the provider's JSON: still maybe sent.
    gateway.status, gateway.body = 504, "<html><h1>504 Gateway Time-out</h1></html>"
    async with rig(sb, name, endpoint(name, "127.0.0.1", gateway.port)) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.UNKNOWN, Scope.CHANNEL)
    assert "<html" not in outcome.detail.lower()
    assert gateway.hits == 1


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
async def test_email_4xx_at_any_step_is_transient(sb: Sandbox, stage: str) -> None:
    fail(sb, "email", Fault.smtp(451, "4.3.0 local error in processing", stage=stage))
    async with rig(sb, "email") as r:
        outcome = await r.send("email")
        # The session survives a refused transaction and carries the next message.
        again = await r.send("email", attempt_id="att_after_4xx")
    assert outcome.verdict is Verdict.TRANSIENT
    # The adapter refines design.md's "SMTP 4xx: transient / channel": a 4xx at RCPT
    # (greylisting, a full mailbox) is about that mailbox and spares the relay's health.
    assert outcome.scope is (Scope.RECIPIENT if stage == "rcpt" else Scope.CHANNEL)
    assert outcome.provider_id is None and outcome.detail
    assert again.verdict is Verdict.ACCEPTED
    assert recorded(sb, "email") == [(MAILBOX, TEXT)]
    assert smtp_commands(sb.smtp).count("connect") == 1


@pytest.mark.parametrize(
    ("stage", "scope"),
    [("mail", Scope.CHANNEL), ("rcpt", Scope.RECIPIENT), ("data", Scope.RECIPIENT)],
)
async def test_email_5xx_is_permanent(sb: Sandbox, stage: str, scope: Scope) -> None:
    # 5xx at MAIL: the relay refuses our sender (every message fails); at RCPT or DATA:
    # this mailbox or this content.
    fail(sb, "email", Fault.smtp(554, "5.7.1 refused by policy", stage=stage))
    async with rig(sb, "email") as r:
        outcome = await r.send("email")
    assert_failed(outcome, Verdict.PERMANENT, scope)
    assert nothing_sent_anywhere(sb)


# Row 5: rate limited ------------------------------------------------------------------------


@channels
async def test_rate_limited(sb: Sandbox, name: str) -> None:
    fail(sb, name, Fault.rate_limited(7))
    async with rig(sb, name) as r:
        outcome = await r.send(name)
    # SMTP has no retry-after: the relay's 451 is transient without one.
    assert_failed(
        outcome, Verdict.TRANSIENT, Scope.CHANNEL, retry_after=None if name == "email" else 7
    )
    assert nothing_sent_anywhere(sb)
    if name == "email":
        mail = [e for e in sb.smtp.log if e.command == "MAIL"]
        assert [e.reply[:3] for e in mail] == ["451"]


@pytest.mark.parametrize("periods", ["int", "timedelta"])
async def test_telegram_retry_after_either_period_type(
    sb: Sandbox, periods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # python-telegram-bot 22 is moving RetryAfter.retry_after from int to timedelta.
    monkeypatch.setenv("PTB_TIMEDELTA", "true" if periods == "timedelta" else "false")
    fail(sb, "telegram", Fault.rate_limited(3))
    async with rig(sb, "telegram") as r:
        outcome = await r.send("telegram")
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL, retry_after=3)
    assert isinstance(outcome.retry_after, float)


# Row 6: maybe sent --------------------------------------------------------------------------


@channels
async def test_stall(sb: Sandbox, name: str) -> None:
    # The provider took the request and never answers; the client gives up reading.
    await assert_maybe_sent(sb, name, "stall")


@channels
async def test_drop(sb: Sandbox, name: str) -> None:
    # The provider read the request, then reset the connection without a byte of answer.
    await assert_maybe_sent(sb, name, "drop")


async def assert_maybe_sent(sb: Sandbox, name: str, how: str) -> None:
    fail(sb, name, Fault.stall() if how == "stall" else Fault.drop())
    async with rig(sb, name, expiring(name)) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.UNKNOWN, Scope.CHANNEL)
    assert outcome.counts_against_channel
    # The provider got it: exactly why the router must never resend on this channel.
    assert recorded(sb, name) == [(PROVIDER_TO[name], TEXT)]
    if name in TWILIO_CHANNELS:
        assert [rq.answer for rq in sb.twilio.requests] == [how]
    elif name == "telegram":
        assert [rq.answer for rq in sb.telegram.requests] == [how]
    else:
        assert [mail.outcome for mail in sb.smtp.received] == [how]


@pytest.mark.parametrize("name", ["sms", "telegram"])
async def test_blackhole_after_connect_is_unknown(sb: Sandbox, name: str) -> None:
    # The connection is accepted and the request written, then nothing comes back:
    # from the client's side that is indistinguishable from a provider that stalled.
    async with TcpProxy("127.0.0.1", peer_port(sb, name), mode="blackhole") as proxy:
        overrides = merged(endpoint(name, "127.0.0.1", proxy.port), expiring(name))
        async with rig(sb, name, overrides) as r:
            outcome = await r.send(name)
    assert_failed(outcome, Verdict.UNKNOWN, Scope.CHANNEL)


async def test_email_blackhole_before_greeting_is_transient(sb: Sandbox) -> None:
    # SMTP speaks first: silence before the greeting means nothing was handed over.
    async with TcpProxy("127.0.0.1", sb.smtp.port, mode="blackhole") as proxy:
        overrides = merged(endpoint("email", "127.0.0.1", proxy.port), expiring("email"))
        async with rig(sb, "email", overrides) as r:
            outcome = await r.send("email")
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert sb.smtp.log == []


# Row 7: credentials rejected ----------------------------------------------------------------

WRONG_CREDENTIALS: dict[str, tuple[str, str, str]] = {
    "twilio": ("twilio", "auth_token", WRONG_AUTH_TOKEN),
    "telegram": ("telegram", "bot_token", WRONG_BOT_TOKEN),
    "email": ("email", "password", WRONG_SMTP_PASSWORD),
}


def wrong_credentials(name: str) -> tuple[Overrides, str]:
    section, key, value = WRONG_CREDENTIALS[TRANSPORT_SECTION[name]]
    return {section: {key: value}}, value


@channels
async def test_credentials_rejected(sb: Sandbox, name: str) -> None:
    overrides, wrong = wrong_credentials(name)
    async with rig(sb, name, overrides) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.PERMANENT, Scope.CHANNEL)
    assert outcome.counts_against_channel
    assert wrong not in outcome.detail
    if ":" in wrong:
        assert wrong.partition(":")[2] not in outcome.detail
    assert nothing_sent_anywhere(sb)
    if name in TWILIO_CHANNELS:
        assert [rq.answer for rq in sb.twilio.requests] == [401]
    elif name == "telegram":
        assert [rq.answer for rq in sb.telegram.requests] == [401]
    else:
        # aiosmtplib tries each mechanism the relay offers; every one is refused.
        auth = [e for e in sb.smtp.log if e.command == "AUTH"]
        assert auth and {e.reply[:3] for e in auth} == {"535"}
        assert "MAIL" not in smtp_commands(sb.smtp)


# Row 8: recipient rejected ------------------------------------------------------------------

RECIPIENT_FAULTS = [
    pytest.param("whatsapp", Fault.reject_recipient(code=21211), id="whatsapp-21211-invalid"),
    pytest.param("whatsapp", Fault.reject_recipient(code=21610), id="whatsapp-21610-opted-out"),
    pytest.param("whatsapp", Fault.reject_recipient(code=63016), id="whatsapp-63016-window"),
    pytest.param("sms", Fault.reject_recipient(code=21211), id="sms-21211-invalid"),
    pytest.param("sms", Fault.reject_recipient(code=21610), id="sms-21610-opted-out"),
    pytest.param("sms", Fault.reject_recipient(code=21614), id="sms-21614-not-mobile"),
    pytest.param("voice", Fault.reject_recipient(code=21211), id="voice-21211-invalid"),
    pytest.param("voice", Fault.reject_recipient(code=21610), id="voice-21610-opted-out"),
    pytest.param("telegram", Fault.reject_recipient(code=400), id="telegram-400-chat-not-found"),
    pytest.param("telegram", Fault.reject_recipient(code=403), id="telegram-403-blocked"),
    pytest.param(
        "telegram",
        Fault.reject_recipient(code=403, message="Forbidden: user is deactivated"),
        id="telegram-403-deactivated",
    ),
    pytest.param("email", Fault.reject_recipient(code=550), id="email-550-rcpt"),
]


@pytest.mark.parametrize(("name", "fault"), RECIPIENT_FAULTS)
async def test_recipient_rejected(sb: Sandbox, name: str, fault: Fault) -> None:
    fail(sb, name, fault)
    async with rig(sb, name) as r:
        outcome = await r.send(name)
        # Recipient scope means the channel still works for everyone else.
        other = await r.send(name, attempt_id="att_other_contact")
    assert_failed(outcome, Verdict.PERMANENT, Scope.RECIPIENT)
    assert not outcome.counts_against_channel
    # The provider's text quotes the number or mailbox; the detail must not echo it.
    assert ADDRESS[name] not in outcome.detail
    if name in TWILIO_CHANNELS:
        assert str(fault.code) in outcome.detail
    assert other.verdict is Verdict.ACCEPTED
    assert recorded(sb, name) == [(PROVIDER_TO[name], TEXT)]
    if name == "email":
        rcpt = [e for e in sb.smtp.log if e.command == "RCPT"]
        assert [e.reply[:3] for e in rcpt] == ["550", "250"]
        assert smtp_commands(sb.smtp).count("connect") == 1  # RSET, not a new session


# Row 9: probes ------------------------------------------------------------------------------


def assert_probe_sent_nothing(sb: Sandbox) -> None:
    assert nothing_sent_anywhere(sb)
    assert all(rq.method == "GET" for rq in sb.twilio.requests), sb.twilio.requests
    assert all(rq.path.endswith("/getMe") for rq in sb.telegram.requests), sb.telegram.requests
    assert not {"MAIL", "RCPT", "DATA"} & set(smtp_commands(sb.smtp))


@channels
async def test_check_healthy(sb: Sandbox, name: str) -> None:
    async with rig(sb, name) as r:
        outcome = await r.check(name)
    assert outcome.verdict is Verdict.ACCEPTED and outcome.scope is Scope.CHANNEL
    assert outcome.detail
    assert_probe_sent_nothing(sb)
    if name in TWILIO_CHANNELS:
        account = sb.twilio.account_sid
        assert [(rq.method, rq.path, rq.answer) for rq in sb.twilio.requests] == [
            ("GET", f"/2010-04-01/Accounts/{account}.json", 200)
        ]
    elif name == "telegram":
        assert [rq.answer for rq in sb.telegram.requests] == [200]
    else:
        await eventually(lambda: smtp_commands(sb.smtp)[-1:] == ["disconnect"])
        commands = smtp_commands(sb.smtp)
        assert commands[:4] == ["connect", "EHLO", "STARTTLS", "EHLO"]
        assert commands[4:] == ["AUTH", "NOOP", "QUIT", "disconnect"]


@channels
async def test_check_refused(sb: Sandbox, name: str) -> None:
    async with rig(sb, name) as r:
        await refuse(sb, name)
        outcome = await r.check(name)
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert_probe_sent_nothing(sb)


@channels
async def test_check_credentials_rejected(sb: Sandbox, name: str) -> None:
    overrides, wrong = wrong_credentials(name)
    async with rig(sb, name, overrides) as r:
        outcome = await r.check(name)
    assert_failed(outcome, Verdict.PERMANENT, Scope.CHANNEL)
    assert wrong not in outcome.detail
    assert_probe_sent_nothing(sb)


@pytest.mark.parametrize("name", ["sms", "telegram"])
async def test_check_server_error(sb: Sandbox, name: str) -> None:
    if name == "telegram":
        sb.telegram.faults.fail("telegram", Fault.http(503), times=1)
    else:
        sb.twilio.faults.fail("account", Fault.http(503), times=1)
    async with rig(sb, name) as r:
        outcome = await r.check(name)
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert_probe_sent_nothing(sb)


async def test_every_probe_sends_nothing_and_twilio_is_probed_once(sb: Sandbox) -> None:
    async with rig(sb, None) as r:
        # One probe per thing that fails on its own: the account covers three channels.
        assert set(r.built.probes) == {"twilio", "telegram", "email"}
        healthy = {key: await probe() for key, probe in r.built.probes.items()}
        await sb.twilio.refuse()
        down = [await r.check(name) for name in TWILIO_CHANNELS]
        others = [await r.check("telegram"), await r.check("email")]
    assert {key: o.verdict for key, o in healthy.items()} == dict.fromkeys(
        healthy, Verdict.ACCEPTED
    )
    assert {o.verdict for o in down} == {Verdict.TRANSIENT}
    assert {o.verdict for o in others} == {Verdict.ACCEPTED}
    assert_probe_sent_nothing(sb)


# Row 10: email specifics --------------------------------------------------------------------


async def test_email_starttls_then_auth(sb: Sandbox) -> None:
    async with rig(sb, "email") as r:
        outcome = await r.send("email")
    assert outcome.verdict is Verdict.ACCEPTED
    await eventually(lambda: smtp_commands(sb.smtp)[-1:] == ["disconnect"])
    commands = smtp_commands(sb.smtp)
    assert commands[:6] == ["connect", "EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL"]
    assert commands[6:] == ["RCPT", "DATA", "QUIT", "disconnect"]
    (auth,) = [e for e in sb.smtp.log if e.command == "AUTH"]
    assert auth.reply.startswith("235")
    assert "demo-password" not in repr(sb.smtp.log)


async def test_email_implicit_tls() -> None:
    async with Sandbox(smtp_tls="implicit") as sb:
        async with rig(sb, "email") as r:
            assert r.settings.email is not None and r.settings.email.tls_mode == "implicit"
            probe = await r.check("email")
            outcome = await r.send("email", attempt_id="att_implicit")
        assert probe.verdict is Verdict.ACCEPTED
        assert outcome.verdict is Verdict.ACCEPTED
        assert outcome.provider_id is not None and "att_implicit" in outcome.provider_id
        assert recorded(sb, "email") == [(MAILBOX, TEXT)]
        commands = smtp_commands(sb.smtp)
        assert "STARTTLS" not in commands
        assert commands.count("AUTH") == 2  # the probe's session and the send's


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_email_untrusted_certificate(tls: str) -> None:
    async with Sandbox(smtp_tls="implicit" if tls == "implicit" else "starttls") as sb:
        async with rig(sb, "email", {"email": {"ca_file": None}}) as r:
            outcome = await r.send("email")
            probe = await r.check("email")
        assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
        assert_failed(probe, Verdict.TRANSIENT, Scope.CHANNEL)
        assert sb.smtp.received == []
        commands = smtp_commands(sb.smtp)
        assert "AUTH" not in commands and "MAIL" not in commands


async def test_email_reuses_one_session(sb: Sandbox) -> None:
    recipients = ["alice@example.com", "bob@example.com", "carol@example.com"]
    async with rig(sb, "email") as r:
        outcomes = [
            await r.send("email", f"message {i}", attempt_id=f"att_reuse_{i}", address=rcpt)
            for i, rcpt in enumerate(recipients)
        ]
    assert [o.verdict for o in outcomes] == [Verdict.ACCEPTED] * 3
    assert recorded(sb, "email") == [(rcpt, f"message {i}") for i, rcpt in enumerate(recipients)]
    assert [mail.message_id for mail in sb.smtp.received] == [o.provider_id for o in outcomes]
    commands = smtp_commands(sb.smtp)
    assert commands.count("connect") == 1
    assert commands.count("AUTH") == 1
    assert commands.count("DATA") == 3


async def test_email_concurrent_sends_stay_within_the_session_limit(sb: Sandbox) -> None:
    async with rig(sb, "email") as r:
        assert r.settings.email is not None
        limit = r.settings.email.sessions
        outcomes = await asyncio.gather(
            *(r.send("email", f"burst {i}", attempt_id=f"att_burst_{i}") for i in range(12))
        )
    assert [o.verdict for o in outcomes] == [Verdict.ACCEPTED] * 12
    assert sorted(text for _, text in recorded(sb, "email")) == sorted(
        f"burst {i}" for i in range(12)
    )
    assert 1 <= smtp_commands(sb.smtp).count("connect") <= limit


async def test_email_reconnects_after_the_relay_restarted(sb: Sandbox) -> None:
    async with rig(sb, "email") as r:
        first = await r.send("email", "first", attempt_id="att_first")
        # The relay goes away and comes back: the pooled session is dead.
        await sb.smtp.refuse()
        await sb.smtp.restore()
        second = await r.send("email", "second", attempt_id="att_second")
    assert (first.verdict, second.verdict) == (Verdict.ACCEPTED, Verdict.ACCEPTED)
    assert recorded(sb, "email") == [(MAILBOX, "first"), (MAILBOX, "second")]
    assert [m.message_id for m in sb.smtp.received] == [first.provider_id, second.provider_id]
    assert smtp_commands(sb.smtp).count("connect") == 2


async def test_email_reconnects_after_the_relay_closed_an_idle_session(sb: Sandbox) -> None:
    # A relay with a short idle timeout: it says 421 and hangs up on a quiet session.
    async with SmtpPeer(tls="starttls", auth=SMTP_AUTH, timeout=0.3) as relay:
        overrides = {"email": {"port": relay.port, "ca_file": relay.ca_pem_path}}
        async with rig(sb, "email", overrides) as r:
            first = await r.send("email", "first", attempt_id="att_first")
            await eventually(lambda: smtp_commands(relay)[-1:] == ["disconnect"])
            second = await r.send("email", "second", attempt_id="att_second")
        assert (first.verdict, second.verdict) == (Verdict.ACCEPTED, Verdict.ACCEPTED)
        assert [(m.rcpt_tos, mail_text(m)) for m in relay.received] == [
            ((MAILBOX,), "first"),
            ((MAILBOX,), "second"),
        ]
        assert [m.message_id for m in relay.received] == [first.provider_id, second.provider_id]
        assert smtp_commands(relay).count("connect") == 2
        assert smtp_commands(relay).count("DATA") == 2


async def test_email_session_dropped_during_data_is_not_resent(sb: Sandbox) -> None:
    # Reconnecting is only safe before the content went out: after DATA, never.
    async with rig(sb, "email") as r:
        assert (await r.send("email", "warm up", attempt_id="att_warm")).ok
        fail(sb, "email", Fault.drop())
        outcome = await r.send("email", attempt_id="att_dropped")
        after = await r.send("email", "after", attempt_id="att_after")
    assert_failed(outcome, Verdict.UNKNOWN, Scope.CHANNEL)
    assert after.verdict is Verdict.ACCEPTED
    assert recorded(sb, "email") == [(MAILBOX, "warm up"), (MAILBOX, TEXT), (MAILBOX, "after")]
    assert [mail.outcome for mail in sb.smtp.received] == ["accepted", "drop", "accepted"]
    assert smtp_commands(sb.smtp).count("connect") == 2


# Something other than the provider answers: a gateway or proxy in front of it ------------


@dataclass(slots=True)
class Gateway:
    """A real HTTP server standing where the provider should be (a corporate proxy, a
    load balancer, a captive portal), answering every request the same way."""

    status: int = 502
    body: str = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    content_type: str = "text/html"
    port: int = 0
    hits: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.hits += 1
        return web.Response(status=self.status, text=self.body, content_type=self.content_type)

    def answer_json(self, status: int, body: Mapping[str, object]) -> None:
        self.status, self.body, self.content_type = status, json.dumps(body), "application/json"


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", gw.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    gw.port = runner.addresses[0][1]
    yield gw
    await runner.cleanup()


@http_channels
async def test_gateway_error_page_is_transient(sb: Sandbox, gateway: Gateway, name: str) -> None:
    # A complete 5xx answer, though not the provider's JSON: certainly not sent.
    async with rig(sb, name, endpoint(name, "127.0.0.1", gateway.port)) as r:
        outcome = await r.send(name)
        probe = await r.check(name)
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert_failed(probe, Verdict.TRANSIENT, Scope.CHANNEL)
    assert "<html" not in outcome.detail.lower()  # the page is not the explanation
    assert gateway.hits == 2


@http_channels
async def test_gateway_ok_without_json_is_unknown(sb: Sandbox, gateway: Gateway, name: str) -> None:
    # "200 OK" from something that is not the provider: the request may have gone on.
    gateway.status, gateway.body = 200, "<html>Please log in to continue</html>"
    async with rig(sb, name, endpoint(name, "127.0.0.1", gateway.port)) as r:
        outcome = await r.send(name)  # must classify, never raise
        probe = await r.check(name)
    assert_failed(outcome, Verdict.UNKNOWN, Scope.CHANNEL)
    assert not probe.ok and probe.scope is Scope.CHANNEL


PROBLEM_DETAILS = [
    pytest.param(401, 20003, "Unauthorized", Scope.CHANNEL, id="401-20003-credentials"),
    pytest.param(400, 21211, "Invalid 'To' Phone Number", Scope.RECIPIENT, id="400-21211"),
    pytest.param(400, 21999, "Invalid recipient", Scope.RECIPIENT, id="400-unknown-code"),
]


@pytest.mark.parametrize(("status", "code", "title", "scope"), PROBLEM_DETAILS)
@twilio_channels
async def test_twilio_problem_details_error(
    sb: Sandbox, gateway: Gateway, name: str, status: int, code: int, title: str, scope: Scope
) -> None:
    # twilio 9.x raises TwilioServiceException (not a TwilioRestException) for RFC 9457
    # problem-details answers, which newer Twilio services send.
    gateway.answer_json(status, {
        "type": f"https://www.twilio.com/docs/errors/{code}", "title": title,
        "status": status, "code": code, "detail": f"The 'To' number {PHONE} is not valid",
    })  # fmt: skip
    async with rig(sb, name, endpoint(name, "127.0.0.1", gateway.port)) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.PERMANENT, scope)
    assert str(code) in outcome.detail
    assert PHONE not in outcome.detail


# Row 11: the Telegram token never shows ------------------------------------------------------

TOKEN_SCENARIOS = ["refused", "connect-timeout", "tls", "stall", "drop", "500-echo",
                   "400-echo", "403-echo", "502-echo", "bad-token"]  # fmt: skip


@pytest.mark.parametrize("scenario", TOKEN_SCENARIOS)
async def test_telegram_token_never_in_detail(sb: Sandbox, scenario: str) -> None:
    token = sb.telegram.bot_token
    url = f"{sb.telegram_url}/bot{token}/sendMessage"
    overrides: Overrides = {}
    proxy: TcpProxy | None = None
    if scenario == "refused":
        await sb.telegram.refuse()
    elif scenario == "connect-timeout":
        proxy = TcpProxy("127.0.0.1", sb.telegram.port, mode="connect_timeout")
        await proxy.start()
        overrides = merged(
            endpoint("telegram", "127.0.0.1", proxy.port),
            expiring("telegram", "connect_timeout", 0.2),
        )
    elif scenario == "tls":
        overrides = {"telegram": {"api_base": f"https://127.0.0.1:{sb.telegram.port}"}}
    elif scenario in ("stall", "drop"):
        fail(sb, "telegram", Fault.stall() if scenario == "stall" else Fault.drop())
        overrides = expiring("telegram")
    elif scenario == "bad-token":
        overrides = {"telegram": {"bot_token": WRONG_BOT_TOKEN}}
        token = WRONG_BOT_TOKEN
    else:
        # A gateway or a local Bot API server that quotes the request URL in its error.
        status = int(scenario[:3])
        described = f"error for POST {url} (token {token})"
        if status == 400:
            fault = Fault.reject_recipient(code=400, message=f"Bad Request: {described}")
        elif status == 403:
            fault = Fault.reject_recipient(code=403, message=f"Forbidden: {described}")
        else:
            fault = Fault.http(status, message=described)
        fail(sb, "telegram", fault)
    try:
        async with rig(sb, "telegram", overrides) as r:
            outcomes = [await r.send("telegram"), await r.check("telegram")]
    finally:
        if proxy is not None:
            await proxy.close()
    assert not outcomes[0].ok
    secret = token.partition(":")[2].casefold()
    for outcome in outcomes:
        assert secret not in repr(outcome).casefold(), outcome
