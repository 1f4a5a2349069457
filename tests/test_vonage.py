"""Vonage as the second provider of SMS and voice, end to end against the sandbox.

Through the CLI (the real console script, its ``--json``): failover from Twilio to
Vonage inside the SMS channel, and no second SMS after a Twilio request that may have
gone through. Through the webhook server on a real socket: Vonage's signed delivery
receipts, replies and key presses, and forged, unsigned or stale ones refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cli_helpers import assert_no_duplicates, run_cli, write_config
from twoway_helpers import Rig, rig

from router import Message
from router.sandbox import VONAGE_SENDER, Fault, Sandbox
from router.sandbox._vonage_api import signed_params, voice_jwt

PHONE_ONLY = {"paul": {"phone": "+33612345678"}}
SMS_THEN_VOICE = {"routing": {"order": ["sms", "voice"]}, "channels": {"whatsapp": None}}


@pytest.fixture
async def sb() -> Any:
    async with Sandbox() as sandbox:
        yield sandbox


# Failover inside the channel, through the CLI ----------------------------------------------


async def test_twilio_refusing_connections_one_sms_through_vonage(
    sb: Sandbox, tmp_path: Path
) -> None:
    config = write_config(sb, tmp_path, PHONE_ONLY, overrides=SMS_THEN_VOICE, vonage=True)
    await sb.twilio.refuse()
    run = await run_cli("send", "--config", str(config), "--to", "paul", "--json", "db1 down")
    assert run.status == 0, run
    [result] = run.json()["results"]
    assert (result["status"], result["channel"]) == ("accepted", "sms")
    twilio = [a for a in result["attempts"] if a["provider"] == "twilio"]
    vonage = [a for a in result["attempts"] if a["provider"] == "vonage"]
    assert twilio and {a["outcome"] for a in twilio} == {"transient"}
    assert {a["channel"] for a in twilio} == {"sms"}
    assert [(a["channel"], a["outcome"]) for a in vonage] == [("sms", "accepted")]
    assert result["attempts"][-1]["provider"] == "vonage"
    # Exactly one SMS reached the phone, through Vonage; nothing else rang.
    assert [m.to for m in sb.vonage.sms] == ["33612345678"]
    assert sb.twilio.sent("sms") == [] and sb.vonage.calls == {}
    assert_no_duplicates(sb)


async def test_twilio_stalling_no_second_sms_through_vonage(
    sb: Sandbox, tmp_path: Path
) -> None:
    overrides = {**SMS_THEN_VOICE, "twilio": {"timeout": 0.5}}
    config = write_config(sb, tmp_path, PHONE_ONLY, overrides=overrides, vonage=True)
    sb.twilio.faults.fail("sms", Fault.stall())
    run = await run_cli("send", "--config", str(config), "--to", "paul", "--json", "db1 down")
    assert run.status == 0, run
    [result] = run.json()["results"]
    attempts = [(a["channel"], a["provider"], a["outcome"]) for a in result["attempts"]]
    # Twilio may have sent it: the SMS channel is closed for this delivery, whichever
    # provider; the next channel (voice, Twilio's first) carries the alert.
    assert attempts == [("sms", "twilio", "unknown"), ("voice", "twilio", "accepted")]
    assert result["channel"] == "voice"
    assert sb.vonage.sms == []
    assert [m.to for m in sb.twilio.sent("sms")] == ["+33612345678"]
    assert_no_duplicates(sb)


async def test_the_ranking_can_put_vonage_first(sb: Sandbox, tmp_path: Path) -> None:
    overrides = {**SMS_THEN_VOICE, "channels": {"whatsapp": None,
                                                "sms": {"providers": ["vonage", "twilio"]}}}
    config = write_config(sb, tmp_path, PHONE_ONLY, overrides=overrides, vonage=True)
    run = await run_cli("send", "--config", str(config), "--to", "paul", "--json", "hello")
    assert run.status == 0, run
    [attempt] = run.json()["results"][0]["attempts"]
    assert (attempt["provider"], attempt["outcome"]) == ("vonage", "accepted")
    assert sb.twilio.requests == []


async def test_twilio_only_attempts_say_twilio(sb: Sandbox, tmp_path: Path) -> None:
    config = write_config(sb, tmp_path, PHONE_ONLY, overrides=SMS_THEN_VOICE)
    run = await run_cli("send", "--config", str(config), "--to", "paul", "--json", "hello")
    assert run.status == 0, run
    [attempt] = run.json()["results"][0]["attempts"]
    assert (attempt["channel"], attempt["provider"]) == ("sms", "twilio")
    assert sb.vonage.requests == []


# What comes back, through the webhook server ---------------------------------------------

VONAGE_FIRST = {"sms": {"providers": ["vonage"]}, "voice": {"providers": ["vonage"]}}


async def test_a_vonage_receipt_failed_escalates_to_the_next_channel(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["sms", "telegram"], vonage=True,
                   channels={"sms": {"providers": ["vonage", "twilio"]}}) as r:
        r.sandbox.vonage.faults.fail("vonage-sms", Fault.undelivered(2), times=1)
        result = await r.router.send(Message("db1 down"), to="bob", until="delivered")
        assert (result.channel, result.attempts[-1].provider) == ("sms", "vonage")
        [message] = r.sandbox.vonage.sms
        await r.until(lambda: ("failed" in [s for _, s in message.receipts]
                               and r.attempts("bob")[0]["receipt"] == "failed"),
                      "the failed receipt")
        assert await r.tick() == 1
        # The next channel, not the next SMS provider: the receipt says the phone did
        # not get it, and Twilio would try the same phone.
        assert [str(m.chat_id) for m in r.sandbox.telegram.sent] == ["222222222"]
        assert r.sandbox.twilio.sent("sms") == []
        attempts = [(a["channel"], a["provider"], a["kind"]) for a in r.attempts("bob")]
        assert attempts == [("sms", "vonage", "first"), ("telegram", "telegram", "escalation")]


async def test_a_vonage_receipt_delivered_settles_the_delivery(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["sms", "telegram"], vonage=True, channels=VONAGE_FIRST) as r:
        await r.router.send(Message("db1 down"), to="bob", until="delivered")
        await r.until(lambda: r.delivery("bob")["status"] == "delivered", "delivered")
        assert r.attempts("bob")[0]["receipt"] == "delivered"
        assert await r.tick(3600) == 0
        assert r.sandbox.telegram.sent == []


async def test_a_reply_with_the_code_to_the_vonage_number_acknowledges(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["sms", "telegram"], vonage=True, channels=VONAGE_FIRST) as r:
        await r.router.send(Message("db1 down"), to="alice", until="acknowledged")
        [message] = r.sandbox.vonage.sms
        code = message.text.split("Reply ")[1][:4]
        assert await r.sandbox.vonage.deliver_inbound("+33612345678", VONAGE_SENDER,
                                                      f"ok {code}") == 204
        assert r.delivery("alice")["status"] == "acknowledged"
        [event] = await r.router.store.inbox()
        assert (event.channel, event.kind, event.contact) == ("sms", "ack", "alice")
        assert await r.tick(3600) == 0  # no escalation after the acknowledgement


async def test_a_key_press_on_a_vonage_call_acknowledges(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["voice", "telegram"], vonage=True,
                   channels=VONAGE_FIRST) as r:
        result = await r.router.send(Message("db1 down"), to="alice", until="acknowledged")
        [call] = r.sandbox.vonage.sent("voice")
        assert result.attempts[0].outcome.provider_id == call.uuid
        assert await r.sandbox.vonage.press_digits(call.uuid, "1") == 200
        answer = r.sandbox.vonage.outbound[-1]
        assert answer.status == 200
        assert r.delivery("alice")["status"] == "acknowledged"
        # The call's own events carry on to its end: completed is delivered.
        await r.until(lambda: r.attempts("alice")[0]["receipt"] == "delivered", "completed")
        assert call.events == ["started", "ringing", "answered", "completed"]


async def test_the_call_answer_to_a_key_press_speaks_back(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["voice"], vonage=True, channels=VONAGE_FIRST) as r:
        await r.router.send(Message("db1 down"), to="alice", until="acknowledged")
        [call] = r.sandbox.vonage.sent("voice")
        event = {"from": call.from_, "to": call.to, "uuid": call.uuid,
                 "conversation_uuid": call.conversation_uuid,
                 "dtmf": {"digits": "1", "timed_out": False}}
        status, body = await post_json(r, "/webhooks/vonage/voice/event", event)
        assert status == 200
        assert json.loads(body) == [{"action": "talk", "text": "Acknowledged. Thank you."}]


# Forged, unsigned and stale webhooks ------------------------------------------------------


async def post_form(r: Rig, path: str, params: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as http, http.post(r.url(path), data=params) as answer:
        await answer.read()
        return answer.status


async def post_json(r: Rig, path: str, event: dict[str, Any], *, secret: str | None = None,
                    token: str | None = None, body: bytes | None = None) -> tuple[int, str]:
    raw = body if body is not None else json.dumps(event).encode()
    vonage = r.sandbox.vonage
    if token is None:
        token = voice_jwt(json.dumps(event).encode(), secret or vonage.signature_secret,
                          vonage.api_key, vonage.application_id)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http, http.post(
        r.url(path), data=raw, headers=headers
    ) as answer:
        return answer.status, await answer.text()


async def test_forged_unsigned_and_stale_sms_webhooks_get_403(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["sms", "telegram"], vonage=True, channels=VONAGE_FIRST) as r:
        vonage = r.sandbox.vonage
        await r.router.send(Message("db1 down"), to="alice", until="acknowledged")
        [message] = vonage.sms
        code = message.text.split("Reply ")[1][:4]
        reply = {"msisdn": "33612345678", "to": VONAGE_SENDER[1:], "messageId": "0B00000001",
                 "text": code, "type": "text", "keyword": code, "api-key": vonage.api_key}
        path = "/webhooks/vonage/sms/inbound"
        secret, method = vonage.signature_secret, vonage.signature_method
        assert await post_form(r, path, reply) == 403  # unsigned
        assert await post_form(r, path, signed_params(reply, "a-guessed-secret", method)) == 403
        tampered = signed_params(reply, secret, method) | {"text": "1234"}
        assert await post_form(r, path, tampered) == 403
        stale = dict(reply, timestamp=str(int(time.time()) - 600), nonce="n")
        stale["sig"] = signed_params(stale, secret, method)["sig"]
        assert await post_form(r, path, stale) == 403
        receipt = {"messageId": message.message_id, "status": "failed", "msisdn": "33612345678",
                   "client-ref": "att_forged", "err-code": "2"}
        assert await post_form(r, "/webhooks/vonage/sms/status", receipt) == 403
        assert await r.router.store.inbox() == []
        r.assert_still_waited_for("alice")
        assert r.attempts("alice")[0]["receipt"] in (None, "sent", "delivered")
        # The same reply, signed as Vonage signs it, is believed.
        assert await post_form(r, path, signed_params(reply, secret, method)) == 204
        assert r.delivery("alice")["status"] == "acknowledged"


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1", "sha256", "sha512"])
async def test_every_signature_method_vonage_offers(method: str) -> None:
    # The peer's signer is written apart from the router's checker (the sandbox imports
    # nothing of the router): both follow Vonage's documented algorithm.
    from urllib.parse import urlencode

    from channels.vonage.inbound import VonageWebhooks
    from router.model.inbound import Incoming, Reply, WebhookRequest

    applied: list[Incoming] = []

    async def apply(event: Incoming) -> Reply | None:
        applied.append(event)
        return None

    reply = {"msisdn": "14155552671", "to": "447400123456", "messageId": "0C01",
             "text": "ok & = fine", "type": "text", "keyword": "OK", "api-key": "5a4db0c0"}
    signed = signed_params(reply, "the-secret", method)
    request = WebhookRequest("/webhooks/vonage/sms/inbound",
                             {"content-type": "application/x-www-form-urlencoded"},
                             urlencode(signed).encode(), "https://alerts.example.com/x")
    [_, inbound, _] = VonageWebhooks("the-secret", method).endpoints()
    assert (await inbound.handle(request, apply)).status == 204
    other = "sha256" if method != "sha256" else "sha1"
    [_, refusing, _] = VonageWebhooks("the-secret", other).endpoints()
    assert (await refusing.handle(request, apply)).status == 403
    assert len(applied) == 1 and applied[0].text == "ok & = fine"  # type: ignore[union-attr]


async def test_forged_and_stale_voice_events_get_403(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["voice", "telegram"], vonage=True,
                   channels=VONAGE_FIRST) as r:
        vonage = r.sandbox.vonage
        await r.router.send(Message("db1 down"), to="alice", until="acknowledged")
        [call] = vonage.sent("voice")
        press = {"from": call.from_, "to": call.to, "uuid": call.uuid,
                 "conversation_uuid": call.conversation_uuid,
                 "dtmf": {"digits": "1", "timed_out": False}}
        path = "/webhooks/vonage/voice/event"
        assert (await post_json(r, path, press, token=""))[0] == 403  # unsigned
        forged = "another-secret-of-thirty-two-bytes!"
        assert (await post_json(r, path, press, secret=forged))[0] == 403
        # A valid token for another body: payload_hash does not match.
        other = dict(press, dtmf={"digits": "1", "timed_out": True})
        token = voice_jwt(json.dumps(other).encode(), vonage.signature_secret, vonage.api_key,
                          vonage.application_id)
        assert (await post_json(r, path, press, token=token))[0] == 403
        stale_claims = {"iat": int(time.time()) - 600, "jti": "j",
                        "payload_hash": hashlib.sha256(json.dumps(press).encode()).hexdigest()}
        stale = jwt.encode(stale_claims, vonage.signature_secret, algorithm="HS256")
        assert (await post_json(r, path, press, token=stale))[0] == 403
        assert r.delivery("alice")["status"] == "accepted"
        assert await r.router.store.inbox() == []
        assert (await post_json(r, path, press))[0] == 200
        assert r.delivery("alice")["status"] == "acknowledged"


async def test_status_and_probe_list_providers(sb: Sandbox, tmp_path: Path) -> None:
    config = write_config(sb, tmp_path, PHONE_ONLY, overrides=SMS_THEN_VOICE, vonage=True)
    sb.vonage.balance = 2.0
    await sb.twilio.refuse()
    probe = await run_cli("probe", "--json", "--config", str(config))
    assert probe.status == 0, probe  # SMS and voice are still up, through Vonage
    rows = {row["name"]: row for row in probe.json()["channels"]}
    assert list(rows) == ["sms", "sms.twilio", "sms.vonage", "voice", "voice.twilio",
                          "voice.vonage", "telegram", "email", "twilio", "vonage"]
    assert rows["sms"]["state"] == "up" and rows["sms"]["lanes"] == ["sms.twilio", "sms.vonage"]
    assert rows["sms.twilio"]["blocked_by"] == "twilio"
    assert (rows["twilio"]["state"], rows["vonage"]["state"]) == ("down", "up")
    assert rows["vonage"]["warning"].startswith("low balance: 2.00")
    assert rows["twilio"]["probe"]["outcome"] == "transient"
    status = await run_cli("status", "--config", str(config))
    assert status.status == 0, status
    for needle in ("sms via vonage", "sms via twilio", "down (twilio)", "up (1/2)",
                   "low balance"):
        assert needle in status.stdout, (needle, status)
    assert sb.vonage.sms == [] and sb.vonage.calls == {}  # probes send nothing
