"""FaultBook semantics: order, uses, addresses, and what a peer can inject."""

from __future__ import annotations

import pytest

from router.sandbox.faults import Fault, FaultBook, FaultSpec


def test_times_are_consumed_in_order() -> None:
    book = FaultBook(("sms",))
    book.fail("sms", Fault.http(503), times=1)
    book.fail("sms", Fault.drop(), times=2)
    assert book.take("sms", "+1") == Fault.http(503)
    assert book.take("sms", "+1") == Fault.drop()
    assert book.take("sms", "+1") == Fault.drop()
    assert book.take("sms", "+1") is None


def test_until_cleared_and_clear_per_channel() -> None:
    book = FaultBook(("sms", "voice"))
    book.fail("sms", Fault.stall())
    book.fail("voice", Fault.stall())
    for _ in range(5):
        assert book.take("sms", None) == Fault.stall()
    book.clear("sms")
    assert book.take("sms", None) is None
    assert book.take("voice", None) == Fault.stall()
    book.clear()
    assert book.take("voice", None) is None


def test_address_match_uses_the_peer_normalisation() -> None:
    book = FaultBook(("email",), normalize=str.lower)
    book.fail("email", Fault.reject_recipient(), address="Bob@Example.com")
    assert book.take("email", "alice@example.com") is None
    assert book.take("email", None) is None
    assert book.take("email", "bob@example.COM") == Fault.reject_recipient()


def test_where_skips_without_consuming() -> None:
    book = FaultBook(("email",))
    book.fail("email", Fault.smtp(550, stage="rcpt"), times=1)
    assert book.take("email", "a@b", where=lambda f: f.stage == "mail") is None
    assert book.take("email", "a@b") == Fault.smtp(550, stage="rcpt")


def test_peer_limits_are_enforced() -> None:
    book = FaultBook(("telegram",), ("http", "stall"))
    with pytest.raises(ValueError, match="serves"):
        book.fail("sms", Fault.stall())
    with pytest.raises(ValueError, match="cannot inject"):
        book.fail("telegram", Fault.undelivered())
    with pytest.raises(ValueError, match="times"):
        book.fail("telegram", Fault.stall(), times=0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Fault.http(200),
        lambda: Fault.smtp(250),
        lambda: Fault.smtp(550, stage="quit"),
        lambda: Fault.rate_limited(-1),
    ],
)
def test_invalid_faults(build: object) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        build()  # type: ignore[operator]


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert Fault.rate_limited(0.2).retry_after_seconds == 1
    assert Fault.rate_limited(2.0).retry_after_seconds == 2
    assert Fault.rate_limited(2.1).retry_after_seconds == 3


def test_spec_from_json() -> None:
    spec = FaultSpec.from_json(
        {"channel": "sms", "kind": "http", "status": 400, "code": 21211, "times": 2,
         "address": "+33612345678"}
    )  # fmt: skip
    assert spec == FaultSpec("sms", Fault.http(400, code=21211), 2, "+33612345678")
    with pytest.raises(ValueError, match="unknown fault fields"):
        FaultSpec.from_json({"channel": "sms", "kind": "http", "sttus": 500})
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultSpec.from_json({"channel": "sms", "kind": "explode"})
    with pytest.raises(ValueError, match="integer"):
        FaultSpec.from_json({"channel": "sms", "kind": "http", "status": "500"})
