"""The redundancy audit, through the real command: findings, weakest members, advice.

The audit reads the config only: the peers must see no request at all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import peer_traffic, run_cli, write_config
from operator_helpers import invoke, offline_config

from config.contacts import make_contact
from router.ops.audit import Finding, audit_contact
from router.sandbox import Sandbox

CONTACTS: dict[str, dict[str, object]] = {
    "alice": {"phone": "+33612345678", "telegram": 111111111, "email": "alice@example.com"},
    "frank": {"whatsapp": "+33612345679"},
    "sam": {"sms": "+14155552671", "voice": "+14155552671"},
    "paul": {"phone": "+14155552672"},
    # Has a Telegram chat id, but its own order leaves Telegram out.
    "olga": {"phone": "+447911123456", "telegram": 555, "order": ["whatsapp", "sms"]},
    "carol": {"telegram": 333333333, "email": "carol@example.com"},
}


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sandbox:
        yield sandbox


async def test_audit_names_single_domains_and_what_to_add(sb: Sandbox, tmp_path: Path) -> None:
    groups = {"ops": ["alice", "carol"], "field": ["alice", "frank", "sam"]}
    config = write_config(sb, tmp_path, CONTACTS, overrides={"groups": groups})

    as_json, table = await asyncio.gather(
        run_cli("audit", "--json", "--config", str(config)),
        run_cli("audit", "--config", str(config), columns=None),
    )

    assert as_json.status == 1, as_json
    payload = as_json.json()
    findings: dict[str, dict[str, Any]] = {f["contact"]: f for f in payload["findings"]}
    assert {name: f["finding"] for name, f in findings.items()} == {
        "frank": "whatsapp_only", "sam": "one_carrier_path", "paul": "single_domain",
        "olga": "single_domain",
    }
    assert findings["paul"]["channels"] == ["whatsapp", "sms", "voice"]
    assert findings["paul"]["shared_domains"] == ["twilio"]
    assert findings["paul"]["advice"] == ["add telegram (a chat id)", "add email (an address)"]
    assert findings["sam"]["shared_domains"] == ["carrier", "twilio"]
    assert "add telegram to this contact's order" in findings["olga"]["advice"]
    contacts = {c["contact"]: c for c in payload["contacts"]}
    assert contacts["alice"]["finding"] is None
    assert contacts["alice"]["independent"] == ["whatsapp", "telegram", "email"]
    assert contacts["carol"]["independent"] == ["telegram", "email"]
    group_rows = {g["group"]: g for g in payload["groups"]}
    assert group_rows["ops"] == {"group": "ops", "members": 2, "weakest": ["carol"],
                                 "independent": 2, "redundant": True}
    assert group_rows["field"]["weakest"] == ["frank", "sam"]
    assert group_rows["field"]["independent"] == 1 and not group_rows["field"]["redundant"]

    assert table.status == 1, table
    assert max(len(line.rstrip()) for line in table.stdout.splitlines()) <= 80, table
    for needle in ("WhatsApp only", "one carrier path", "weakest member",
                   "6 contacts, 4 without two independent channels"):  # fmt: skip
        assert needle in table.stdout, (needle, table)
    assert peer_traffic(sb) == {"twilio": 0, "vonage": 0, "telegram": 0, "smtp": 0}


def test_audit_of_a_redundant_group_and_a_contact_with_no_channel(tmp_path: Path) -> None:
    # Email is not enabled here: Erin, who only has an email address, has no channel.
    contacts = {"alice": CONTACTS["alice"], "erin": {"email": "erin@example.com"}}
    config = offline_config(tmp_path, contacts, email=None,
                            groups={"ops": ["alice"], "all": ["alice", "erin"]})  # fmt: skip

    ok = invoke(["audit", "--group", "ops", "--config", str(config)])
    broken = invoke(["audit", "--json", "--config", str(config)])

    assert ok.exit_code == 0, ok.output
    assert "every contact has two independent channels" in ok.stdout
    assert broken.exit_code == 1, broken.output
    [erin] = json.loads(broken.stdout)["findings"]
    assert erin["contact"] == "erin" and erin["finding"] == "no_channel"
    # One channel per failure group: a phone number, and Telegram.
    assert erin["advice"] == ["add phone or whatsapp (a number)", "add telegram (a chat id)"]
    all_group = next(g for g in json.loads(broken.stdout)["groups"] if g["group"] == "all")
    assert all_group["weakest"] == ["erin"] and all_group["independent"] == 0


def test_audit_bad_config_and_unknown_group_exit_2(tmp_path: Path) -> None:
    config = offline_config(tmp_path / "good", CONTACTS)
    bad = offline_config(tmp_path / "bad", CONTACTS, groups={"ops": ["zed"]})
    unknown = invoke(["audit", "--group", "nope", "--config", str(config)])
    invalid = invoke(["audit", "--config", str(bad)])
    assert unknown.exit_code == 2 and "unknown group 'nope'" in unknown.stderr, unknown.output
    assert invalid.exit_code == 2
    assert "groups.ops[0]: names an unknown contact" in invalid.stderr


def test_advice_when_no_independent_channel_is_enabled() -> None:
    domains = {"whatsapp": frozenset({"twilio", "meta"}), "sms": frozenset({"twilio", "carrier"})}
    paul = make_contact("paul", phone="+14155552672")
    found = audit_contact(paul, ["whatsapp", "sms"], domains, ["whatsapp", "sms"])
    assert found.finding is Finding.SINGLE_DOMAIN
    assert found.shared == ("twilio",)
    assert found.advice == (
        "enable a channel that does not depend on carrier, meta, twilio such as telegram or email",
    )
    ok = audit_contact(paul, ["whatsapp"], {"whatsapp": frozenset()}, ["whatsapp"])
    assert ok.finding is Finding.WHATSAPP_ONLY


async def test_two_providers_one_carrier_is_told_apart_from_independence(
    sb: Sandbox, tmp_path: Path
) -> None:
    # Vonage beside Twilio for SMS and voice: a phone-only contact survives either
    # provider's outage, and is still one failure domain (the carrier): exit 1 as before.
    contacts = {"sam": CONTACTS["sam"], "paul": CONTACTS["paul"], "carol": CONTACTS["carol"]}
    with_vonage = write_config(sb, tmp_path / "vonage", contacts, vonage=True)
    twilio_only = write_config(sb, tmp_path / "twilio", contacts)
    both, alone, table = await asyncio.gather(
        run_cli("audit", "--json", "--config", str(with_vonage)),
        run_cli("audit", "--json", "--config", str(twilio_only)),
        run_cli("audit", "--config", str(with_vonage), columns=None),
    )
    assert (both.status, alone.status, table.status) == (1, 1, 1), both
    found = {c["contact"]: c for c in both.json()["contacts"]}
    assert found["sam"]["finding"] == "one_carrier_path"
    assert found["sam"]["providers"] == ["twilio", "vonage"]
    assert found["sam"]["survives_provider_outage"] is True
    assert found["sam"]["redundancy"] == "two providers, one carrier"
    assert found["sam"]["shared_domains"] == ["carrier"]  # not Twilio any more
    assert found["paul"]["finding"] == "single_domain"
    assert found["paul"]["redundancy"] == "two providers, one carrier"
    assert found["carol"]["finding"] is None
    before = {c["contact"]: c for c in alone.json()["contacts"]}
    assert before["sam"]["survives_provider_outage"] is False
    assert before["sam"]["redundancy"] == "one carrier path"
    assert before["sam"]["shared_domains"] == ["carrier", "twilio"]
    assert "two providers, one carrier" in table.stdout, table
    assert peer_traffic(sb) == {"twilio": 0, "vonage": 0, "telegram": 0, "smtp": 0}


def test_email_on_an_internal_domain_is_accepted_and_named(tmp_path: Path) -> None:
    contacts = {
        "alice": CONTACTS["alice"],
        "ivan": {"telegram": 777, "email": "ivan@ops.corp.local"},
        "nina": {"phone": "+33612345670", "email": "nina@office.lan"},
    }
    config = offline_config(tmp_path, contacts)
    as_json = invoke(["audit", "--json", "--config", str(config)])
    table = invoke(["audit", "--config", str(config)])
    assert as_json.exit_code == 0, as_json.output  # accepted, and still a second path
    payload = json.loads(as_json.stdout)
    assert payload["internal_email"] == ["ivan", "nina"]
    found = {c["contact"]: c["internal_email"] for c in payload["contacts"]}
    assert found == {"alice": False, "ivan": True, "nina": True}
    assert table.exit_code == 0, table.output
    line = next(row for row in table.stdout.splitlines() if "internal domain" in row)
    assert "ivan, nina" in line and "your own relay" in line, table.stdout
    assert "ops.corp.local" not in table.stdout  # names, not addresses
