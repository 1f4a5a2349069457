"""The Twilio peer through twilio-python's async client, over real sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import xml.etree.ElementTree as ET

import aiohttp
import pytest
from sandbox_helpers import Receiver, TwilioFactory, eventually
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from router.sandbox.faults import Fault
from router.sandbox.twilio import TwilioPeer

# twilio-python passes aiohttp's deprecated ``auth=`` on every request; pyproject only
# filters the BasicAuth warning, not this one.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The 'auth' parameter is deprecated:DeprecationWarning"
)

ALICE = "+33612345678"
SENDER = "+15005550006"
WA_SENDER = "whatsapp:+14155238886"


async def test_account_fetch_is_a_probe_that_sends_nothing(
    twilio: Client, twilio_peer: TwilioPeer
) -> None:
    account = await twilio.api.v2010.accounts(twilio_peer.account_sid).fetch_async()
    assert account.sid == twilio_peer.account_sid
    assert account.status == "active"
    assert account.type == "Full"
    assert isinstance(account.date_created, dt.datetime)
    assert twilio_peer.messages == {} and twilio_peer.calls == {}


async def test_create_then_fetch_reads_back_what_was_written(
    twilio: Client, twilio_peer: TwilioPeer
) -> None:
    created = await twilio.messages.create_async(to=ALICE, from_=SENDER, body="disk full on db1")
    assert re.fullmatch(r"SM[0-9a-f]{32}", created.sid)
    assert created.status == "queued"
    assert created.direction == "outbound-api"
    assert created.num_segments == "1"
    assert created.account_sid == twilio_peer.account_sid
    assert created.error_code is None and created.price is None
    assert isinstance(created.date_created, dt.datetime)
    fetched = await twilio.messages(created.sid).fetch_async()
    assert (fetched.to, fetched.from_, fetched.body) == (ALICE, SENDER, "disk full on db1")
    assert [m.sid for m in twilio_peer.sent("sms")] == [created.sid]
    assert twilio_peer.sent("whatsapp") == []


async def test_whatsapp_is_its_own_channel_key(twilio: Client, twilio_peer: TwilioPeer) -> None:
    twilio_peer.faults.fail("sms", Fault.http(503))
    message = await twilio.messages.create_async(
        to=f"whatsapp:{ALICE}", from_=WA_SENDER, content_sid="HX" + "0" * 32,
        content_variables='{"1": "db1"}',
    )  # fmt: skip
    assert message.status == "queued"
    stored = twilio_peer.sent("whatsapp")[0]
    assert stored.content_sid == "HX" + "0" * 32
    assert stored.content_variables == '{"1": "db1"}'


async def test_segments_follow_gsm7_and_ucs2(twilio: Client) -> None:
    gsm = await twilio.messages.create_async(to=ALICE, from_=SENDER, body="a" * 161)
    ucs2 = await twilio.messages.create_async(to=ALICE, from_=SENDER, body="é" * 60 + "😀" * 6)
    assert (gsm.num_segments, ucs2.num_segments) == ("2", "2")


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": "", "from_": SENDER, "body": "x"}, 21604),
        ({"to": "0612345678", "from_": SENDER, "body": "x"}, 21211),
        ({"to": "whatsapp:0612", "from_": WA_SENDER, "body": "x"}, 21211),
        ({"to": ALICE, "from_": SENDER}, 21602),
        ({"to": ALICE, "from_": SENDER, "body": "x" * 1601}, 21617),
        ({"to": ALICE, "body": "x"}, 21603),
        ({"to": f"whatsapp:{ALICE}", "from_": SENDER, "body": "x"}, 63007),
    ],
)
async def test_validation_errors(
    twilio: Client, twilio_peer: TwilioPeer, kwargs: dict[str, str], code: int
) -> None:
    with pytest.raises(TwilioRestException) as caught:
        await twilio.messages.create_async(**kwargs)
    assert caught.value.status == 400
    assert caught.value.code == code
    assert twilio_peer.messages == {}


async def test_wrong_credentials_get_20003(
    twilio_client_factory: TwilioFactory, twilio_peer: TwilioPeer
) -> None:
    client = await twilio_client_factory(token="f" * 32)
    with pytest.raises(TwilioRestException) as caught:
        await client.messages.create_async(to=ALICE, from_=SENDER, body="x")
    assert (caught.value.status, caught.value.code) == (401, 20003)
    with pytest.raises(TwilioRestException) as caught:
        await client.api.v2010.accounts(twilio_peer.account_sid).fetch_async()
    assert caught.value.status == 401
    assert twilio_peer.messages == {}
    assert [r.answer for r in twilio_peer.requests] == [401, 401]


async def test_unknown_message_is_20404(twilio: Client) -> None:
    with pytest.raises(TwilioRestException) as caught:
        await twilio.messages("SM" + "0" * 32).fetch_async()
    assert (caught.value.status, caught.value.code) == (404, 20404)


async def test_status_moves_forward_and_signed_callbacks_arrive(
    twilio: Client, twilio_peer: TwilioPeer, receiver: Receiver
) -> None:
    url = receiver.url("/status?attempt=1")
    message = await twilio.messages.create_async(
        to=ALICE, from_=SENDER, body="hi", status_callback=url
    )
    await eventually(lambda: len(receiver.received) == 2)
    assert (await twilio.messages(message.sid).fetch_async()).status == "delivered"
    validator = RequestValidator(twilio_peer.auth_token)
    statuses = []
    for path, headers, form, _ in receiver.received:
        assert path == "/status"
        assert validator.validate(url, form, headers["X-Twilio-Signature"])
        assert headers["I-Twilio-Idempotency-Token"]
        assert form["MessageSid"] == form["SmsSid"] == message.sid
        assert form["AccountSid"] == twilio_peer.account_sid
        assert (form["From"], form["To"]) == (SENDER, ALICE)
        assert "ErrorCode" not in form
        statuses.append(form["MessageStatus"])
    assert statuses == ["sent", "delivered"]
    assert [o.status for o in twilio_peer.outbound] == [200, 200]


async def test_undelivered_fault_fails_later_with_its_code(
    twilio: Client, twilio_peer: TwilioPeer, receiver: Receiver
) -> None:
    twilio_peer.faults.fail("sms", Fault.undelivered(30003), times=1)
    url = receiver.url("/status")
    message = await twilio.messages.create_async(
        to=ALICE, from_=SENDER, body="hi", status_callback=url
    )
    assert message.status == "queued"
    await eventually(lambda: twilio_peer.status(message.sid) == "undelivered")
    fetched = await twilio.messages(message.sid).fetch_async()
    assert (fetched.status, fetched.error_code) == ("undelivered", 30003)
    assert fetched.error_message == "Unreachable destination handset"
    await eventually(lambda: len(receiver.received) == 2)
    assert receiver.received[-1][2]["ErrorCode"] == "30003"


async def test_whatsapp_window_fails_free_text_with_63016(
    twilio: Client, twilio_peer: TwilioPeer, receiver: Receiver
) -> None:
    twilio_peer.whatsapp_window = 86400
    twilio_peer.inbound_url = receiver.url("/inbound")
    outside = await twilio.messages.create_async(to=f"whatsapp:{ALICE}", from_=WA_SENDER, body="x")
    assert await twilio_peer.deliver_inbound(f"whatsapp:{ALICE}", WA_SENDER, "ok") == 200
    inside = await twilio.messages.create_async(to=f"whatsapp:{ALICE}", from_=WA_SENDER, body="y")
    await eventually(lambda: twilio_peer.status(inside.sid) == "delivered")
    assert twilio_peer.status(outside.sid) == "failed"
    assert (await twilio.messages(outside.sid).fetch_async()).error_code == 63016


async def test_inbound_webhook_is_signed(
    twilio: Client, twilio_peer: TwilioPeer, receiver: Receiver
) -> None:
    twilio_peer.inbound_url = receiver.url("/sms")
    assert await twilio_peer.deliver_inbound(ALICE, SENDER, "ACK 42") == 200
    _, headers, form, _ = receiver.received[0]
    assert RequestValidator(twilio_peer.auth_token).validate(
        receiver.url("/sms"), form, headers["X-Twilio-Signature"]
    )
    assert (form["From"], form["To"], form["Body"], form["NumMedia"]) == (
        ALICE,
        SENDER,
        "ACK 42",
        "0",
    )
    inbound = await twilio.messages.list_async(from_=ALICE)
    assert [m.direction for m in inbound] == ["inbound"]


async def test_callback_failures_are_recorded_not_fatal(
    twilio: Client, twilio_peer: TwilioPeer, caplog: pytest.LogCaptureFixture
) -> None:
    await twilio.messages.create_async(
        to=ALICE, from_=SENDER, body="x", status_callback="http://127.0.0.1:9/nobody"
    )
    await eventually(lambda: len(twilio_peer.outbound) == 2)
    assert all(o.status is None and o.error for o in twilio_peer.outbound)
    assert (await twilio.messages.create_async(to=ALICE, from_=SENDER, body="y")).sid


async def test_list_pages_newest_first_with_filters(
    twilio: Client, twilio_peer: TwilioPeer
) -> None:
    sids = [
        (await twilio.messages.create_async(to=ALICE, from_=SENDER, body=f"m{i}")).sid
        for i in range(7)
    ]
    await twilio.messages.create_async(to="+14155552671", from_=SENDER, body="other")
    listed = await twilio.messages.list_async(to=ALICE, page_size=3)
    assert [m.sid for m in listed] == sids[::-1]
    limited = await twilio.messages.list_async(to=ALICE, limit=4)
    assert [m.sid for m in limited] == sids[::-1][:4]
    page = await twilio.messages.page_async(to=ALICE, page_size=3)
    second = await page.next_page_async()
    third = await second.next_page_async()
    assert [m.sid for m in third] == [sids[0]]
    assert await third.next_page_async() is None
    back = await second.previous_page_async()
    assert [m.sid for m in back] == sids[::-1][:3]
    paths = [r.path for r in twilio_peer.requests if r.method == "GET"]
    assert all(p.endswith("/Messages.json") for p in paths)


async def test_date_sent_filters_as_twilio_python_sends_them(
    twilio: Client, twilio_peer: TwilioPeer
) -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    message = await twilio.messages.create_async(to=ALICE, from_=SENDER, body="x")
    after = await twilio.messages.list_async(to=ALICE, date_sent_after=before)
    assert [m.sid for m in after] == [message.sid]
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    assert await twilio.messages.list_async(to=ALICE, date_sent_after=future) == []
    assert len(await twilio.messages.list_async(date_sent_before=future)) == 1
    today = dt.datetime.now(dt.UTC).date()
    assert len(await twilio.messages.list_async(date_sent=today.isoformat())) == 1
    query = next(r.params for r in twilio_peer.requests if "DateSent>" in r.params)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", query["DateSent>"])


async def test_http_fault_answers_the_twilio_error_and_records_nothing(
    twilio: Client, twilio_peer: TwilioPeer
) -> None:
    twilio_peer.faults.fail("sms", Fault.http(503), times=1)
    with pytest.raises(TwilioRestException) as caught:
        await twilio.messages.create_async(to=ALICE, from_=SENDER, body="x")
    assert (caught.value.status, caught.value.code) == (503, 20503)
    assert twilio_peer.sent("sms") == []
    assert (await twilio.messages.create_async(to=ALICE, from_=SENDER, body="x")).status == "queued"
    assert [r.answer for r in twilio_peer.requests] == [503, 201]


async def test_rate_limited_fault_has_retry_after(twilio_peer: TwilioPeer) -> None:
    twilio_peer.faults.fail("sms", Fault.rate_limited(1.5))
    auth = {
        "Authorization": aiohttp.encode_basic_auth(twilio_peer.account_sid, twilio_peer.auth_token)
    }
    url = f"{twilio_peer.url}/2010-04-01/Accounts/{twilio_peer.account_sid}/Messages.json"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data={"To": ALICE, "From": SENDER, "Body": "x"}, headers=auth) as resp,
    ):
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "2"
        assert (await resp.json())["code"] == 20429


async def test_reject_recipient_fault_only_for_that_address(
    twilio: Client, twilio_peer: TwilioPeer
) -> None:
    twilio_peer.faults.fail("whatsapp", Fault.reject_recipient(), address=ALICE)
    with pytest.raises(TwilioRestException) as caught:
        await twilio.messages.create_async(to=f"whatsapp:{ALICE}", from_=WA_SENDER, body="x")
    assert (caught.value.status, caught.value.code) == (400, 21211)
    other = await twilio.messages.create_async(
        to="whatsapp:+14155552671", from_=WA_SENDER, body="x"
    )
    assert other.status == "queued"


async def test_stall_records_the_message_and_never_answers(
    twilio_client_factory: TwilioFactory, twilio_peer: TwilioPeer
) -> None:
    client = await twilio_client_factory(client_timeout=0.3)
    twilio_peer.faults.fail("sms", Fault.stall(), times=1)
    with pytest.raises(asyncio.TimeoutError):
        await client.messages.create_async(to=ALICE, from_=SENDER, body="lost answer")
    assert [m.body for m in twilio_peer.sent("sms")] == ["lost answer"]
    assert twilio_peer.requests[-1].answer == "stall"
    # Reconciliation: the message can be found by listing.
    listed = await client.messages.list_async(to=ALICE)
    assert [m.body for m in listed] == ["lost answer"]


async def test_drop_records_the_message_and_closes_the_connection(
    twilio: Client, twilio_peer: TwilioPeer
) -> None:
    twilio_peer.faults.fail("voice", Fault.drop(), times=1)
    with pytest.raises(aiohttp.ClientError):
        await twilio.calls.create_async(to=ALICE, from_=SENDER, twiml="<Response/>")
    assert len(twilio_peer.sent("voice")) == 1
    assert twilio_peer.requests[-1].answer == "drop"


async def test_calls_keep_twiml_and_progress(
    twilio: Client, twilio_peer: TwilioPeer, receiver: Receiver
) -> None:
    response = VoiceResponse()
    gather = response.gather(num_digits=1, action=receiver.url("/ack"))
    gather.say("Disk full <on> db1. Press 1 to acknowledge.")
    twiml = str(response)
    call = await twilio.calls.create_async(
        to=ALICE, from_=SENDER, twiml=twiml, status_callback=receiver.url("/call"),
        status_callback_event=["initiated", "answered", "completed"],
    )  # fmt: skip
    assert re.fullmatch(r"CA[0-9a-f]{32}", call.sid) and call.status == "queued"
    stored = twilio_peer.calls[call.sid]
    assert stored.twiml == twiml
    said = ET.fromstring(twiml).find("Gather/Say")
    assert said is not None and said.text == "Disk full <on> db1. Press 1 to acknowledge."
    await eventually(lambda: twilio_peer.status(call.sid) == "completed")
    fetched = await twilio.calls(call.sid).fetch_async()
    assert fetched.status == "completed" and fetched.start_time and fetched.end_time
    await eventually(lambda: len(receiver.received) == 3)
    assert [f["CallStatus"] for _, _, f, _ in receiver.received] == [
        "initiated", "in-progress", "completed"
    ]  # fmt: skip
    assert await twilio_peer.press_digits(call.sid, "1") == 200
    _, headers, form, _ = receiver.received[-1]
    assert (form["Digits"], form["CallSid"]) == ("1", call.sid)
    assert RequestValidator(twilio_peer.auth_token).validate(
        receiver.url("/ack"), form, headers["X-Twilio-Signature"]
    )


async def test_failed_call(twilio: Client, twilio_peer: TwilioPeer) -> None:
    twilio_peer.faults.fail("voice", Fault.undelivered(), times=1)
    call = await twilio.calls.create_async(to=ALICE, from_=SENDER, twiml="<Response/>")
    await eventually(lambda: twilio_peer.status(call.sid) == "failed")
    with pytest.raises(TwilioRestException) as caught:
        await twilio.calls.create_async(to=ALICE, from_=SENDER)
    assert caught.value.code == 21205


async def test_sender_rate_limit(twilio_client_factory: TwilioFactory) -> None:
    async with TwilioPeer(sender_rate=1) as peer:
        client = await twilio_client_factory(base_url=peer.url)
        await client.messages.create_async(to=ALICE, from_=SENDER, body="1")
        with pytest.raises(TwilioRestException) as caught:
            await client.messages.create_async(to=ALICE, from_=SENDER, body="2")
        assert (caught.value.status, caught.value.code) == (429, 20429)
        await client.messages.create_async(to=ALICE, from_="+15005550007", body="3")
        assert peer.rate_limited_count == 1


async def test_refuse_then_restore_on_the_same_port(
    twilio: Client, twilio_peer: TwilioPeer
) -> None:
    await twilio.messages.create_async(to=ALICE, from_=SENDER, body="warm the pool")
    port = twilio_peer.port
    await twilio_peer.refuse()
    with pytest.raises(aiohttp.ClientConnectionError):
        await twilio.messages.create_async(to=ALICE, from_=SENDER, body="x")
    await twilio_peer.restore()
    assert twilio_peer.port == port
    assert (await twilio.messages.create_async(to=ALICE, from_=SENDER, body="y")).status == "queued"


async def test_control_api(twilio: Client, twilio_peer: TwilioPeer) -> None:
    base = f"{twilio_peer.url}/_sandbox"
    async with aiohttp.ClientSession() as session:
        fault = {"channel": "sms", "kind": "http", "status": 400, "code": 21614, "times": 1}
        async with session.post(f"{base}/faults", json=fault) as resp:
            assert resp.status == 201
        async with session.post(f"{base}/faults", json={"channel": "fax", "kind": "drop"}) as resp:
            assert resp.status == 400
        with pytest.raises(TwilioRestException) as caught:
            await twilio.messages.create_async(to=ALICE, from_=SENDER, body="x")
        assert caught.value.code == 21614
        message = await twilio.messages.create_async(to=ALICE, from_=SENDER, body="ok")
        async with session.get(f"{base}/sent") as resp:
            sent = await resp.json()
        assert [(s["channel"], s["sid"]) for s in sent] == [("sms", message.sid)]
        async with session.get(f"{base}/requests") as resp:
            assert [r["answer"] for r in await resp.json()] == [400, 201]
        await session.post(f"{base}/faults", json={"channel": "sms", "kind": "stall"})
        async with session.delete(f"{base}/faults") as resp:
            assert resp.status == 200
        assert twilio_peer.faults.rules == ()


async def test_rate_limited_through_the_official_client(
    twilio: Client, twilio_peer: TwilioPeer
) -> None:
    twilio_peer.faults.fail("whatsapp", Fault.rate_limited(1), times=1)
    with pytest.raises(TwilioRestException) as caught:
        await twilio.messages.create_async(to=f"whatsapp:{ALICE}", from_=WA_SENDER, body="x")
    assert (caught.value.status, caught.value.code) == (429, 20429)
    assert twilio_peer.sent("whatsapp") == []


async def test_account_probe_faults_are_their_own_key(
    twilio: Client, twilio_peer: TwilioPeer
) -> None:
    twilio_peer.faults.fail("account", Fault.http(500), times=1)
    twilio_peer.faults.fail("account", Fault.undelivered())  # not a probe fault: ignored
    account = twilio.api.v2010.accounts(twilio_peer.account_sid)
    with pytest.raises(TwilioRestException) as caught:
        await account.fetch_async()
    assert (caught.value.status, caught.value.code) == (500, 20500)
    assert (await account.fetch_async()).status == "active"
    assert (await twilio.messages.create_async(to=ALICE, from_=SENDER, body="x")).sid


async def test_calls_list(twilio: Client) -> None:
    first = await twilio.calls.create_async(to=ALICE, from_=SENDER, url="https://example.com/t")
    second = await twilio.calls.create_async(to="+14155552671", from_=SENDER, twiml="<Response/>")
    assert [c.sid for c in await twilio.calls.list_async()] == [second.sid, first.sid]
    assert [c.sid for c in await twilio.calls.list_async(to=ALICE)] == [first.sid]


async def test_latency_is_added_to_every_answer(twilio_client_factory: TwilioFactory) -> None:
    async with TwilioPeer(latency=0.5) as peer:
        client = await twilio_client_factory(base_url=peer.url, client_timeout=0.1)
        with pytest.raises(asyncio.TimeoutError):
            await client.api.v2010.accounts(peer.account_sid).fetch_async()
