"""The webhook server over real HTTP: signatures, replays, unknown ids, order, size."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from twilio.request_validator import RequestValidator
from twoway_helpers import Rig, rig

from router import Message

TOKEN = "s3cret-webhook-token"


def signed(r: Rig, path: str, params: dict[str, str]) -> dict[str, str]:
    validator = RequestValidator(r.sandbox.twilio.auth_token)
    return {"X-Twilio-Signature": validator.compute_signature(r.url(path), params)}


async def post(r: Rig, path: str, params: dict[str, str], headers: dict[str, str] | None = None,
               *, raw: bytes | None = None) -> int:
    async with aiohttp.ClientSession() as http, http.post(
        r.url(path), data=raw if raw is not None else params, headers=headers or {}
    ) as response:
        await response.read()
        return response.status


async def test_forged_and_missing_signatures_are_refused_and_change_nothing(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, order=["sms", "telegram"]) as r:
        await r.router.send(Message("site down"), to="alice", until="acknowledged")
        [sms] = r.sandbox.twilio.sent("sms")
        code = sms.body.split("Reply ")[1][:4]
        reply = {"MessageSid": "SM" + "1" * 32, "From": "+33612345678", "To": sms.from_ or "",
                 "Body": code, "AccountSid": r.sandbox.twilio.account_sid}
        path = "/webhooks/twilio/inbound"
        forged = {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}
        assert await post(r, path, reply, forged) == 403
        assert await post(r, path, reply) == 403
        # A valid signature over other parameters does not cover these.
        assert await post(r, path, reply | {"Body": "1234"}, signed(r, path, reply)) == 403
        r.assert_still_waited_for("alice")
        assert await r.router.store.inbox() == []
        status = {"MessageSid": sms.sid, "MessageStatus": "undelivered"}
        assert await post(r, "/webhooks/twilio/status", status, forged) == 403
        assert r.attempts("alice")[0]["receipt"] in (None, "sent", "delivered")
        assert await post(r, path, reply, signed(r, path, reply)) == 200
        assert r.delivery("alice")["status"] == "acknowledged"


async def test_a_replayed_callback_has_no_second_effect(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["sms", "telegram"]) as r:
        await r.router.send(Message("hello"), to="alice")
        sender = r.sandbox.twilio.sent("sms")[0].from_ or ""
        reply = {"MessageSid": "SM" + "2" * 32, "From": "+33612345678", "To": sender,
                 "Body": "thanks", "AccountSid": r.sandbox.twilio.account_sid}
        path = "/webhooks/twilio/inbound"
        headers = signed(r, path, reply) | {"I-Twilio-Idempotency-Token": "token-1"}
        assert await post(r, path, reply, headers) == 200
        assert await post(r, path, reply, headers) == 200  # same token
        fresh = signed(r, path, reply) | {"I-Twilio-Idempotency-Token": "token-2"}
        assert await post(r, path, reply, fresh) == 200  # same MessageSid, new token
        assert len(await r.router.store.inbox()) == 1


async def test_unknown_sids_and_out_of_order_statuses_change_nothing(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["sms"]) as r:
        await r.router.send(Message("hello"), to="alice", until="delivered")
        await r.until(lambda: r.delivery("alice")["status"] == "delivered", "receipt")
        sid = r.sandbox.twilio.sent("sms")[0].sid
        path = "/webhooks/twilio/status"
        unknown = {"MessageSid": "SM" + "9" * 32, "MessageStatus": "failed"}
        assert await post(r, path, unknown, signed(r, path, unknown)) == 204
        late = {"MessageSid": sid, "MessageStatus": "sent"}
        assert await post(r, path, late, signed(r, path, late)) == 204
        failed = {"MessageSid": sid, "MessageStatus": "undelivered"}
        assert await post(r, path, failed, signed(r, path, failed)) == 204
        assert r.attempts("alice")[0]["receipt"] == "delivered"
        assert r.delivery("alice")["status"] == "delivered"
        assert await r.tick(3600) == 0


async def test_an_oversized_body_is_refused(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["sms"], max_body=4096) as r:
        huge = {"MessageSid": "SM" + "3" * 32, "Body": "x" * 10_000}
        path = "/webhooks/twilio/inbound"
        assert await post(r, path, huge, signed(r, path, huge)) == 413
        assert await r.router.store.inbox() == []


async def test_telegram_webhook_needs_its_secret_and_ignores_replays(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["telegram", "sms"]) as r:
        await r.router.send(Message("site down"), to="alice", until="acknowledged")
        update = {"update_id": 77, "message": {
            "message_id": 5, "date": 1_800_000_000, "text": "ACK",
            "chat": {"id": 111111111, "type": "private"},
            "from": {"id": 111111111, "is_bot": False, "first_name": "Alice"},
        }}
        body = json.dumps(update).encode()
        json_type = {"Content-Type": "application/json"}
        path = "/webhooks/telegram"
        assert await post(r, path, {}, json_type, raw=body) == 403
        wrong = json_type | {"X-Telegram-Bot-Api-Secret-Token": "guess"}
        assert await post(r, path, {}, wrong, raw=body) == 403
        assert r.delivery("alice")["status"] == "accepted"
        right = json_type | {"X-Telegram-Bot-Api-Secret-Token": TOKEN}
        assert await post(r, path, {}, right, raw=body) == 200
        assert await post(r, path, {}, right, raw=body) == 200
        assert r.delivery("alice")["status"] == "acknowledged"
        assert len(await r.router.store.inbox()) == 1


async def test_healthz_reports_channels(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["sms"]) as r, aiohttp.ClientSession() as http, \
            http.get(r.url("/healthz")) as response:
        assert response.status == 200
        body = await response.json()
    assert body["status"] == "ok" and body["channels"]["sms"] is True


async def test_twilio_advanced_opt_out_is_an_opt_out(tmp_path: Path) -> None:
    # With Advanced Opt-Out, Twilio blocks the number itself and says so with OptOutType:
    # routing must stop using SMS for that contact at once, whatever the words were.
    async with rig(tmp_path, order=["sms", "telegram"]) as r:
        await r.router.send(Message("hello"), to="alice")
        sender = r.sandbox.twilio.sent("sms")[0].from_ or ""
        path = "/webhooks/twilio/inbound"
        stop = {"MessageSid": "SM" + "5" * 32, "From": "+33612345678", "To": sender,
                "Body": "Arret", "OptOutType": "STOP",
                "AccountSid": r.sandbox.twilio.account_sid}
        assert await post(r, path, stop, signed(r, path, stop)) == 200
        [event] = await r.router.store.inbox()
        assert (event.kind, event.contact, event.channel) == ("opt_out", "alice", "sms")
        result = await r.router.send(Message("second"), to="alice")
        assert result.channel == "telegram"
        assert len(r.sandbox.twilio.sent("sms")) == 1


# Authenticated is not well formed: a wrong-typed field or JSON nested thousands deep (both
# under the size cap) gets 400 or 200 with nothing applied, never a 500.
MALFORMED_UPDATES: list[tuple[str, bytes]] = [
    ("callback message is a string", json.dumps({"update_id": 1, "callback_query": {
        "id": "q1", "message": "not a table", "data": "ack:0000"}}).encode()),
    ("callback sender is a number", json.dumps({"update_id": 2, "callback_query": {
        "id": "q2", "from": 111111111, "data": "ack:0000"}}).encode()),
    ("callback data is a table", json.dumps({"update_id": 3, "callback_query": {
        "id": "q3", "from": {"id": 111111111}, "data": {"ack": 1}}}).encode()),
    ("chat is a list", json.dumps({"update_id": 4, "message": {
        "text": "ACK", "chat": [111111111]}}).encode()),
    ("chat id is true", json.dumps({"update_id": 5, "message": {
        "text": "ACK", "chat": {"id": True}}}).encode()),
    ("update id is a string", json.dumps({"update_id": "6", "message": {
        "text": "ACK", "chat": {"id": 111111111}}}).encode()),
    ("nested arrays", b"[" * 30_000 + b"]" * 30_000),
    ("nested inside an update", b'{"update_id": 7, "message": {"text": "ACK", "chat": {"id": '
        + b"[" * 30_000 + b"]" * 30_000 + b"}}}"),
]  # fmt: skip


async def test_malformed_telegram_updates_are_refused_or_ignored(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["telegram", "sms"], max_body=128 * 1024) as r:
        await r.router.send(Message("site down"), to="alice", until="acknowledged")
        headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": TOKEN}
        answers = {name: await post(r, "/webhooks/telegram", {}, headers, raw=body)
                   for name, body in MALFORMED_UPDATES}  # fmt: skip
        assert {name: status for name, status in answers.items() if status not in (200, 400)} \
            == {}, answers
        assert answers["nested arrays"] == 400
        assert r.delivery("alice")["status"] == "accepted"
        assert await r.router.store.inbox() == []
        assert r.sandbox.telegram.answered_callbacks == []
        # The server is still there, and a well-formed update still acknowledges.
        good = {"update_id": 8, "message": {"text": "ACK", "chat": {"id": 111111111}}}
        assert await post(r, "/webhooks/telegram", {}, headers,
                          raw=json.dumps(good).encode()) == 200  # fmt: skip
        assert r.delivery("alice")["status"] == "acknowledged"


async def test_a_lone_surrogate_in_a_telegram_text_is_stored_replaced(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["telegram"]) as r:
        headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": TOKEN}
        body = b'{"update_id": 9, "message": {"text": "on it \\ud800", "chat": {"id": 111111111}}}'
        assert await post(r, "/webhooks/telegram", {}, headers, raw=body) == 200
        [event] = await r.router.store.inbox()
        assert event.text == "on it \ufffd"
