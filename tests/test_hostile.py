"""Thirty-odd malformed or hostile inputs, each with the answer a user gets (issue 13).

Command-line arguments, config files, the environment and templates go through the
real command (in this process where no provider is needed: it is the same code, and
fast); webhook bodies go to the real webhook server over HTTP. Every case asserts the
exit status or HTTP status a user would see, the words that explain it, and that no
traceback reached them; the cases that must send nothing check that nothing was
recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cli_helpers import config_data, dump_toml, run_cli, store_rows, write_config
from operator_helpers import invoke, offline_config
from twilio.request_validator import RequestValidator
from twoway_helpers import Rig, rig

from router import Message
from router.sandbox import Sandbox

# -- the command line, config files, the environment, templates -----------------------------


@dataclass(frozen=True)
class Case:
    """One hostile invocation and what its user must see."""

    id: str
    args: tuple[str, ...]
    status: int
    says: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    config: Callable[[Path], Path] | None = None
    """Writes the config (default: an offline one with alice) and returns its path."""


def offline(directory: Path, **tables: Any) -> Path:
    return offline_config(directory, {"alice": {"phone": "+33612345678", "telegram": 7}},
                          **tables)  # fmt: skip


def text_file(name: str, content: bytes | str) -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        path = directory / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    return write


def with_templates(**templates: str) -> Callable[[Path], Path]:
    return lambda directory: offline(
        directory, templates={name: {"text": text} for name, text in templates.items()})


def with_store(path: str) -> Callable[[Path], Path]:
    return lambda directory: offline(directory, store={"path": path})


def symlink_loop(directory: Path) -> Path:
    loop = directory / "loop.toml"
    loop.symlink_to(loop)
    return loop


SEND = ("send", "--to", "alice")
CASES = [
    # Arguments. Bytes that are not UTF-8 reach Python as lone surrogates.
    Case("text-not-utf8", (*SEND, "caf\udce9"), 2, ("message: text is not valid Unicode",)),
    Case("subject-not-utf8", (*SEND, "hi", "--subject", "caf\udce9"), 2,
         ("message: subject is not valid Unicode",)),
    Case("idempotency-key-empty", (*SEND, "hi", "--idempotency-key", ""), 2,
         ("idempotency key: is empty",)),
    Case("idempotency-key-not-utf8", (*SEND, "hi", "--idempotency-key", "k\udcff"), 2,
         ("idempotency key: is not valid Unicode",)),
    Case("expires-negative", (*SEND, "hi", "--expires-after", "-5m"), 2, ("--expires-after",)),
    Case("until-unknown", (*SEND, "hi", "--until", "maybe"), 2, ("--until", "maybe")),
    Case("var-name-not-an-identifier", (*SEND, "--template", "t", "--var", "a b=1"), 2,
         ("--var",)),
    Case("history-of-a-control-named-contact", ("history", "--contact", "\x1b[2Jzed"), 2,
         ("unknown contact", "\\x1b[2Jzed")),
    # The config path itself.
    Case("config-empty-path", (*SEND, "hi", "--config", ""), 2,
         ("a directory, not a regular file",)),
    Case("config-a-device", (*SEND, "hi", "--config", "/dev/zero"), 2,
         ("/dev/zero: cannot read: a device, not a regular file",)),
    Case("config-symlink-loop", (*SEND, "hi"), 2, ("loop.toml: cannot read",),
         config=symlink_loop),
    # Config files.
    Case("toml-nested-too-deeply", (*SEND, "hi"), 2, ("nested too deeply",),
         config=text_file("deep.toml", "a = " + "[" * 3000 + "]" * 3000)),
    Case("toml-table-twice", (*SEND, "hi"), 2, ("not valid TOML", "line 2"),
         config=text_file("twice.toml", "[routing]\n[routing]\n")),
    Case("toml-not-utf8-in-a-string", (*SEND, "hi"), 2, ("not UTF-8", "line 2, column 11"),
         config=text_file("latin.toml", b'[email]\nsender = "\xe9@x.fr"\n')),
    Case("port-infinite", (*SEND, "hi"), 2, ("email.port: Input should be a finite number",),
         config=lambda d: offline(d, email={"host": "h", "port": float("inf"),
                                            "sender": "a@example.com"})),
    Case("email-with-a-line-separator", (*SEND, "hi"), 2, ("contacts.bob.email",),
         config=lambda d: offline_config(d, {"bob": {"email": "bob@example.com\u2028"}})),
    Case("store-a-device", (*SEND, "hi"), 2,
         ("store.path: cannot open it: /dev/null: a device or a pipe, not a regular file",),
         config=with_store("/dev/null")),
    Case("store-not-a-database", (*SEND, "hi"), 2,
         ("store.path:", "is damaged (file is not a database)"),
         config=with_store("backchannel.toml")),
    # The environment: the variable named, never its value.
    Case("env-token-not-utf8", (*SEND, "hi"), 2,
         ("twilio.auth_token: is not valid UTF-8 (from $BACKCHANNEL_TWILIO__AUTH_TOKEN)",),
         env={"BACKCHANNEL_TWILIO__AUTH_TOKEN": "t\udcff"}),
    Case("env-list-for-a-table", (*SEND, "hi"), 2,
         ("routing: expected a JSON table", "(from $BACKCHANNEL_ROUTING)"),
         env={"BACKCHANNEL_ROUTING": "[1, 2]"}),
    Case("env-json-nested-too-deeply", (*SEND, "hi"), 2,
         ("routing.order: cannot be read", "(from $BACKCHANNEL_ROUTING__ORDER)"),
         env={"BACKCHANNEL_ROUTING__ORDER": "[" * 5000 + "]" * 5000}),
    Case("env-bad-channel-in-a-list", (*SEND, "hi"), 2,
         ("routing.order.1:", "(from $BACKCHANNEL_ROUTING__ORDER)"),
         env={"BACKCHANNEL_ROUTING__ORDER": "telegram, pigeon"}),
    # Templates: what the sandbox refuses, what it cannot find, what it cannot send.
    Case("template-include", (*SEND, "--template", "t"), 2,
         ("templates.t.text: cannot render",),
         config=with_templates(t="{% include 'secrets.toml' %}")),
    Case("template-huge-range", (*SEND, "--template", "t"), 2,
         ("templates.t.text: cannot render: Range too big",),
         config=with_templates(t="{{ range(10**9)|list }}")),
    Case("template-python-internals", (*SEND, "--template", "t"), 2,
         ("templates.t.text: not allowed in a template",),
         config=with_templates(t="{{ cycler.__init__.__globals__ }}")),
    Case("template-renders-a-nul", (*SEND, "--template", "t"), 2,
         ("templates.t.text: once rendered, must not hold a NUL character",),
         config=with_templates(t="alert\x00{{ 1 }}")),
    Case("template-indented-json", (*SEND, "--template", "t"), 2,
         ("templates.t.text: would build indented JSON",),
         config=with_templates(t="{{ [[[[1]]]]|tojson(indent=999999) }}")),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_hostile_invocation(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = (case.config or offline)(tmp_path)
    args = list(case.args)
    if "--config" not in args:
        args += ["--config", str(config)]
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    result = invoke(args)
    shown = result.output
    assert result.exit_code == case.status, shown
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception)
    assert "Traceback" not in shown
    for words in case.says:
        assert words in shown, shown
    store = tmp_path / "store.db"
    if case.status == 2 and store.exists():
        assert store_rows(store)["messages"] == []  # refused before anything was recorded


async def test_a_contact_order_from_the_environment_is_followed(tmp_path: Path) -> None:
    # Documented behaviour rather than an error: a list written the natural way.
    async with Sandbox() as sb:
        config = write_config(sb, tmp_path)
        run = await run_cli("send", "--to", "alice", "hi", "--json", "--config", str(config),
                            env={"BACKCHANNEL_CONTACTS__ALICE__ORDER": "email, telegram"})
        assert run.status == 0, run
        assert "Traceback" not in run.stderr
        [result] = run.json()["results"]
        assert result["channel"] == "email"
        assert sb.received()["email"] == ["alice@example.com"]


async def test_a_config_of_ten_thousand_contacts_with_one_bad_number(tmp_path: Path) -> None:
    # Every problem named, one line each, at the scale of a real directory export.
    async with Sandbox() as sb:
        contacts = {f"c{i}": {"telegram": 1000 + i} for i in range(10_000)}
        contacts["c5000"] = {"phone": "+33 6 00"}
        data = config_data(sb, contacts)
        (tmp_path / "big.toml").write_text(dump_toml(data))
        run = await run_cli("audit", "--config", str(tmp_path / "big.toml"))
    assert run.status == 2, run
    assert "contacts.c5000.phone: is not a valid phone number" in run.stderr
    assert "Traceback" not in run.stderr


# -- webhook bodies ------------------------------------------------------------------------

SECRET = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-webhook-token",
          "Content-Type": "application/json"}  # fmt: skip


@dataclass(frozen=True)
class Hook:
    id: str
    path: str
    body: bytes
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    twilio_form: dict[str, str] | None = None
    """Signed as Twilio would, with the form's own encoding replaced by ``body``."""


def telegram(body: bytes, status: int, id: str) -> Hook:
    return Hook(id, "/webhooks/telegram", body, status, SECRET)


HOOKS = [
    telegram(b"null", 400, "telegram-null"),
    telegram(b'{"update_id": ' + b"9" * 5000 + b"}", 400, "telegram-5000-digit-id"),
    telegram(b'{"update_id": 1, "message": {"text": "\xff\xfe"}}', 400, "telegram-not-utf8"),
    telegram(json.dumps({"update_id": 2, "edited_message": {
        "text": "ACK", "chat": {"id": 111111111}}}).encode(), 200, "telegram-unknown-kind"),
    telegram(json.dumps({"update_id": 3, "message": {
        "text": "x" * 60_000, "chat": {"id": 111111111}}}).encode(), 200, "telegram-long-text"),
    Hook("twilio-bytes-not-utf8", "/webhooks/twilio/inbound",
         b"From=%2B33612345678&MessageSid=SM" + b"1" * 32 + b"&Body=%FF%00%1B%5B2J", 200,
         twilio_form={}),
    Hook("twilio-unknown-status", "/webhooks/twilio/status",
         b"MessageSid=SM" + b"2" * 32 + b"&MessageStatus=exploded", 204, twilio_form={}),
    Hook("twilio-keypress-for-no-call", "/webhooks/twilio/gather",
         b"CallSid=CA" + b"3" * 32 + b"&Digits=1&To=%2B33612345678", 200, twilio_form={}),
    Hook("no-such-provider", "/webhooks/pigeon", b"{}", 404),
    Hook("content-length-a-terabyte", "/webhooks/telegram", b"{}", 413,
         {**SECRET, "Content-Length": str(10**12)}),
]  # fmt: skip


class _Errors(logging.Handler):
    """Collects every logged error: an exception in a handler is logged, not raised."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Rig]:
    errors = _Errors()
    names = ("uvicorn.error", "backchannel", "")
    for name in names:
        logging.getLogger(name).addHandler(errors)
    try:
        async with rig(tmp_path, order=["sms", "telegram"]) as r:
            await r.router.send(Message("site down"), to="alice", until="acknowledged")
            yield r
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(errors)
    assert [e.getMessage() for e in errors.records] == []


def signature(r: Rig, path: str, body: bytes) -> dict[str, str]:
    from urllib.parse import parse_qsl

    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    validator = RequestValidator(r.sandbox.twilio.auth_token)
    return {"X-Twilio-Signature": validator.compute_signature(r.url(path), form),
            "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip


@pytest.mark.parametrize("hook", HOOKS, ids=lambda hook: hook.id)
async def test_hostile_webhook(server: Rig, hook: Hook) -> None:
    headers = dict(hook.headers)
    if hook.twilio_form is not None:
        headers |= signature(server, hook.path, hook.body)
    async with aiohttp.ClientSession() as http:
        if "Content-Length" in headers:
            status = await _lying_length(server, hook.path, headers)
        else:
            async with http.post(server.url(hook.path), data=hook.body,
                                 headers=headers) as response:  # fmt: skip
                await response.read()
                status = response.status
    assert status == hook.status
    server.assert_still_waited_for("alice")  # nothing of it acknowledged anything


async def _lying_length(r: Rig, path: str, headers: dict[str, str]) -> int:
    """A request whose Content-Length promises far more than it sends."""
    host, port = r.public.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}"] + [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n{}").encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1])


async def test_a_hostile_twilio_body_is_kept_and_shown_safely(server: Rig) -> None:
    path = "/webhooks/twilio/inbound"
    body = b"From=%2B33612345678&MessageSid=SM" + b"4" * 32 + b"&Body=%FF%00%1B%5B2J+on+it"
    async with aiohttp.ClientSession() as http, http.post(
        server.url(path), data=body, headers=signature(server, path, body)
    ) as response:
        assert response.status == 200
    [event] = await server.router.store.inbox()
    assert event.text == "\ufffd\x00\x1b[2J on it"  # kept as sent (invalid bytes replaced)
