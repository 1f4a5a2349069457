"""`backchannel demo` runs as a newcomer would run it, and shows what it promises."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path


async def test_the_demo_fails_over_and_stops_escalating_when_acknowledged(
    tmp_path: Path,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "demo",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # its own: what it leaves is counted
    )
    out, err = await process.communicate()
    text = out.decode()
    assert process.returncode == 0, err.decode()[-2000:]
    assert os.listdir(tmp_path) == []  # its store, the peers' CA and key: all gone
    # The SMS as the phone shows it: its lines, not a Python string with escapes.
    assert "│ Database primary is down. Acknowledge if you take it." in text
    assert re.search(r"│ Reply \d{4} ", text), text
    assert "\\n" not in text and "'Database" not in text
    assert "WhatsApp goes down" in text
    assert "whatsapp marked down" in text
    assert "whatsapp down → telegram ✓" in text  # later contacts skip it without a request
    assert "10/10 contacts reached" in text
    assert "status: acknowledged" in text
    assert "calls to david after that: 0" in text
    # The peers' own count: nobody got the broadcast twice on one channel.
    rows = re.findall(r"│ (whatsapp|sms|voice|telegram|email) +│ +\d+ │ +\d+ │ +(\d+) │", text)
    assert len(rows) == 5 and all(twice == "0" for _, twice in rows), rows
    # Scene 3: Twilio goes down as a whole; SMS carries on through Vonage, once each.
    assert "Twilio refuses connections" in text
    assert text.count("whatsapp via twilio down") == 0
    assert len(re.findall(r"whatsapp down → sms via twilio down → sms via vonage ✓", text)) == 4
    providers = dict(re.findall(r"│ (vonage|twilio) +│ [a-z, ]+ +│ +(\d+) │ +0 │", text))
    assert providers == {"vonage": "4", "twilio": "0"}, text
    assert "requests to Twilio during the outage: 0" in text
    assert err.decode().strip() == ""
