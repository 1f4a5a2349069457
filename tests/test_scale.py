"""Audiences too large to hold (issue 17): recorded in batches, worked and read back a page
at a time, streamed out by the CLI; and an interrupted recording finished by a repeat."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from cli_helpers import run_cli
from scripted import FakeClock, ScriptedChannel

from config import settings_from_mapping
from router import Message, Router
from router.sandbox import Sandbox
from router.sending.dispatch import HOLD
from router.store.base import DeliverySeed

MANY = HOLD + 500


def crowd(count: int) -> dict[str, dict[str, object]]:
    return {f"m{i:05d}": {"sms": f"+336{50_000_000 + i:08d}"} for i in range(count)}


def scripted(store: dict[str, Any], sms: ScriptedChannel, count: int) -> Router:
    people = crowd(count)
    settings = settings_from_mapping({
        "routing": {"order": ["sms"], "concurrency": 32}, "store": store,
        "contacts": people, "groups": {"all": list(people)},
    })
    return Router(settings, channels={"sms": sms}, clock=FakeClock())


async def test_a_large_broadcast_is_read_back_from_the_store(
    store_section: dict[str, Any],
) -> None:
    sms = ScriptedChannel("sms")
    seen: list[str] = []
    async with scripted(store_section, sms, MANY) as router:
        result = await router.broadcast(Message("outage"), group="all",
                                        on_result=lambda r: seen.append(r.contact))
        assert result.stored is not None and not result.held  # not held in memory
        assert len(result) == MANY and result.reached_all
        contacts = [r.contact for r in result]  # read back, in audience order
        assert contacts == sorted(crowd(MANY))
        assert all(r.channel == "sms" and len(r.attempts) == 1 for r in result)
        assert sorted(seen) == contacts  # every result reached on_result as it came
        assert len(result.to_json()["results"]) == MANY
    assert Counter(address for address, _, _ in sms.sent) == Counter(
        {str(c["sms"]): 1 for c in crowd(MANY).values()}
    )


async def test_a_large_broadcast_s_results_read_after_the_router_closed(
    store_section: dict[str, Any],
) -> None:
    """The usual shape: ``async with`` ends, then the results are looked at."""
    async with scripted(store_section, ScriptedChannel("sms"), MANY) as router:
        result = await router.broadcast(Message("outage"), group="all")
    assert result.stored is not None
    assert len(result) == MANY and result.reached_all
    assert [r.contact for r in result] == sorted(crowd(MANY))
    assert all(r.channel == "sms" and r.reached for r in result.results)


async def test_a_small_broadcast_holds_its_results(store_section: dict[str, Any]) -> None:
    async with scripted(store_section, ScriptedChannel("sms"), 3) as router:
        result = await router.broadcast(Message("outage"), group="all")
        assert result.stored is None and len(result.held) == 3


async def test_an_interrupted_recording_sent_nothing_and_a_repeat_finishes_it(
    store_section: dict[str, Any], tmp_path: Path,
) -> None:
    """A process died while recording a big audience: nothing of it was sent (sending
    starts once the whole audience is on disk); the repeat of its key records the rest
    and sends each contact once."""
    sms = ScriptedChannel("sms")
    people = crowd(50)
    section = {"path": str(tmp_path / "bc.db")} | store_section
    router = scripted(section, sms, 50)
    message = Message("outage")
    async with router:
        # What the dead process had done: the message, and the first 20 contacts.
        store = router.store
        record = router.parts.dispatcher._record(message, {"group": "all"},
                                                  _options("key-1"))
        claim = await store.begin_message(record, owner="gone:x:y:1:dead",
                                          owner_is_alive=lambda o, b: o != "gone:x:y:1:dead")
        from router.store.base import Fence

        seeds = [DeliverySeed(name, json.dumps({"addresses": {"sms": str(f["sms"])},
                                                "order": None}, sort_keys=True))
                 for name, f in list(people.items())[:20]]
        assert await store.record_deliveries(claim.message_id, seeds, first_position=0,
                                             at=record.created_at, goal="accepted",
                                             fence=Fence("gone:x:y:1:dead", 1), fresh=True)
        await store.heartbeat([claim.message_id], owner="gone:x:y:1:dead", at=0.0)  # long dead
        sent_before = len(sms.sent)
        result = await router.broadcast(message, group="all", idempotency_key="key-1")
        assert result.message_id == claim.message_id
        assert len(result) == 50 and result.reached_all
    assert len(sms.sent) - sent_before == 50


def _options(key: str) -> Any:
    from router.model.options import SendOptions

    return SendOptions(idempotency_key=key)


async def _cli(*args: str, config: Path) -> tuple[int, str, str]:
    run = await run_cli(*args, "--config", str(config), columns=None)
    return run.status, run.stdout, run.stderr


async def test_json_lines_and_json_stream_a_large_broadcast(tmp_path: Path) -> None:
    count = HOLD + 200
    fast = {"per_second": 100_000, "per_recipient_per_second": 100_000, "burst": 1000}
    async with Sandbox(latency=0.0) as sandbox:
        config = tmp_path / "backchannel.toml"
        config.write_text(sandbox.config_toml(
            contacts=crowd(count), store_path=str(tmp_path / "bc.db"),
            overrides={"routing": {"order": ["sms"], "confirm_above": 100_000},
                       "limits.sms": fast},
        ))
        status, out, err = await _cli("broadcast", "-g", "ops", "--json-lines", "first",
                                      config=config)
        assert status == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        *results, last = lines
        assert len(results) == count and {r["status"] for r in results} == {"accepted"}
        assert last["summary"]["contacts"] == count
        assert last["summary"]["statuses"] == {"accepted": count}
        status, out, err = await _cli("broadcast", "-g", "ops", "--json", "second",
                                      config=config)
        assert status == 0, err
        payload = json.loads(out)
        assert len(payload["results"]) == count
        assert [r["contact"] for r in payload["results"]] == sorted(crowd(count))
        status, out, _ = await _cli("broadcast", "-g", "ops", "third", config=config)
        assert status == 0 and f"{count}/{count} contacts reached" in out
        assert len(out.splitlines()) < 20  # everyone reached: no table of a thousand rows


def _with_directory(sandbox: Sandbox, tmp_path: Path, files: dict[str, str],
                    toml_contacts: dict[str, dict[str, object]],
                    groups: dict[str, list[str]]) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    config = tmp_path / "backchannel.toml"
    fast = {"per_second": 100_000, "per_recipient_per_second": 100_000, "burst": 1000}
    config.write_text(sandbox.config_toml(
        contacts=toml_contacts, store_path=str(tmp_path / "bc.db"),
        overrides={"routing": {"order": ["sms", "email"], "confirm_above": 100_000},
                   "limits.sms": fast, "directory": {"files": list(files)},
                   "groups": groups},
    ))
    return config


async def test_a_group_from_a_csv_file_and_the_config_is_reached_once_each(
    tmp_path: Path,
) -> None:
    staff = "name,phone,email,groups\n" + "".join(
        f"e{i:04d},+336{60_000_000 + i:08d},e{i:04d}@example.com,night\n" for i in range(300)
    )
    clients = "\ufeffname,sms,groups\r\n" + "".join(
        f"\"c{i:04d}\",+336{70_000_000 + i:08d},\"night;day\"\r\n" for i in range(200)
    )
    toml = {"alice": {"sms": "+33612345678"}, "bob": {"email": "bob@example.com"}}
    async with Sandbox(latency=0.0) as sandbox:
        config = _with_directory(sandbox, tmp_path, {"staff.csv": staff, "clients.csv": clients},
                                 toml, {"night": ["alice", "bob"], "day": []})
        status, out, err = await _cli("broadcast", "-g", "night", "--json-lines", "outage",
                                      config=config)
        assert status == 0, err
        *results, summary = [json.loads(line) for line in out.splitlines()]
        names = [r["contact"] for r in results]
        assert len(names) == len(set(names)) == 502  # the union, nobody twice
        assert {"alice", "bob", "e0000", "c0199"} <= set(names)
        assert summary["summary"]["statuses"] == {"accepted": 502}
        sms = Counter(m.to for m in sandbox.twilio.sent("sms"))
        assert len(sms) == 501 and max(sms.values()) == 1  # alice, 300 staff, 200 clients
        status, out, _ = await _cli("send", "--to", "c0042", "--json", "hello",
                                    config=config)  # a contact found in a file
        assert status == 0 and json.loads(out)["results"][0]["channel"] == "sms"
        status, out, _ = await _cli("audit", "--json", config=config)
        audited = {c["contact"] for c in json.loads(out)["contacts"]}
        assert len(audited) == 502


async def test_a_bad_contact_file_is_one_report_exit_2_and_nothing_sent(
    tmp_path: Path,
) -> None:
    staff = ("name,phone,email,groups\n"
             "ann,+33612345678,ann@example.com,night\n"
             "bad1,+3361234,,night\n"                         # line 3: not a valid number
             "bad2,,not-an-email,night\n"                     # line 4: bad email
             "bad3,+33612345679,,nowhere\n"                   # line 5: unknown group
             "ann,+33612345670,,night\n")                     # line 6: defined twice
    async with Sandbox(latency=0.0) as sandbox:
        config = _with_directory(sandbox, tmp_path, {"staff.csv": staff},
                                 {"alice": {"sms": "+33612345688"}}, {"night": ["alice"]})
        status, out, err = await _cli("broadcast", "-g", "night", "outage", config=config)
        assert status == 2, (out, err)
        for line in (3, 4, 5, 6):
            assert f"staff.csv:{line}:" in err, err
        assert "4 bad lines" in err and "Traceback" not in err
        assert "33612345679" not in err  # a phone number is never echoed whole
        assert sandbox.twilio.sent("sms") == [] and sandbox.smtp.received == []
