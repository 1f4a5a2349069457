"""`reachability --send-test --ack-wait`: who answered their test, and on which channel."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

from router.sandbox import Sandbox

CONTACTS = {
    "alice": {"sms": "+33612345678", "telegram": 111111111},
    "bob": {"telegram": 222222222, "email": "bob@example.com"},
}


async def test_an_answer_on_telegram_counts_for_telegram_only(tmp_path: Path) -> None:
    async with Sandbox() as sandbox:
        config = tmp_path / "backchannel.toml"
        config.write_text(sandbox.config_toml(
            contacts=CONTACTS, store_path="bc.db",
            overrides={"limits.sms": {"per_second": 100}},
        ))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "router.cli", "reachability", "--send-test", "--ack-wait",
            "6s", "--json", "--config", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            while not [s for s in sandbox.telegram.sent if s.chat_id == 111111111]:
                await asyncio.sleep(0.05)
        await sandbox.telegram.push_message(111111111, "OK, got the test")
        out, err = await process.communicate()
        sms_bodies = [m.body for m in sandbox.twilio.sent("sms")]
    assert process.returncode in (0, 1), err.decode()
    report = json.loads(out)
    answers = {
        (contact["contact"], check["channel"]): check["acknowledged"]
        for contact in report["contacts"] for check in contact["channels"]
    }
    assert answers[("alice", "telegram")] is True
    assert answers[("alice", "sms")] is False
    assert answers[("bob", "telegram")] is False
    assert answers[("bob", "email")] is False  # tested, and email cannot answer
    assert all("to acknowledge" in body for body in sms_bodies)  # the test asked
    with sqlite3.connect(tmp_path / "bc.db") as db:  # and nothing is left to escalate
        assert db.execute("SELECT COUNT(*) FROM deliveries WHERE done = 0").fetchone() == (0,)
