"""`backchannel serve`, `send --until` and `inbox` as real processes, with real time.

Escalation waits are durable: a CLI that stops waiting leaves them in the store,
and a server started later carries on from there.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from cli_helpers import free_port, until_serving

from router import Message, Router
from router.sandbox import Sandbox
from router.store import SqliteStore
from router.store.base import StoredDelivery
from router.twoway.inbound import Reply

CONTACTS = {"alice": {"phone": "+33612345678", "telegram": 111111111}}


def write_config(sandbox: Sandbox, tmp_path: Path, port: int, ack_wait: float = 1.5) -> Path:
    config = tmp_path / "backchannel.toml"
    config.write_text(sandbox.config_toml(
        contacts=CONTACTS, store_path="bc.db",
        overrides={
            "routing": {"order": ["sms", "telegram", "voice"]},
            "webhooks": {"public_url": f"http://127.0.0.1:{port}", "port": port},
            "escalation": {"ack_wait": ack_wait, "repeats": 0},
            "limits.sms": {"per_second": 100},
        },
    ))
    sandbox.twilio.inbound_url = f"http://127.0.0.1:{port}/webhooks/twilio/inbound"
    return config


async def start(*args: str, config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", *args, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


@asynccontextmanager
async def serving(config: Path, port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    server = await start("serve", config=config)
    await until_serving(server, port)
    try:
        yield server
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
            await server.wait()


async def wait_for_line(process: asyncio.subprocess.Process, text: str) -> None:
    """Read the CLI's output until it says ``text`` (it is then waiting)."""
    assert process.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(60):
        while text not in (line := (await process.stdout.readline()).decode()):
            if not line:  # end of output: the process is gone, and would never say it
                err = await process.stderr.read() if process.stderr else b""
                raise AssertionError(f"exited before {text!r}: {seen} {err.decode()}")
            seen.append(line)


async def wait_for(condition: object, limit: float = 60.0) -> None:
    """Until ``condition()`` holds (``limit``: a bound against hanging, not a timing
    assertion)."""
    async with asyncio.timeout(limit):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def settled_delivery(store_path: Path, contact: str) -> StoredDelivery:
    """The contact's delivery (of the one message) once the server has settled it."""
    store = SqliteStore(store_path)
    await store.open()
    try:
        async with asyncio.timeout(30):
            while True:
                [message_id] = [row.message_id for row in await store.history(limit=1)]
                found = await store.load_delivery(message_id, contact)
                assert found is not None
                if found[1].done:
                    return found[1]
                await asyncio.sleep(0.05)
    finally:
        await store.close()


async def test_a_server_started_later_carries_on_an_interrupted_escalation(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with Sandbox() as sandbox:
        # The acknowledgement must come within the wait after Telegram's message, or the
        # call would rightly be made: a wait that a busy machine does not outlast.
        config = write_config(sandbox, tmp_path, port, ack_wait=3.0)
        waiting = await start("send", "--to", "alice", "--until", "acknowledged", "site down",
                              config=config)
        await wait_for_line(waiting, "waiting until acknowledged")
        waiting.send_signal(signal.SIGINT)
        _, err = await waiting.communicate()
        assert waiting.returncode == 130
        assert "nothing will continue the escalation" in err.decode()

        async with serving(config, port) as server:
            # The wait is in the store: the server escalates to Telegram when it is over.
            await wait_for(lambda: sandbox.telegram.sent)
            [sent] = sandbox.telegram.sent
            data = str(sent.reply_markup["inline_keyboard"][0][0]["callback_data"])  # type: ignore[index]
            await sandbox.telegram.push_callback_query(111111111, sent.message_id, data)
            await wait_for(lambda: sandbox.telegram.answered_callbacks)
            # What stops the call: the delivery is settled in the store, with nothing due,
            # so no escalation loop (this server's or any other) can make another attempt.
            delivery = await settled_delivery(tmp_path / "bc.db", "alice")
            assert delivery.status == "acknowledged" and delivery.done
            assert delivery.next_action_at is None
            assert sandbox.twilio.sent("voice") == []
            assert server.returncode is None

        inbox = await start("inbox", "--json", config=config)
        out, _ = await inbox.communicate()
        [event] = json.loads(out)["inbound"]
        assert (event["kind"], event["contact"], event["channel"]) == ("ack", "alice", "telegram")


async def test_stopping_the_wait_hands_over_to_a_running_server(tmp_path: Path) -> None:
    port = free_port()
    async with Sandbox() as sandbox:
        config = write_config(sandbox, tmp_path, port)
        async with serving(config, port):
            waiting = await start("send", "--to", "alice", "--until", "acknowledged", "x",
                                  config=config)
            await wait_for_line(waiting, "waiting until acknowledged")
            waiting.send_signal(signal.SIGINT)
            _, err = await waiting.communicate()
            assert "the running backchannel serve carries on" in err.decode()
            # The server, not the stopped CLI, takes the next step.
            await wait_for(lambda: sandbox.telegram.sent)


async def test_an_sms_reply_through_the_server_completes_a_waiting_send(tmp_path: Path) -> None:
    port = free_port()
    async with Sandbox() as sandbox:
        # A wait no busy machine outlasts: the reply, not the clock, must end it.
        config = write_config(sandbox, tmp_path, port, ack_wait=60)
        async with serving(config, port):
            waiting = await start("send", "--to", "alice", "--until", "acknowledged", "--json",
                                  "site down", config=config)
            await wait_for(lambda: sandbox.twilio.sent("sms"))
            [sms] = sandbox.twilio.sent("sms")
            code = sms.body.rsplit("Reply ", 1)[1][:4]
            assert await sandbox.twilio.deliver_inbound("+33612345678", sms.from_ or "",
                                                        code) == 200
            out, err = await waiting.communicate()
        assert waiting.returncode == 0, err.decode()
        [result] = json.loads(out)["results"]
        assert result["status"] == "acknowledged"
        assert sandbox.telegram.sent == []


async def test_replies_reach_python_code(tmp_path: Path) -> None:
    port = free_port()
    async with Sandbox() as sandbox:
        config = write_config(sandbox, tmp_path, port)
        seen: list[Reply] = []
        async with Router.from_config(config) as router:
            router.on_reply(seen.append)
            await router.send(Message("hello"), to="alice")
            replies = router.replies()
            await sandbox.telegram.push_message(111111111, "what happened?")
            router.services.start(server=False)  # long-polls Telegram
            reply = await asyncio.wait_for(anext(replies), 10)
            await replies.aclose()
    assert (reply.contact, reply.channel, reply.text, reply.kind) == (
        "alice", "telegram", "what happened?", "reply"
    )
    assert seen == [reply]
