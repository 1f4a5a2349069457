"""Receipts, replies and acknowledgements driving escalation, end to end (fake clock).

The router's clock is fake, so waits pass when a test says so; everything else is
real: the sandbox peers post signed callbacks and replies over HTTP to the
router's webhook server, and Telegram updates come by getUpdates.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from twoway_helpers import rig

from router import Message, Status
from router.sandbox import Fault

ALICE_PHONE = "+33612345678"


async def test_an_undelivered_whatsapp_receipt_escalates_to_telegram(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["whatsapp", "telegram"]) as r:
        r.sandbox.twilio.faults.fail("whatsapp", Fault.undelivered(30008))
        result = await r.router.send(Message("disk full"), to="alice", until="delivered")
        assert result.channel == "whatsapp"
        # Twilio's callback (signed, over HTTP) says undelivered: no need to wait it out.
        await r.until(lambda: r.delivery("alice")["waiting_for"] == "receipt-failed", "receipt")
        assert await r.tick() == 1
        attempts = r.attempts("alice")
        assert [(a["channel"], a["kind"], a["receipt"]) for a in attempts] == [
            ("whatsapp", "first", "failed"), ("telegram", "escalation", None)
        ]
        assert [s.chat_id for s in r.sandbox.telegram.sent] == [111111111]
        assert r.delivery("alice")["done"] == 1


async def test_a_delivered_receipt_ends_the_wait(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["sms", "telegram"]) as r:
        await r.router.send(Message("disk full"), to="alice", until="delivered")
        await r.until(lambda: r.delivery("alice")["status"] == "delivered", "receipt")
        assert r.delivery("alice")["done"] == 1
        assert await r.tick(3600) == 0
        assert r.sandbox.telegram.sent == []


async def test_nobody_answers_so_the_chain_runs_and_repeats(tmp_path: Path) -> None:
    # bob has a phone and Telegram: whatsapp, telegram, sms, then voice (enabled, unranked).
    async with rig(tmp_path, order=["whatsapp", "telegram", "sms"]) as r:
        await r.router.send(Message("site down"), to="bob", until="acknowledged")
        assert await r.tick(59) == 0  # not yet
        assert await r.tick(1) == 1  # telegram
        assert await r.tick(60) == 1  # sms
        assert await r.tick(60) == 1  # voice
        assert await r.tick(60) == 1  # the chain is exhausted: the repeat is scheduled
        assert r.delivery("bob")["waiting_for"] == "repeat"
        assert await r.tick(119) == 0
        assert await r.tick(1) == 1  # round two starts at the top
        kinds = [(a["channel"], a["kind"], a["round"]) for a in r.attempts("bob")]
        assert kinds == [
            ("whatsapp", "first", 0), ("telegram", "escalation", 0), ("sms", "escalation", 0),
            ("voice", "escalation", 0), ("whatsapp", "repeat", 1),
        ]
        for _ in range(4):
            await r.tick(60)
        assert r.delivery("bob")["done"] == 1  # one repeat configured: then it stops
        assert [a["channel"] for a in r.attempts("bob")][4:] == [
            "whatsapp", "telegram", "sms", "voice"
        ]
        received = r.sandbox.received()
        assert {channel: len(received[channel]) for channel in ("whatsapp", "sms", "voice")} \
            == {"whatsapp": 2, "sms": 2, "voice": 2}
        assert len(r.sandbox.telegram.sent) == 2


def _code(text: str) -> str:
    match = re.search(r"Reply (\d{4}) to acknowledge", text)
    assert match, text
    return match.group(1)


async def test_an_sms_reply_with_the_code_stops_escalation(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["sms", "telegram"]) as r:
        await r.router.send(Message("site down"), to="alice", until="acknowledged")
        [sms] = r.sandbox.twilio.sent("sms")
        code = _code(sms.body)
        status = await r.sandbox.twilio.deliver_inbound(ALICE_PHONE, sms.from_ or "",
                                                        f"{code} on my way")
        assert status == 200
        assert r.delivery("alice")["status"] == "acknowledged"
        assert await r.tick(3600) == 0
        assert r.sandbox.telegram.sent == []
        [event] = await r.router.store.inbox()
        assert (event.kind, event.contact, event.channel) == ("ack", "alice", "sms")


async def test_a_reply_from_another_number_does_not_acknowledge(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["sms", "telegram"]) as r:
        await r.router.send(Message("site down"), to="alice", until="acknowledged")
        [sms] = r.sandbox.twilio.sent("sms")
        await r.sandbox.twilio.deliver_inbound("+33699999999", sms.from_ or "", _code(sms.body))
        r.assert_still_waited_for("alice")
        assert await r.tick(60) == 1
        assert [s.chat_id for s in r.sandbox.telegram.sent] == [111111111]


async def test_the_telegram_button_acknowledges(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["telegram", "sms"]) as r:
        await r.router.send(Message("site down"), to="alice", until="acknowledged")
        [sent] = r.sandbox.telegram.sent
        [[button]] = sent.reply_markup["inline_keyboard"]  # type: ignore[index]
        assert button["text"] == "Acknowledge"
        await r.sandbox.telegram.push_callback_query(111111111, sent.message_id,
                                                     button["callback_data"])
        assert await r.poll_telegram() == 1
        assert r.delivery("alice")["status"] == "acknowledged"
        assert len(r.sandbox.telegram.answered_callbacks) == 1
        assert await r.tick(3600) == 0
        assert r.sandbox.twilio.sent("sms") == []


async def test_a_telegram_text_reply_with_the_ack_word_acknowledges(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["telegram", "sms"]) as r:
        await r.router.send(Message("site down"), to="alice", until="acknowledged")
        await r.sandbox.telegram.push_message(111111111, "ok, looking")
        assert await r.poll_telegram() == 1
        assert r.delivery("alice")["status"] == "acknowledged"


async def test_pressing_1_on_the_call_acknowledges(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["voice", "telegram"]) as r:
        await r.router.send(Message('fire in "B" <wing> & lab'), to="alice",
                            until="acknowledged")
        [call] = r.sandbox.twilio.sent("voice")
        gather = ET.fromstring(call.twiml or "").find("Gather")
        assert gather is not None and gather.get("action") == r.url("/webhooks/twilio/gather")
        say = gather.find("Say")
        assert say is not None and say.text == 'fire in "B" <wing> & lab Press 1 to acknowledge.'
        assert await r.sandbox.twilio.press_digits(call.sid, "1") == 200
        assert r.delivery("alice")["status"] == "acknowledged"
        assert await r.tick(3600) == 0
        assert r.sandbox.telegram.sent == []


async def test_an_acknowledgement_cancels_every_pending_escalation_of_the_contact(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, order=["sms", "telegram"]) as r:
        await r.router.send(Message("first incident"), to="alice", until="acknowledged")
        await r.router.send(Message("second incident"), to="alice", until="acknowledged")
        first = r.sandbox.twilio.sent("sms")[0]
        await r.sandbox.twilio.deliver_inbound(ALICE_PHONE, first.from_ or "", "ACK")
        assert await r.tick(3600) == 0
        assert r.sandbox.telegram.sent == []


async def test_stop_opts_out_and_routing_respects_it(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["sms", "telegram"]) as r:
        await r.router.send(Message("hello"), to="alice")
        sender = r.sandbox.twilio.sent("sms")[0].from_ or ""
        await r.sandbox.twilio.deliver_inbound(ALICE_PHONE, sender, "STOP")
        result = await r.router.send(Message("hello again"), to="alice")
        assert result.channel == "telegram"
        assert any("opted out" in note for note in result.notes)
        assert result.status is Status.ACCEPTED
        [event] = await r.router.store.inbox()
        assert event.kind == "opt_out"


async def test_a_sentence_starting_with_stop_and_holding_the_code_acknowledges(
    tmp_path: Path,
) -> None:
    # Carriers' keywords apply to a message that is the keyword alone; this one is an
    # answer from the person on call, who must stay reachable by SMS.
    async with rig(tmp_path, order=["sms", "telegram"]) as r:
        await r.router.send(Message("db1 failing over"), to="alice", until="acknowledged")
        [sms] = r.sandbox.twilio.sent("sms")
        code = _code(sms.body)
        for index, opening in enumerate(("Stop", "Cancel", "End", "Quit")):
            if index:
                await r.router.send(Message(f"incident {index}"), to="alice",
                                    until="acknowledged")
                code = _code(r.sandbox.twilio.sent("sms")[-1].body)
            text = f"{opening} the failover, I'm on it. {code}"
            await r.sandbox.twilio.deliver_inbound(ALICE_PHONE, sms.from_ or "", text)
            assert r.delivery("alice")["status"] == "acknowledged", text
        assert await r.tick(3600) == 0
        assert r.sandbox.telegram.sent == []
        events = await r.router.store.inbox()
        assert [e.kind for e in events] == ["ack"] * 4
        assert await r.router.store.opt_outs() == set()
        again = await r.router.send(Message("still by SMS"), to="alice")
        assert again.channel == "sms"


async def test_the_keyword_alone_opts_out_whatever_surrounds_it(tmp_path: Path) -> None:
    async with rig(tmp_path, order=["sms", "telegram"]) as r:
        await r.router.send(Message("hello"), to="alice")
        sender = r.sandbox.twilio.sent("sms")[0].from_ or ""
        await r.sandbox.twilio.deliver_inbound(ALICE_PHONE, sender, "  Stop. ")
        await r.sandbox.twilio.deliver_inbound("+14155552671", sender, "/cancel!")
        kinds = {e.contact: e.kind for e in await r.router.store.inbox()}
        assert kinds == {"alice": "opt_out", "bob": "opt_out"}
        assert (await r.router.send(Message("hi"), to="alice")).channel == "telegram"
