"""The adapter contract (design.md sections 3, 4 and 9) for Vonage's SMS and voice adapters.

Built the way the product builds them (the sandbox's config with Vonage as the only
provider of SMS and voice, parsed and validated, then ``build_providers`` inside the
running loop), talking over real sockets to the sandbox's Vonage peer. Each row of the
classification table is a test per adapter, asserting the verdict and scope, a detail
that leaks no credential, and what the peer recorded.
"""

from __future__ import annotations

import asyncio
import json
import tomllib
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
from router.sandbox import VONAGE_SENDER, Fault, Sandbox
from router.sandbox._vonage_api import VonageCall, VonageSms
from router.sandbox.proxy import TcpProxy

PHONE = "+33612345678"
TEXT = 'Disk <full> on "db1" & it\'s at 99% \u2014 caf\u00e9'
ADAPTERS = ("sms", "voice")
FAULT_KEY = {"sms": "vonage-sms", "voice": "vonage-voice"}
WRONG_SECRET = "not-the-secret"
Overrides = Mapping[str, Mapping[str, object]]


def make_settings(sb: Sandbox, overrides: Overrides | None = None) -> Settings:
    """Vonage alone behind SMS and voice, generous timeouts (a test that waits for one on
    purpose shortens it), then ``overrides``."""
    data: dict[str, Any] = tomllib.loads(sb.config_toml(vonage=True))
    for section in ("twilio", "telegram", "email"):
        del data[section]
    del data["channels"]["whatsapp"]
    for channel in ("sms", "voice"):
        data["channels"][channel].pop("sender")
        data["channels"][channel]["providers"] = ["vonage"]
    data["vonage"] |= {"timeout": 30.0, "connect_timeout": 30.0}
    data["webhooks"] = {"public_url": "https://alerts.example.com/"}
    for section, values in (overrides or {}).items():
        table = data
        for part in section.split("."):
            table = table.setdefault(part, {})
        for key, value in values.items():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
    return settings_from_mapping(data)


@dataclass(slots=True)
class Rig:
    settings: Settings
    built: Providers

    def __getitem__(self, name: str) -> Channel:
        return self.built.adapters[name]

    async def send(self, name: str, text: str = TEXT, *, ack: str | None = None,
                   attempt_id: str = "att_vonage_0001") -> Outcome:
        outcome = await self[name].send(PHONE, Rendered(text, ack_code=ack),
                                        attempt_id=attempt_id)
        self.assert_clean(outcome)
        return outcome

    async def check(self) -> Outcome:
        outcome = await self.built.shared["vonage"]()
        self.assert_clean(outcome)
        return outcome

    def assert_clean(self, outcome: Outcome) -> None:
        assert outcome.detail.strip() or outcome.provider_id, outcome
        shown = f"{outcome.detail} {outcome.provider_id or ''} {outcome.warning}".casefold()
        for secret in [*self.settings.secrets(), WRONG_SECRET]:
            assert secret.casefold() not in shown, f"a credential leaked into {outcome!r}"


@asynccontextmanager
async def rig(sb: Sandbox, overrides: Overrides | None = None) -> AsyncIterator[Rig]:
    settings = make_settings(sb, overrides)
    built = build_providers(settings)
    try:
        assert {lane.provider for lanes in built.lanes.values() for lane in lanes} == {"vonage"}
        assert set(built.adapters) == {"sms", "voice"}
        yield Rig(settings, built)
    finally:
        await built.aclose()


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sandbox:
        yield sandbox


def sent(sb: Sandbox, name: str) -> list[VonageSms] | list[VonageCall]:
    return sb.vonage.sent(name)


def answers(sb: Sandbox, name: str) -> list[int | str]:
    return [r.answer for r in sb.vonage.requests if r.channel == FAULT_KEY[name]]


def fail(sb: Sandbox, name: str, fault: Fault) -> None:
    sb.vonage.faults.fail(FAULT_KEY[name], fault, times=1)


def assert_failed(outcome: Outcome, verdict: Verdict, scope: Scope,
                  retry_after: float | None = None) -> None:
    assert (outcome.verdict, outcome.scope) == (verdict, scope), outcome
    assert outcome.retry_after == retry_after, outcome
    assert outcome.provider_id is None and not outcome.ok


def pointing_at(host: str, port: int, scheme: str = "http") -> Overrides:
    base = f"{scheme}://{host}:{port}"
    return {"vonage": {"api_base": base, "voice_api_base": base}}


async def eventually(check: Callable[[], bool], within: float = 60.0) -> None:
    """Poll until ``check()`` holds (a bound against hanging, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


adapters = pytest.mark.parametrize("name", ADAPTERS)


# Row 1: accepted ------------------------------------------------------------------------


async def test_sms_accepted_as_vonage_documents_the_request(sb: Sandbox) -> None:
    async with rig(sb) as r:
        outcome = await r.send("sms", attempt_id="att_sms_ok")
    assert outcome.ok and outcome.scope is Scope.CHANNEL
    [message] = sb.vonage.sms
    assert outcome.provider_id == message.message_id
    [request] = [q for q in sb.vonage.requests if q.path == "/sms/json"]
    form = request.params
    # Digits only, no "+", our attempt id as client-ref, the receipt URL, and unicode
    # because of the em dash (GSM-7 has none).
    assert (form["to"], form["from"]) == (PHONE[1:], VONAGE_SENDER[1:])
    assert form["client-ref"] == "att_sms_ok"
    assert form["callback"] == "https://alerts.example.com/webhooks/vonage/sms/status"
    assert form["type"] == "unicode" and form["text"] == TEXT
    assert "api_secret" not in form  # the peer's log hides it; the request carried it


async def test_sms_in_gsm_7_is_sent_as_text(sb: Sandbox) -> None:
    async with rig(sb) as r:
        assert (await r.send("sms", "Disk full on db1 {at 99%} \u20ac")).ok
    [request] = [q for q in sb.vonage.requests if q.path == "/sms/json"]
    assert "type" not in request.params


async def test_sms_with_an_acknowledgement_code_asks_for_it(sb: Sandbox) -> None:
    async with rig(sb) as r:
        assert (await r.send("sms", "db1 down", ack="4821")).ok
    assert sb.vonage.sms[0].text == "db1 down\n\nReply 4821 to acknowledge."


async def test_a_long_sms_is_accepted_when_every_part_is(sb: Sandbox) -> None:
    async with rig(sb) as r:
        outcome = await r.send("sms", "x" * 400)
    [message] = sb.vonage.sms
    assert outcome.ok and len(message.ids) == 3
    assert outcome.provider_id == message.ids[0]


async def test_voice_accepted_speaks_the_text_literally_and_asks_for_a_key(sb: Sandbox) -> None:
    async with rig(sb) as r:
        outcome = await r.send("voice", "</speak><break/> x & y", ack="1234")
    [call] = sb.vonage.sent("voice")
    assert isinstance(call, VonageCall)
    assert outcome.ok and outcome.provider_id == call.uuid
    assert (call.to, call.from_) == (PHONE[1:], VONAGE_SENDER[1:])
    talk, listen, goodbye = call.ncco
    assert talk == {"action": "talk", "text": "</speak><break/> x & y Press 1 to acknowledge.",
                    "loop": 2, "bargeIn": True}
    assert listen["type"] == ["dtmf"] and listen["dtmf"] == {"maxDigits": 1, "timeOut": 8}
    assert listen["eventUrl"] == ["https://alerts.example.com/webhooks/vonage/voice/event"]
    assert goodbye["action"] == "talk"


async def test_voice_without_acknowledgement_only_talks(sb: Sandbox) -> None:
    async with rig(sb, {"channels.voice": {"language": "fr-FR", "repeat": 3}}) as r:
        assert (await r.send("voice", "Alerte")).ok
    [call] = sb.vonage.sent("voice")
    assert isinstance(call, VonageCall)
    assert call.ncco == [{"action": "talk", "text": "Alerte", "loop": 3, "language": "fr-FR"}]


# Rows 2 and 3: certainly not sent ---------------------------------------------------------


@adapters
async def test_refused(sb: Sandbox, name: str) -> None:
    async with rig(sb) as r:
        await sb.vonage.refuse()
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert outcome.counts_against_channel
    assert sent(sb, name) == [] and sb.vonage.requests == []


@adapters
async def test_connect_timeout(sb: Sandbox, name: str) -> None:
    async with TcpProxy("127.0.0.1", sb.vonage.port, mode="connect_timeout") as proxy:
        overrides = {"vonage": {**pointing_at("127.0.0.1", proxy.port)["vonage"],
                                "connect_timeout": 0.3}}
        async with rig(sb, overrides) as r:
            outcome = await r.send(name)
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert sb.vonage.requests == []


@adapters
async def test_tls_handshake_failure(sb: Sandbox, name: str) -> None:
    async with rig(sb, pointing_at("127.0.0.1", sb.vonage.port, scheme="https")) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert sb.vonage.requests == []


@adapters
async def test_dns_failure(sb: Sandbox, name: str) -> None:
    async with rig(sb, pointing_at("backchannel-contract.invalid", 443)) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)


@adapters
async def test_pool_timeout(sb: Sandbox, name: str) -> None:
    # One connection, held by a stalled request: the next one gives up waiting for the
    # pool before it was ever written.
    # The pool wait (aiohttp's connect timeout) is short, since the wait is the point; the
    # stalled request's read timeout stays generous, so that it holds the connection
    # however slowly the machine runs, until the provider hangs up on it.
    fail(sb, name, Fault.stall())
    overrides = {"routing": {"concurrency": 1}, "vonage": {"connect_timeout": 0.3}}
    async with rig(sb, overrides) as r:
        stalled = asyncio.ensure_future(r.send(name, attempt_id="att_stalled"))
        await eventually(lambda: len(answers(sb, name)) == 1)
        queued = await r.send(name, "queued behind", attempt_id="att_queued")
        assert not stalled.done()
        await sb.vonage.refuse()
        first = await stalled
    assert_failed(first, Verdict.UNKNOWN, Scope.CHANNEL)
    assert_failed(queued, Verdict.TRANSIENT, Scope.CHANNEL)
    assert len(sent(sb, name)) == 1


# Row 4: a full 5xx answer ------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
@adapters
async def test_server_error(sb: Sandbox, name: str, status: int) -> None:
    fail(sb, name, Fault.http(status))
    async with rig(sb) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert sent(sb, name) == [] and answers(sb, name) == [status]


# Row 4, continued: HTTP 504, a gateway that gave up waiting on a backend that may have acted


@adapters
async def test_gateway_timeout_is_unknown(sb: Sandbox, name: str) -> None:
    fail(sb, name, Fault.http(504))
    async with rig(sb) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.UNKNOWN, Scope.CHANNEL)
    assert "504" in outcome.detail and "may have" in outcome.detail, outcome
    assert answers(sb, name) == [504]


@adapters
async def test_gateway_timeout_page_is_unknown(
    sb: Sandbox, gateway: dict[str, Any], name: str
) -> None:
    gateway["status"], gateway["body"] = 504, "<html>504 Gateway Time-out</html>"
    async with rig(sb, pointing_at("127.0.0.1", gateway["port"])) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.UNKNOWN, Scope.CHANNEL)
    assert "<html" not in outcome.detail.lower()


# Row 5: rate limited --------------------------------------------------------------------------


@adapters
async def test_rate_limited(sb: Sandbox, name: str) -> None:
    fail(sb, name, Fault.rate_limited(7))
    async with rig(sb) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL, retry_after=7)
    assert sent(sb, name) == []


# Row 6: maybe sent ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stall", "drop"])
@adapters
async def test_maybe_sent(sb: Sandbox, name: str, how: str) -> None:
    fail(sb, name, Fault.stall() if how == "stall" else Fault.drop())
    async with rig(sb, {"vonage": {"timeout": 0.3}}) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.UNKNOWN, Scope.CHANNEL)
    # The provider took it: exactly why nothing may resend it, here or elsewhere.
    assert len(sent(sb, name)) == 1 and answers(sb, name) == [how]


@adapters
async def test_blackhole_after_connect_is_unknown(sb: Sandbox, name: str) -> None:
    async with TcpProxy("127.0.0.1", sb.vonage.port, mode="blackhole") as proxy:
        overrides = pointing_at("127.0.0.1", proxy.port)
        overrides = {"vonage": {**overrides["vonage"], "timeout": 0.3}}
        async with rig(sb, overrides) as r:
            outcome = await r.send(name)
    assert_failed(outcome, Verdict.UNKNOWN, Scope.CHANNEL)


async def test_sms_partly_taken_is_unknown(sb: Sandbox) -> None:
    # Part 1 of 3 went out: a resend on any provider would repeat it on the same phone.
    fail(sb, "sms", Fault.partial(5))
    async with rig(sb) as r:
        outcome = await r.send("sms", "y" * 400)
    assert_failed(outcome, Verdict.UNKNOWN, Scope.CHANNEL)
    assert "1 of 3" in outcome.detail


# Rows 7 and 8: the SMS API's status codes, every documented one --------------------------

SMS_CODES = [
    (1, Verdict.TRANSIENT, Scope.CHANNEL, 1.0), (5, Verdict.TRANSIENT, Scope.CHANNEL, None),
    (10, Verdict.TRANSIENT, Scope.CHANNEL, 1.0),
    (2, Verdict.PERMANENT, Scope.CHANNEL, None), (4, Verdict.PERMANENT, Scope.CHANNEL, None),
    (8, Verdict.PERMANENT, Scope.CHANNEL, None), (9, Verdict.PERMANENT, Scope.CHANNEL, None),
    (11, Verdict.PERMANENT, Scope.CHANNEL, None), (14, Verdict.PERMANENT, Scope.CHANNEL, None),
    (15, Verdict.PERMANENT, Scope.CHANNEL, None), (23, Verdict.PERMANENT, Scope.CHANNEL, None),
    (32, Verdict.PERMANENT, Scope.CHANNEL, None),
    (3, Verdict.PERMANENT, Scope.RECIPIENT, None), (6, Verdict.PERMANENT, Scope.RECIPIENT, None),
    (7, Verdict.PERMANENT, Scope.RECIPIENT, None), (12, Verdict.PERMANENT, Scope.RECIPIENT, None),
    (22, Verdict.PERMANENT, Scope.RECIPIENT, None),
    (29, Verdict.PERMANENT, Scope.RECIPIENT, None),
    (33, Verdict.PERMANENT, Scope.RECIPIENT, None),
    (99, Verdict.PERMANENT, Scope.CHANNEL, None),
]  # fmt: skip


@pytest.mark.parametrize(("code", "verdict", "scope", "pause"), SMS_CODES,
                         ids=[f"status-{c[0]}" for c in SMS_CODES])
async def test_sms_status_codes(
    sb: Sandbox, code: int, verdict: Verdict, scope: Scope, pause: float | None
) -> None:
    fail(sb, "sms", Fault.refuse(code, f"refused for {PHONE}"))
    async with rig(sb) as r:
        outcome = await r.send("sms")
    assert_failed(outcome, verdict, scope, retry_after=pause)
    assert f"status {code}" in outcome.detail
    assert PHONE[1:] not in outcome.detail  # Vonage's text can quote the number
    assert sb.vonage.sms == []


async def test_sms_wrong_secret_is_a_channel_failure(sb: Sandbox) -> None:
    async with rig(sb, {"vonage": {"api_secret": WRONG_SECRET}}) as r:
        outcome = await r.send("sms")
        probe = await r.check()
    assert_failed(outcome, Verdict.PERMANENT, Scope.CHANNEL)
    assert "credentials" in outcome.detail
    assert_failed(probe, Verdict.PERMANENT, Scope.CHANNEL)
    assert sb.vonage.sms == []


async def test_voice_signed_with_another_key_is_a_channel_failure(
    sb: Sandbox, tmp_path: Any
) -> None:
    from router.sandbox.vonage import new_private_key_pem

    other = tmp_path / "other.key"
    other.write_bytes(new_private_key_pem())
    async with rig(sb, {"vonage": {"private_key": str(other)}}) as r:
        outcome = await r.send("voice")
    assert_failed(outcome, Verdict.PERMANENT, Scope.CHANNEL)
    assert answers(sb, "voice") == [401] and sb.vonage.calls == {}


async def test_voice_recipient_refused(sb: Sandbox) -> None:
    fail(sb, "voice", Fault.reject_recipient())
    async with rig(sb) as r:
        outcome = await r.send("voice")
    assert_failed(outcome, Verdict.PERMANENT, Scope.RECIPIENT)
    assert sb.vonage.calls == {}


async def test_voice_without_credit_is_a_channel_failure(sb: Sandbox) -> None:
    sb.vonage.balance = 0
    async with rig(sb) as r:
        call = await r.send("voice")
        sms = await r.send("sms")
    assert_failed(call, Verdict.PERMANENT, Scope.CHANNEL)
    assert_failed(sms, Verdict.PERMANENT, Scope.CHANNEL)


async def test_voice_text_too_long_for_one_talk_is_the_messages_fault(sb: Sandbox) -> None:
    async with rig(sb) as r:
        outcome = await r.send("voice", "z" * 1490, ack="1234")
    assert_failed(outcome, Verdict.PERMANENT, Scope.RECIPIENT)
    assert sb.vonage.requests == []


# A gateway answers instead of Vonage ---------------------------------------------------------


@pytest.fixture
async def gateway() -> AsyncIterator[dict[str, Any]]:
    state: dict[str, Any] = {"status": 502, "body": "<html>502 Bad Gateway</html>", "hits": 0}

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        state["hits"] += 1
        return web.Response(status=state["status"], text=state["body"], content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state["port"] = runner.addresses[0][1]
    yield state
    await runner.cleanup()


@adapters
async def test_gateway_error_page_is_transient(
    sb: Sandbox, gateway: dict[str, Any], name: str
) -> None:
    async with rig(sb, pointing_at("127.0.0.1", gateway["port"])) as r:
        outcome = await r.send(name)
        probe = await r.check()
    assert_failed(outcome, Verdict.TRANSIENT, Scope.CHANNEL)
    assert_failed(probe, Verdict.TRANSIENT, Scope.CHANNEL)
    assert "<html" not in outcome.detail.lower()


@adapters
async def test_gateway_ok_without_json_is_unknown(
    sb: Sandbox, gateway: dict[str, Any], name: str
) -> None:
    gateway["status"], gateway["body"] = 200, "<html>Please log in</html>"
    async with rig(sb, pointing_at("127.0.0.1", gateway["port"])) as r:
        outcome = await r.send(name)
    assert_failed(outcome, Verdict.UNKNOWN, Scope.CHANNEL)


# Row 9: the probe reads the balance and sends nothing ----------------------------------------


async def test_probe_reads_the_balance_and_sends_nothing(sb: Sandbox) -> None:
    async with rig(sb) as r:
        healthy = await r.check()
        sb.vonage.balance = 1.25
        low = await r.check()
        sb.vonage.balance = 0.0
        empty = await r.check()
        sb.vonage.faults.fail("vonage-account", Fault.http(503), times=1)
        busy = await r.check()
        await sb.vonage.refuse()
        gone = await r.check()
    assert healthy.ok and healthy.detail == "balance 42.50" and not healthy.warning
    assert low.ok and low.warning.startswith("low balance: 1.25")
    assert_failed(empty, Verdict.PERMANENT, Scope.CHANNEL)
    assert_failed(busy, Verdict.TRANSIENT, Scope.CHANNEL)
    assert_failed(gone, Verdict.TRANSIENT, Scope.CHANNEL)
    assert {q.path for q in sb.vonage.requests} == {"/account/get-balance"}
    assert sb.vonage.sms == [] and sb.vonage.calls == {}


async def test_the_secret_never_reaches_a_detail_even_when_echoed(
    sb: Sandbox, gateway: dict[str, Any]
) -> None:
    secret = sb.vonage.api_secret
    gateway["status"] = 400
    gateway["body"] = json.dumps({"title": f"bad request api_secret={secret}"})
    async with rig(sb, pointing_at("127.0.0.1", gateway["port"])) as r:
        outcome = await r.send("voice")
        probe = await r.check()
    assert not outcome.ok and not probe.ok  # assert_clean checked both details
