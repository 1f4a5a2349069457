"""The composed Sandbox: config, shared control API, clear()."""

from __future__ import annotations

import re
import tomllib

import aiohttp
import aiosmtplib
import pytest
from sandbox_helpers import SandboxTwilioHttpClient
from telegram import Bot
from telegram.request import HTTPXRequest
from twilio.rest import Client

from router.sandbox import EMAIL_SENDER, Fault, Sandbox, toml_string

pytestmark = pytest.mark.filterwarnings(
    "ignore:The 'auth' parameter is deprecated:DeprecationWarning"
)


async def test_config_points_at_the_peers() -> None:
    async with Sandbox() as sb:
        config = tomllib.loads(sb.config_toml())
        assert config["routing"]["order"] == ["whatsapp", "telegram", "sms", "voice", "email"]
        assert config["twilio"] == {
            "account_sid": sb.twilio.account_sid,
            "auth_token": sb.twilio.auth_token,
            "api_base": sb.twilio_url,
        }
        assert re.fullmatch(r"AC[0-9a-f]{32}", sb.twilio.account_sid)
        assert re.fullmatch(r"[0-9a-f]{32}", sb.twilio.auth_token)
        assert re.fullmatch(r"\d+:[A-Za-z0-9_-]{35}", sb.telegram.bot_token)
        assert config["telegram"]["api_base"] == sb.telegram_url
        assert config["email"] == {
            "host": "127.0.0.1", "port": sb.smtp.port, "username": "demo",
            "password": "demo-password", "sender": EMAIL_SENDER,
            "starttls": True, "ca_file": sb.smtp.ca_pem_path,
        }  # fmt: skip
        assert config["channels"]["whatsapp"]["sender"] == "whatsapp:+14155238886"
        assert config["store"]["path"] == "backchannel.db"
        assert config["contacts"]["alice"]["phone"] == "+33612345678"
        assert config["groups"]["ops"] == ["alice", "bob", "carol", "dave"]


async def test_config_for_implicit_tls_and_odd_strings() -> None:
    async with Sandbox(smtp_tls="implicit", smtp_auth=None) as sb:
        contacts = {'o"neil\\x': {"email": 'quote"back\\slash\n@example.com', "telegram": 5}}
        config = tomllib.loads(sb.config_toml(contacts, store_path="C:\\data\\bc.db"))
        assert config["email"]["use_tls"] is True and config["email"]["starttls"] is False
        assert "username" not in config["email"]
        assert config["contacts"]['o"neil\\x']["email"] == 'quote"back\\slash\n@example.com'
        assert config["store"]["path"] == "C:\\data\\bc.db"
        assert config["groups"]["ops"] == ['o"neil\\x']
    assert tomllib.loads(f"k = {toml_string(chr(1) + chr(127))}")["k"] == "\x01\x7f"


async def test_every_peer_works_and_clear_restores() -> None:
    async with Sandbox() as sb:
        http = SandboxTwilioHttpClient(sb.twilio_url, timeout=5)
        twilio = Client(sb.twilio.account_sid, sb.twilio.auth_token, http_client=http)
        bot = Bot(sb.telegram.bot_token, base_url=f"{sb.telegram_url}/bot", request=HTTPXRequest())
        try:
            await twilio.messages.create_async(to="+33612345678", from_="+15005550006", body="a")
            async with bot:
                message = await bot.send_message(111111111, "b")
                assert message.chat.first_name == "Alice"
            await aiosmtplib.send(
                b"Subject: c\r\n\r\nc\r\n", sender="alerts@backchannel.test",
                recipients=["alice@example.com"], hostname="127.0.0.1", port=sb.smtp.port,
                start_tls=True, tls_context=sb.smtp.client_context(), username="demo",
                password="demo-password", timeout=2,
            )  # fmt: skip
            await sb.twilio.refuse()
            await sb.smtp.refuse()
            sb.telegram.faults.fail("telegram", Fault.http(500))
            await sb.clear()
            assert not sb.twilio.refused and not sb.smtp.refused
            assert sb.telegram.faults.rules == ()
            await twilio.messages.create_async(to="+33612345678", from_="+15005550006", body="d")
            assert len(sb.twilio.sent("sms")) == 2
            assert sb.received() == {
                "whatsapp": [], "sms": ["+33612345678"] * 2, "voice": [],
                "telegram": ["111111111"], "email": ["alice@example.com"],
            }  # fmt: skip
        finally:
            await http.close()


async def test_one_control_endpoint_scripts_every_channel() -> None:
    async with Sandbox(smtp_tls="none", smtp_auth=None) as sb, aiohttp.ClientSession() as session:
        email_fault = {"channel": "email", "kind": "reject_recipient", "times": 1}
        async with session.post(f"{sb.telegram_url}/_sandbox/faults", json=email_fault) as resp:
            assert resp.status == 201
        tg_fault = {"channel": "telegram", "kind": "stall"}
        async with session.post(f"{sb.twilio_url}/_sandbox/faults", json=tg_fault) as resp:
            assert resp.status == 201
        assert sb.smtp.faults.rules[0].fault == Fault.reject_recipient()
        assert sb.telegram.faults.rules[0].fault == Fault.stall()
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await aiosmtplib.send(
                b"Subject: x\r\n\r\nx\r\n", sender="a@b.test", recipients=["c@d.test"],
                hostname="127.0.0.1", port=sb.smtp.port, start_tls=False, timeout=2,
            )  # fmt: skip
        async with session.delete(f"{sb.twilio_url}/_sandbox/faults") as resp:
            assert resp.status == 200
        assert sb.telegram.faults.rules == ()
