"""The crisis board over HTTP: who gets in, what the API says, how changes arrive.

A real server on a socket, a real client, real stores (SQLite and PostgreSQL); what
another process writes is written by another process (the CLI).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from board_helpers import (
    API_TOKEN,
    PASSWORD,
    board_rig,
    client,
    log_in,
    login_token,
    part_where,
    sse,
)
from scripted import FakeClock

from config import ConfigError, settings_from_mapping
from router import Message
from router.board.auth import hash_password, verify_password
from router.model.health import Breaker, State
from router.store.reachability_log import CheckRecord, ReachabilityLog, RunRecord

BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
API = ("/api/health", "/api/messages", "/api/messages/msg_x", "/api/reachability", "/api/inbox")


async def test_without_a_board_section_the_routes_do_not_exist(tmp_path: Path) -> None:
    async with board_rig(tmp_path, with_board=False) as rig, client() as http:
        for path in ("/board", "/board/login", *API):
            async with http.get(rig.at(path), headers=BEARER) as answer:
                assert answer.status == 404, path
        async with http.get(rig.at("/healthz")) as answer:
            assert answer.status == 200
            assert (await answer.json())["status"] == "ok"


async def test_nothing_is_served_without_authentication(tmp_path: Path) -> None:
    async with board_rig(tmp_path) as rig, client() as http:
        await rig.router.send(Message("secret plan"), to="alice")
        async with http.get(rig.at("/board"), allow_redirects=False) as answer:
            assert answer.status == 303
            assert answer.headers["location"].startswith("/board/login")
            assert "secret plan" not in await answer.text()
        for path in (*API, "/board/events"):
            async with http.get(rig.at(path)) as answer:
                assert answer.status == 401, path
                assert "secret plan" not in await answer.text()
                assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer not-the-token-at-all"}
        async with http.get(rig.at("/api/messages"), headers=wrong) as answer:
            assert answer.status == 401
        # A cookie that is not ours gets nothing either.
        http.cookie_jar.update_cookies({"bc_session": "eyJ1IjogIngifQ.deadbeef"})
        async with http.get(rig.at("/api/messages")) as answer:
            assert answer.status == 401


async def test_a_script_uses_the_api_token(tmp_path: Path) -> None:
    async with board_rig(tmp_path) as rig, client() as http:
        async with http.get(rig.at("/api/health"), headers=BEARER) as answer:
            assert answer.status == 200
            channels = [row["name"] for row in (await answer.json())["channels"]]
        assert channels[:5] == ["whatsapp", "telegram", "sms", "voice", "email"]
        assert "twilio" in channels


async def test_a_channel_with_two_providers_shows_its_lanes(tmp_path: Path) -> None:
    async with board_rig(tmp_path, vonage=True) as rig, client(headers=BEARER) as http:
        async with http.get(rig.at("/api/health")) as answer:
            rows = {row["name"]: row for row in (await answer.json())["channels"]}
        sms = rows["sms"]
        assert len(sms["lanes"]) == 2 and sms["state"] == "up"
        assert all(rows[lane]["kind"] == "lane" for lane in sms["lanes"])
        assert rows["twilio"]["kind"] == "provider"
        # Another process finds Vonage down: SMS still goes through Twilio.
        now = time.time()
        await rig.router.store.save_health([Breaker("sms.vonage", State.DOWN, since=now,
                                                    last_error="refused", updated_at=now)])
        async with http.get(rig.at("/api/health")) as answer:
            rows = {row["name"]: row for row in (await answer.json())["channels"]}
        assert rows["sms.vonage"]["state"] == "down" and rows["sms"]["state"] == "up"
        await rig.router.store.save_health([Breaker("twilio", State.DOWN, since=now,
                                                    updated_at=now)])
        async with http.get(rig.at("/api/health")) as answer:
            rows = {row["name"]: row for row in (await answer.json())["channels"]}
        assert rows["sms"]["state"] == "down" and rows["whatsapp"]["blocked_by"] == "twilio"


async def test_login_sets_a_strict_http_only_cookie(tmp_path: Path) -> None:
    async with board_rig(tmp_path) as rig, client() as http:
        answer = await log_in(http, rig)
        assert answer.status == 303
        assert answer.headers["location"] == "/board"
        [cookie] = [c for c in answer.headers.getall("set-cookie") if c.startswith("bc_session")]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert "Secure" not in cookie  # plain http on loopback: a Secure cookie would be lost
        async with http.get(rig.at("/board")) as page:
            assert page.status == 200
            assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")


async def test_behind_an_https_public_url_the_cookies_are_secure(tmp_path: Path) -> None:
    # The proxy speaks https to browsers; this client, on the http side, hands the
    # cookies back itself (a jar keeps Secure cookies for https only).
    async with board_rig(tmp_path, public_url="https://alerts.example.com") as rig, \
            aiohttp.ClientSession() as http:
        async with http.get(rig.at("/board/login")) as page:
            token = login_token(await page.text())
            [login] = [c for c in page.headers.getall("set-cookie") if c.startswith("bc_login")]
        assert "Secure" in login
        nonce = login.split(";")[0]
        async with http.post(rig.at("/board/login"), allow_redirects=False,
                             headers={"Cookie": nonce},
                             data={"csrf": token, "password": PASSWORD}) as answer:
            assert answer.status == 303
            [cookie] = [c for c in answer.headers.getall("set-cookie")
                        if c.startswith("bc_session")]
        assert "Secure" in cookie and "HttpOnly" in cookie


async def test_a_missing_or_forged_csrf_token_is_refused(tmp_path: Path) -> None:
    async with board_rig(tmp_path) as rig, client() as http:
        async with http.get(rig.at("/board/login")) as page:
            token = login_token(await page.text())
        for form in ({"password": PASSWORD},
                     {"password": PASSWORD, "csrf": "0" * 32},
                     {"password": PASSWORD, "csrf": token[:-1] + ("0" if token[-1] != "0"
                                                                   else "1")}):
            async with http.post(rig.at("/board/login"), data=form,
                                 allow_redirects=False) as answer:
                assert answer.status == 403
                assert "bc_session" not in answer.cookies
        # The right token from another site: refused by its Origin.
        async with http.post(rig.at("/board/login"), allow_redirects=False,
                             data={"password": PASSWORD, "csrf": token},
                             headers={"Origin": "https://evil.example"}) as answer:
            assert answer.status == 403
        # A token without the cookie it was made for (another browser's form).
        async with client() as other, other.post(
                rig.at("/board/login"), data={"password": PASSWORD, "csrf": token},
                allow_redirects=False) as answer:
            assert answer.status == 403
        # Logging out needs the page's token too.
        await log_in(http, rig)
        async with http.post(rig.at("/board/logout"), data={"csrf": "forged"},
                             allow_redirects=False) as answer:
            assert answer.status == 403
        async with http.get(rig.at("/api/health")) as answer:
            assert answer.status == 200


async def test_a_hundred_wrong_passwords_are_slowed_down_and_none_lets_in(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    board = {"free_failures": 3, "max_login_delay": 15.0,
             "trusted_proxies": ["127.0.0.1/32"]}
    async with board_rig(tmp_path, board=board) as rig, client() as http:
        rig.board.throttle.clock = clock.time
        statuses, waits = [], []
        for attempt in range(100):
            answer = await log_in(http, rig, password=f"guess-{attempt}")
            statuses.append(answer.status)
            waits.append(int(answer.headers.get("Retry-After", "0")))
            assert "bc_session" not in answer.cookies
            if attempt % 10 == 9:
                clock.advance(waits[-1])  # an attacker who waits as told gets one more try
        assert statuses[:3] == [401, 401, 401]  # typing mistakes cost nothing
        assert statuses.count(429) >= 80  # refused unread while the wait runs
        assert max(waits) == 15  # doubling, capped: never a lockout
        async with http.get(rig.at("/api/health")) as answer:
            assert answer.status == 401
        # Another client behind the trusted proxy is not slowed by this one's failures.
        other = {"X-Forwarded-For": "203.0.113.9"}
        async with http.get(rig.at("/board/login")) as page:
            token = login_token(await page.text())
        async with http.post(rig.at("/board/login"), headers=other, allow_redirects=False,
                             data={"csrf": token, "password": PASSWORD}) as answer:
            assert answer.status == 303
        # The right password still works once the wait is over: nobody is locked out.
        http.cookie_jar.clear()
        clock.advance(15)
        assert (await log_in(http, rig)).status == 303


async def test_forwarded_for_is_believed_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    clock = FakeClock()
    async with board_rig(tmp_path, board={"free_failures": 0}) as rig, \
            client() as http:
        rig.board.throttle.clock = clock.time
        assert (await log_in(http, rig, password="wrong-password-1")).status == 401
        # An attacker cannot dodge the slow-down by claiming to be someone else.
        spoofed = {"X-Forwarded-For": "198.51.100.7"}
        async with http.get(rig.at("/board/login")) as page:
            token = login_token(await page.text())
        async with http.post(rig.at("/board/login"), headers=spoofed, allow_redirects=False,
                             data={"csrf": token, "password": PASSWORD}) as answer:
            assert answer.status == 429


async def test_named_users_log_in_with_hashed_passwords(tmp_path: Path) -> None:
    users = {"ana": hash_password("ana's long password")}
    board = {"password": None, "users": users}
    async with board_rig(tmp_path, board=board) as rig, client() as http:
        assert (await log_in(http, rig, password=PASSWORD, user="ana")).status == 401
        assert (await log_in(http, rig, password="ana's long password",
                             user="nobody")).status == 401
        assert (await log_in(http, rig, password="ana's long password",
                             user="ana")).status == 303
        async with http.get(rig.at("/board")) as page:
            assert "ana" in await page.text()


def test_password_hashes_verify_and_reject() -> None:
    encoded = hash_password("a good password")
    assert encoded.startswith("scrypt$")
    assert verify_password("a good password", encoded)
    assert not verify_password("a good passworD", encoded)
    assert not verify_password("a good password", "scrypt$99$8$1$AAAA$AAAA")


def test_board_settings_are_checked_without_echoing_secrets() -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from_mapping({"board": {"users": {"ana": "my-plain-password"}}})
    assert "board.users" in str(raised.value) and "my-plain-password" not in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        settings_from_mapping({"board": {}})
    assert "give a password or users" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        settings_from_mapping({"board": {"password": "long enough", "colour": "red"}})
    assert "board.colour: unknown key" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        settings_from_mapping({"board": {"password": "long enough",
                                         "trusted_proxies": ["not-an-ip"]}})
    assert "board.trusted_proxies" in str(raised.value)
    settings = settings_from_mapping({"board": {"password": "long enough",
                                                "api_token": "token-token-token"}})
    assert {"long enough", "token-token-token"} <= set(settings.secrets())


async def test_the_api_pages_filters_and_counts(
    tmp_path: Path, store_section: dict[str, Any]
) -> None:
    contacts = {f"person{i:02d}": {"telegram": 100000 + i} for i in range(30)}
    contacts["zoe"] = {"phone": "+33612345678"}
    async with board_rig(tmp_path, store=store_section, contacts=contacts) as rig, \
            client(headers=BEARER) as http:
        rig.sandbox.telegram.faults.fail("telegram", _forbidden(), times=5)
        first = await rig.router.broadcast(Message("first"), group="ops")
        second = await rig.router.send(Message("<b>second</b>"), to="zoe")
        async with http.get(rig.at("/api/messages")) as answer:
            listed = await answer.json()
        assert [m["message_id"] for m in listed["messages"]] == [second.message_id,
                                                                 first.message_id]
        counts = listed["messages"][1]["counts"]
        assert counts["accepted"] == 26 and counts["failed"] == 5
        assert sum(counts.values()) == 31 == listed["messages"][1]["total"]
        assert listed["messages"][0]["text"] == "<b>second</b>"  # JSON carries text as is
        url = rig.at(f"/api/messages/{first.message_id}")
        async with http.get(url, params={"limit": "10", "offset": "10"}) as answer:
            page = await answer.json()
        assert page["matching"] == 31 and len(page["deliveries"]) == 10
        assert page["deliveries"][0]["contact"] == "person10"
        async with http.get(url, params={"status": "failed"}) as answer:
            failed = await answer.json()
        assert failed["matching"] == 5
        assert {d["status"] for d in failed["deliveries"]} == {"failed"}
        async with http.get(url, params={"q": "ZO"}) as answer:
            [zoe] = (await answer.json())["deliveries"]
        assert zoe["contact"] == "zoe" and zoe["channel"] == "whatsapp"
        assert zoe["attempts"][0]["address"] == "+336•••••678"  # masked
        async with http.get(url, params={"channel": "telegram", "status": "accepted"}) as answer:
            assert (await answer.json())["matching"] == 25
        async with http.get(url, params={"status": "lost"}) as answer:
            assert answer.status == 400
            assert (await answer.json())["error"].startswith("status:")
        async with http.get(rig.at("/api/messages/msg_nothing")) as answer:
            assert answer.status == 404


def _forbidden() -> Any:
    from router.sandbox import Fault

    return Fault.reject_recipient()


async def test_inbox_and_reachability(tmp_path: Path, store_section: dict[str, Any]) -> None:
    async with board_rig(tmp_path, store=store_section) as rig, \
            client(headers=BEARER) as http:
        log = ReachabilityLog.of(rig.router.store)
        assert log is not None
        for index in range(3):
            checks = [CheckRecord("alice", "telegram", True, True, "accepted", None, None,
                                  1000.0 + index),
                      CheckRecord("alice", "sms", True, True, "accepted", None, None, 1000.0),
                      CheckRecord("bob", "sms", True, True, "accepted", None, None, 1000.0),
                      CheckRecord("bob", "whatsapp", True, False, None, None, None, 1000.0),
                      CheckRecord("carol", "email", False, False, None, None, None, 1000.0)]
            await log.record(RunRecord(f"run{index}", 1000.0 + index, 1001.0 + index, None,
                                       True, 3, 3, 1, 1, 1, ("email",)), checks)
        async with http.get(rig.at("/api/reachability")) as answer:
            reach = await answer.json()
        assert [run["run_id"] for run in reach["runs"]] == ["run2", "run1", "run0"]
        assert reach["last"]["single_domain_contacts"] == ["bob"]  # sms + whatsapp: Twilio
        assert reach["last"]["unreachable_contacts"] == ["carol"]
        assert reach["last_passed"]["telegram"] == 1002.0
        assert reach["last_passed"]["email"] is None
        await rig.sandbox.telegram.push_message(111111111, "on my way \x1b[31m")
        await rig.sandbox.telegram.push_message(111111111, "STOP")
        async with asyncio.timeout(10):
            while True:
                async with http.get(rig.at("/api/inbox")) as answer:
                    inbox = await answer.json()
                if len(inbox["inbound"]) == 2:
                    break
                await asyncio.sleep(0.05)
        assert [e["kind"] for e in inbox["inbound"]] == ["opt_out", "reply"]
        assert inbox["inbound"][1]["text"] == "on my way \\u001b[31m"  # no raw escape
        assert inbox["inbound"][1]["contact"] == "alice"
        assert inbox["opt_outs"][0]["contact"] == "alice"


async def test_what_another_process_writes_reaches_the_live_stream(
    tmp_path: Path, store_section: dict[str, Any]
) -> None:
    async with board_rig(tmp_path, store=store_section) as rig, client() as http:
        await log_in(http, rig)
        events = sse(http, rig.at("/board/events"))
        await part_where(events, "messages", lambda html: "No message" in html)
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "router.cli", "send", "--config", str(rig.config),
            "--to", "bob", "from another process",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        html = await part_where(events, "messages", lambda h: "from another process" in h)
        assert "bob" in html
        assert await cli.wait() == 0
        await events.aclose()


async def test_a_burst_of_writes_is_coalesced(tmp_path: Path) -> None:
    # With a long interval, many commits in a row reach a viewer as one or two updates.
    async with board_rig(tmp_path, board={"update_interval": 10.0}) as rig, \
            client() as http:
        await log_in(http, rig)
        events = sse(http, rig.at("/board/events"))
        versions = 0

        async def count() -> None:
            nonlocal versions
            async for event, _ in events:
                versions += event == "version"

        counting = asyncio.create_task(count())
        for index in range(40):
            await rig.router.send(Message(f"burst {index}"), to="alice")
        await asyncio.sleep(0.5)
        counting.cancel()
        assert 1 <= versions <= 3, versions


def test_sandbox_config_has_a_board_and_stdout_stays_a_config(tmp_path: Path) -> None:
    import signal
    import subprocess
    import tomllib

    process = subprocess.Popen([sys.executable, "-m", "router.cli", "sandbox"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        said = ""
        while "Ctrl-C" not in said or "crisis board" not in said:
            line = process.stderr.readline()
            assert line, said
            said += line
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    config = tomllib.loads(out)
    password = config["board"]["password"]
    assert len(password) >= 12
    assert "backchannel serve" in said and "/board" in said and password in said
    config["email"].pop("ca_file")  # the stopped sandbox took its CA file with it
    settings_from_mapping(config, base_dir=tmp_path)  # a valid config as printed
