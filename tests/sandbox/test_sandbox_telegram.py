"""The Telegram peer through python-telegram-bot's Bot, over real sockets."""

from __future__ import annotations

import asyncio
import datetime as dt

import aiohttp
import pytest
from sandbox_helpers import BotFactory, Receiver, eventually
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)

from router.sandbox.faults import Fault
from router.sandbox.telegram import TelegramPeer

ALICE = 111111111


async def test_get_me(bot: Bot, telegram_peer: TelegramPeer) -> None:
    me = await bot.get_me()
    assert me.is_bot and me.username == telegram_peer.bot_username
    assert me.id == 123456789
    assert bot.username == telegram_peer.bot_username  # initialize() called getMe


async def test_send_message_returns_a_full_message(bot: Bot, telegram_peer: TelegramPeer) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Acknowledge", callback_data="ack:1")]])
    first = await bot.send_message(ALICE, "disk full on db1", reply_markup=keyboard)
    second = await bot.send_message(ALICE, "still full", reply_to_message_id=first.message_id)
    other = await bot.send_message(222, "hello")
    assert (first.message_id, second.message_id, other.message_id) == (1, 2, 1)
    assert first.text == "disk full on db1"
    assert first.chat.id == ALICE and first.chat.type == "private"
    assert first.from_user is not None and first.from_user.is_bot
    assert isinstance(first.date, dt.datetime)
    assert first.reply_markup == keyboard
    assert second.reply_to_message is not None
    assert second.reply_to_message.message_id == first.message_id
    sent = telegram_peer.sent
    assert [(s.chat_id, s.text, s.message_id) for s in sent] == [
        (ALICE, "disk full on db1", 1), (ALICE, "still full", 2), (222, "hello", 1)
    ]  # fmt: skip
    assert sent[0].reply_markup == keyboard.to_dict()
    assert sent[1].reply_to_message_id == 1


async def test_bad_requests(bot: Bot, telegram_peer: TelegramPeer) -> None:
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(ALICE, " ")
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(ALICE, "x" * 4097)
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message("@nobody", "x")
    with pytest.raises(BadRequest, match=r"(?i)replied not found"):
        await bot.send_message(ALICE, "x", reply_to_message_id=99)
    assert telegram_peer.sent == []


async def test_json_bodies_are_accepted_too(telegram_peer: TelegramPeer) -> None:
    url = f"{telegram_peer.url}/bot{telegram_peer.bot_token}/sendMessage"
    body = {
        "chat_id": ALICE,
        "text": "hi",
        "reply_markup": {"inline_keyboard": [[{"text": "a", "callback_data": "b"}]]},
    }
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        answer = await resp.json()
    assert answer["ok"] and answer["result"]["reply_markup"] == body["reply_markup"]
    assert telegram_peer.sent[0].text == "hi"


async def test_unknown_method_and_token(
    bot_factory: BotFactory, telegram_peer: TelegramPeer
) -> None:
    with pytest.raises(InvalidToken):
        await bot_factory("123456789:wrong", initialize=True)
    bot = await bot_factory()
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("noSuchMethod")
    assert [r.answer for r in telegram_peer.requests] == [401, 200, 404]


async def test_long_polling_waits_for_a_push(bot: Bot, telegram_peer: TelegramPeer) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await eventually(lambda: telegram_peer.polling)
    await telegram_peer.push_message(ALICE, "ACK")
    updates = await poll
    assert [u.message.text for u in updates if u.message] == ["ACK"]
    message = updates[0].message
    assert message is not None and message.chat.id == ALICE
    assert message.from_user is not None and message.from_user.first_name == f"User {ALICE}"
    # Not confirmed yet: returned again; confirmed by offset: gone.
    assert len(await bot.get_updates()) == 1
    assert await bot.get_updates(offset=updates[0].update_id + 1) == ()
    assert telegram_peer.updates == []


async def test_long_poll_times_out_empty(bot: Bot) -> None:
    assert await bot.get_updates(timeout=1) == ()


async def test_second_poller_ends_the_first_with_409(
    bot_factory: BotFactory, telegram_peer: TelegramPeer
) -> None:
    first, second = await bot_factory(), await bot_factory()
    # A long poll: the second one must find it still waiting, however slow the machine.
    poll = asyncio.create_task(first.get_updates(timeout=60))
    await eventually(lambda: telegram_peer.polling)
    other = asyncio.create_task(second.get_updates(timeout=1))
    with pytest.raises(Conflict, match="terminated by other getUpdates"):
        await poll
    assert await other == ()


async def test_callback_query_and_answer(bot: Bot, telegram_peer: TelegramPeer) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Acknowledge", callback_data="ack:7")]])
    sent = await bot.send_message(ALICE, "press", reply_markup=keyboard)
    await telegram_peer.push_callback_query(ALICE, sent.message_id, "ack:7")
    (update,) = await bot.get_updates()
    query = update.callback_query
    assert query is not None and query.data == "ack:7"
    assert query.message is not None and query.message.message_id == sent.message_id
    assert await bot.answer_callback_query(query.id, text="Acknowledged")
    assert telegram_peer.answered_callbacks == [
        {"callback_query_id": query.id, "text": "Acknowledged"}
    ]
    with pytest.raises(BadRequest, match=r"(?i)query ID is invalid"):
        await bot.answer_callback_query("nope")


async def test_webhook(bot: Bot, telegram_peer: TelegramPeer, receiver: Receiver) -> None:
    assert await bot.set_webhook(receiver.url("/tg"), secret_token="s3cr3t")
    info = await bot.get_webhook_info()
    assert info.url == receiver.url("/tg") and info.pending_update_count == 0
    with pytest.raises(Conflict, match="webhook is active"):
        await bot.get_updates()
    update = await telegram_peer.push_message(ALICE, "via webhook")
    path, headers, _, body = receiver.received[0]
    assert path == "/tg" and headers["X-Telegram-Bot-Api-Secret-Token"] == "s3cr3t"
    assert b'"via webhook"' in body and telegram_peer.updates == []
    receiver.status = 500
    await telegram_peer.push_message(ALICE, "kept")
    info = await bot.get_webhook_info()
    assert info.pending_update_count == 1 and info.last_error_message
    assert await bot.delete_webhook()
    (kept,) = await bot.get_updates()
    assert kept.update_id == update["update_id"] + 1  # type: ignore[operator]


async def test_http_fault_and_probe(bot: Bot, telegram_peer: TelegramPeer) -> None:
    telegram_peer.faults.fail("telegram", Fault.http(502), times=2)
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.get_me()
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(ALICE, "x")
    assert telegram_peer.sent == []
    assert (await bot.send_message(ALICE, "x")).message_id == 1


async def test_reject_recipient_400_and_403(bot: Bot, telegram_peer: TelegramPeer) -> None:
    telegram_peer.faults.fail("telegram", Fault.reject_recipient(code=403), address=str(ALICE))
    telegram_peer.faults.fail("telegram", Fault.reject_recipient(), address="222")
    await bot.get_me()  # the probe never meets recipient faults
    with pytest.raises(Forbidden, match=r"(?i)bot was blocked by the user"):
        await bot.send_message(ALICE, "x")
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(222, "x")
    assert (await bot.send_message(333, "x")).chat.id == 333
    assert [s.chat_id for s in telegram_peer.sent] == [333]


async def test_rate_limited_fault_maps_to_retry_after(
    bot: Bot, telegram_peer: TelegramPeer
) -> None:
    telegram_peer.faults.fail("telegram", Fault.rate_limited(2.5), times=1)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(ALICE, "x")
    assert caught.value.retry_after == dt.timedelta(seconds=3)


async def test_flood_limit(bot_factory: BotFactory) -> None:
    async with TelegramPeer(flood_limit=True, overall_per_second=3) as peer:
        bot = await bot_factory(base=peer.url)
        await bot.send_message(1, "a")
        with pytest.raises(RetryAfter):
            await bot.send_message(1, "b")  # one per chat per second
        await bot.send_message(2, "c")
        await bot.send_message(3, "d")
        with pytest.raises(RetryAfter):
            await bot.send_message(4, "e")  # int(3 * 1.1) = 3 overall
        assert peer.rate_limited_count == 2
        assert [s.text for s in peer.sent] == ["a", "c", "d"]


async def test_stall_records_and_times_out(
    bot_factory: BotFactory, telegram_peer: TelegramPeer
) -> None:
    bot = await bot_factory(read_timeout=0.3)
    telegram_peer.faults.fail("telegram", Fault.stall(), times=1)
    with pytest.raises(TimedOut):
        await bot.send_message(ALICE, "maybe")
    assert [s.text for s in telegram_peer.sent] == ["maybe"]
    assert telegram_peer.requests[-1].answer == "stall"


async def test_drop_records_and_disconnects(bot: Bot, telegram_peer: TelegramPeer) -> None:
    telegram_peer.faults.fail("telegram", Fault.drop(), times=1)
    with pytest.raises(NetworkError) as caught:
        await bot.send_message(ALICE, "maybe")
    assert not isinstance(caught.value, TimedOut | BadRequest)
    assert [s.text for s in telegram_peer.sent] == ["maybe"]
    assert (await bot.send_message(ALICE, "after")).message_id == 2


async def test_refuse_and_restore(bot: Bot, telegram_peer: TelegramPeer) -> None:
    port = telegram_peer.port
    await telegram_peer.refuse()
    with pytest.raises(NetworkError):
        await bot.get_me()
    await telegram_peer.restore()
    assert telegram_peer.port == port
    assert (await bot.get_me()).username == telegram_peer.bot_username


async def test_inbound_and_faults_through_control_api(
    bot: Bot, telegram_peer: TelegramPeer
) -> None:
    base = f"{telegram_peer.url}/_sandbox"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/inbound", json={"chat_id": ALICE, "text": "hi"}) as resp:
            assert (await resp.json())["message"]["text"] == "hi"
        fault = {"channel": "telegram", "kind": "reject_recipient", "code": 403}
        async with session.post(f"{base}/faults", json=fault) as resp:
            assert resp.status == 201
        with pytest.raises(Forbidden):
            await bot.send_message(ALICE, "x")
        async with session.get(f"{base}/faults") as resp:
            assert [f["kind"] for f in await resp.json()] == ["reject_recipient"]
        async with session.delete(f"{base}/faults", params={"channel": "telegram"}) as resp:
            assert resp.status == 200
    await bot.send_message(ALICE, "x")
    (update,) = await bot.get_updates()
    assert update.message is not None and update.message.text == "hi"


async def test_multipart_bodies_are_accepted(telegram_peer: TelegramPeer) -> None:
    url = f"{telegram_peer.url}/bot{telegram_peer.bot_token}/SENDMESSAGE"
    form = aiohttp.FormData({"chat_id": str(ALICE), "text": "multi"})
    form.add_field("document", b"bytes", filename="x.txt")  # forces multipart/form-data
    async with aiohttp.ClientSession() as session, session.post(url, data=form) as resp:
        answer = await resp.json()
    assert answer["ok"] and answer["result"]["text"] == "multi"


async def test_refuse_ends_a_long_poll(bot: Bot, telegram_peer: TelegramPeer) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=30))
    await eventually(lambda: telegram_peer.polling)
    await telegram_peer.refuse()
    with pytest.raises(NetworkError):
        await poll


async def test_latency(bot_factory: BotFactory) -> None:
    async with TelegramPeer(latency=0.5) as peer:
        bot = await bot_factory(base=peer.url, read_timeout=0.1, initialize=False)
        with pytest.raises(TimedOut):
            await bot.get_me()
