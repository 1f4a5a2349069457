"""Router rules with scripted channels and a fake clock (design.md section 4)."""

from __future__ import annotations

from typing import Any

import pytest
from scripted import FakeClock, ScriptedChannel

from config import make_contact, settings_from_mapping
from config.sections import StoreSettings
from router import AttemptKind, BadInput, Message, Outcome, Router, Scope, Status, Verdict
from router.store import open_store

PHONE = "+33612345678"


def make_router(
    store: dict[str, Any], channels: list[ScriptedChannel], **routing: Any
) -> tuple[Router, FakeClock]:
    config: dict[str, Any] = {
        "routing": {"order": [c.name for c in channels], "retry_backoff": 0.1, **routing},
        "store": store,
        "contacts": {
            "alice": {"phone": PHONE, "telegram": 111, "email": "alice@example.com"},
            "bob": {"phone": "+33698765432", "email": "bob@example.com"},
        },
        "groups": {"ops": ["alice", "bob"]},
    }
    clock = FakeClock()
    router = Router(
        settings_from_mapping(config), channels={c.name: c for c in channels}, clock=clock
    )
    return router, clock


async def recorded(store: dict[str, Any], sql: str) -> list[tuple[Any, ...]]:
    """Read the store afresh, as another process would: whichever backend it is."""
    reader = open_store(StoreSettings(**store))
    await reader.open()
    try:
        return await reader.run(lambda tx: tx.fetchall(sql))
    finally:
        await reader.close()


async def attempts_in_store(store: dict[str, Any]) -> list[tuple[Any, ...]]:
    return await recorded(
        store, "SELECT contact, channel, state, verdict FROM attempts ORDER BY started_at, id"
    )


async def test_first_channel_that_works_takes_it(store_section: dict[str, Any]) -> None:
    whatsapp, telegram = ScriptedChannel("whatsapp"), ScriptedChannel("telegram")
    router, _ = make_router(store_section, [whatsapp, telegram])
    async with router:
        result = await router.send(Message("disk full"), to="alice")
    assert (result.status, result.channel) == (Status.ACCEPTED, "whatsapp")
    assert [a.channel for a in result.attempts] == ["whatsapp"]
    assert telegram.sent == []
    assert await attempts_in_store(store_section) == [("alice", "whatsapp", "done", "accepted")]


async def test_transient_failures_retry_then_fail_over(store_section: dict[str, Any]) -> None:
    whatsapp = ScriptedChannel("whatsapp").will(*[Outcome.transient("HTTP 503")] * 3)
    telegram = ScriptedChannel("telegram")
    router, clock = make_router(store_section, [whatsapp, telegram], tries_per_channel=3)
    async with router:
        result = await router.send(Message("disk full"), to="alice")
    assert result.channel == "telegram"
    assert [(a.channel, a.kind) for a in result.attempts] == [
        ("whatsapp", AttemptKind.FIRST),
        ("whatsapp", AttemptKind.RETRY),
        ("whatsapp", AttemptKind.RETRY),
        ("telegram", AttemptKind.FIRST),
    ]
    assert len(whatsapp.sent) == 3
    assert len(clock.slept) == 2  # a pause between tries, none after the last


async def test_permanent_failure_moves_on_at_once(store_section: dict[str, Any]) -> None:
    not_on_whatsapp = Outcome.permanent("not on WhatsApp", Scope.RECIPIENT)
    whatsapp = ScriptedChannel("whatsapp").will(not_on_whatsapp)
    telegram = ScriptedChannel("telegram")
    router, clock = make_router(store_section, [whatsapp, telegram])
    async with router:
        result = await router.send(Message("disk full"), to="alice")
    assert [a.channel for a in result.attempts] == ["whatsapp", "telegram"]
    assert clock.slept == []


async def test_unknown_is_never_resent_on_the_same_channel(store_section: dict[str, Any]) -> None:
    whatsapp = ScriptedChannel("whatsapp").will(Outcome.unknown("read timeout"))
    telegram = ScriptedChannel("telegram")
    router, _ = make_router(store_section, [whatsapp, telegram], tries_per_channel=5)
    async with router:
        result = await router.send(Message("disk full"), to="alice")
    assert len(whatsapp.sent) == 1
    assert result.status is Status.ACCEPTED and result.channel == "telegram"
    assert [a.outcome.verdict for a in result.attempts] == [Verdict.UNKNOWN, Verdict.ACCEPTED]


async def test_unknown_with_stop_policy_ends_as_unknown(store_section: dict[str, Any]) -> None:
    whatsapp = ScriptedChannel("whatsapp").will(Outcome.unknown("read timeout"))
    telegram = ScriptedChannel("telegram")
    router, _ = make_router(store_section, [whatsapp, telegram], on_unknown="stop")
    async with router:
        result = await router.send(Message("disk full"), to="alice")
    assert result.status is Status.UNKNOWN
    assert telegram.sent == []
    assert any("policy says stop" in note for note in result.notes)


async def test_retry_after_is_honoured_and_a_long_one_fails_over(
    store_section: dict[str, Any],
) -> None:
    whatsapp = ScriptedChannel("whatsapp").will(
        Outcome.transient("429", retry_after=7.0),
        Outcome.transient("429", retry_after=600.0),
    )
    telegram = ScriptedChannel("telegram")
    router, clock = make_router(store_section, [whatsapp, telegram], max_retry_after=30)
    async with router:
        result = await router.send(Message("disk full"), to="alice")
    assert clock.slept and clock.slept[0] >= 7.0
    assert [a.channel for a in result.attempts] == ["whatsapp", "whatsapp", "telegram"]
    assert any("over the 30s cap" in note for note in result.notes)


async def test_an_adapter_that_raises_counts_as_maybe_sent(store_section: dict[str, Any]) -> None:
    whatsapp = ScriptedChannel("whatsapp").will(RuntimeError("bug"))
    telegram = ScriptedChannel("telegram")
    router, _ = make_router(store_section, [whatsapp, telegram], tries_per_channel=3)
    async with router:
        result = await router.send(Message("disk full"), to="alice")
    assert len(whatsapp.sent) == 1
    assert result.attempts[0].outcome.verdict is Verdict.UNKNOWN
    assert result.channel == "telegram"


async def test_everything_failing_is_failed_and_recorded(store_section: dict[str, Any]) -> None:
    whatsapp = ScriptedChannel("whatsapp").will(Outcome.permanent("bad", Scope.CHANNEL))
    email = ScriptedChannel("email").will(Outcome.permanent("550", Scope.RECIPIENT))
    router, _ = make_router(store_section, [whatsapp, email])
    async with router:
        result = await router.send(Message("disk full"), to="bob")
    assert result.status is Status.FAILED and result.channel is None
    assert await recorded(store_section, "SELECT status FROM deliveries") == [("failed",)]


async def test_text_too_long_for_one_channel_skips_it(store_section: dict[str, Any]) -> None:
    sms = ScriptedChannel("sms", max_length=10)
    email = ScriptedChannel("email")
    router, _ = make_router(store_section, [sms, email])
    async with router:
        result = await router.send(Message("a rather long message"), to="alice")
    assert result.channel == "email" and sms.sent == []
    assert any("too long" in note for note in result.notes)


async def test_text_too_long_everywhere_is_bad_input_and_sends_nothing(
    store_section: dict[str, Any],
) -> None:
    sms = ScriptedChannel("sms", max_length=10)
    router, _ = make_router(store_section, [sms])
    async with router:
        with pytest.raises(BadInput, match="too long for every channel of alice"):
            await router.broadcast(Message("a rather long message"), group="ops")
    assert sms.sent == []
    assert await attempts_in_store(store_section) == []


async def test_per_channel_words_are_used(store_section: dict[str, Any]) -> None:
    sms = ScriptedChannel("sms", max_length=20)
    router, _ = make_router(store_section, [sms])
    async with router:
        await router.send(Message("the long version of it", by_channel={"sms": "short"}), to="bob")
    assert sms.sent[0][1] == "short"


async def test_a_contact_order_overrides_the_deployment(store_section: dict[str, Any]) -> None:
    whatsapp, email = ScriptedChannel("whatsapp"), ScriptedChannel("email")
    router, _ = make_router(store_section, [whatsapp, email])
    carol = make_contact(
        "carol", phone=PHONE, email="carol@example.com", order=["email", "whatsapp"]
    )
    async with router:
        result = await router.send(Message("hi"), to=carol)
    assert result.channel == "email" and whatsapp.sent == []


async def test_broadcast_concurrency_is_bounded(store_section: dict[str, Any]) -> None:
    email = ScriptedChannel("email", delay=0.05)  # long enough for sends to overlap
    contacts = {f"c{i}": {"email": f"c{i}@example.com"} for i in range(20)}
    config = {
        "routing": {"concurrency": 3},
        "store": store_section,
        "contacts": contacts,
        "groups": {"all": list(contacts)},
    }
    router = Router(settings_from_mapping(config), channels={"email": email}, clock=FakeClock())
    seen: list[str] = []
    async with router:
        result = await router.broadcast(
            Message("hi"), group="all", on_result=lambda r: seen.append(r.contact)
        )
    assert result.reached_all and len(result) == 20
    assert email.max_in_flight == 3
    assert sorted(seen) == sorted(contacts)
    assert [r.contact for r in result] == list(contacts)  # results in the group's order


async def test_unknown_contact_and_group_are_bad_input(store_section: dict[str, Any]) -> None:
    router, _ = make_router(store_section, [ScriptedChannel("email")])
    async with router:
        with pytest.raises(BadInput, match="unknown contact 'mallory'"):
            await router.send(Message("x"), to="mallory")
        with pytest.raises(BadInput, match="unknown group 'nobody'"):
            await router.broadcast(Message("x"), group="nobody")


def test_empty_message_is_bad_input() -> None:
    with pytest.raises(BadInput, match="text is empty"):
        Message("   ")
    with pytest.raises(BadInput, match="single line"):
        Message("x", subject="a\r\nBcc: everyone@example.com")
