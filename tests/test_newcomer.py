"""What a newcomer meets in the first hour: help, version, completion, the hint when no
config is found, the sandbox's config on stdout, and history's message ids."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path

import pytest
import typer.main
from cli_helpers import BACKCHANNEL, clean_env, run_cli, write_config

from router.cli import app
from router.cli.serve import start_line
from router.sandbox import Sandbox


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sandbox:
        yield sandbox


def commands() -> dict[str, typer.main.click.Command]:
    group = typer.main.get_command(app)
    return dict(group.commands)  # type: ignore[attr-defined]


async def test_every_help_text_shows_whole_and_plain(tmp_path: Path) -> None:
    names = sorted(commands())
    runs = await asyncio.gather(run_cli("--help", cwd=tmp_path, columns=80),
                                *(run_cli(name, "--help", cwd=tmp_path, columns=80)
                                  for name in names))  # fmt: skip
    for run in runs:
        assert run.status == 0, run
        assert "<bool>" not in run.stdout, run  # a flag takes no value
        assert max(len(line) for line in run.stdout.splitlines()) <= 80, run
    for name, run in zip(names, runs[1:], strict=True):
        shown = " ".join(run.stdout.split())
        for param in commands()[name].params:
            # Every word of every option's help, brackets included: Rich markup used to
            # swallow "[templates.NAME]" and "[webhooks] host".
            words = " ".join((getattr(param, "help", None) or "").split())
            assert words in shown, (name, words, run.stdout)
    send = runs[1 + names.index("send")].stdout
    assert "([templates.NAME])" in " ".join(send.split())
    assert re.search(r"--to CONTACT +Contact name", send), send
    serve = runs[1 + names.index("serve")].stdout
    assert "[webhooks] public_url" in " ".join(serve.split())


async def test_version_and_shell_completion(tmp_path: Path) -> None:
    shown = await run_cli("--version", cwd=tmp_path)
    assert (shown.status, shown.stdout) == (0, f"backchannel {version('backchannel')}\n")
    # The shell is named rather than detected from the process tree (Typer's switch for
    # that): what runs the tests is not an interactive shell.
    script = await run_cli("--show-completion", "bash", cwd=tmp_path,
                           env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert script.status == 0 and "_BACKCHANNEL_COMPLETE" in script.stdout, script
    # What the shell asks once the script is installed: the commands that start with "se".
    process = await asyncio.create_subprocess_exec(
        str(BACKCHANNEL), stdout=asyncio.subprocess.PIPE, cwd=tmp_path,
        env=clean_env({"_BACKCHANNEL_COMPLETE": "complete_bash",
                       "COMP_WORDS": "backchannel se", "COMP_CWORD": "1"}),
    )
    out, _ = await process.communicate()
    assert out.decode().split() == ["send", "serve"]


async def test_no_config_says_how_to_give_one(tmp_path: Path) -> None:
    run = await run_cli("send", "--to", "alice", "hi", cwd=tmp_path, columns=None)
    assert run.status == 2 and run.stdout == "", run
    said = " ".join(run.stderr.split())
    assert "backchannel.toml: no such config file" in said
    for hint in ("--config PATH", "$BACKCHANNEL_CONFIG", "backchannel sandbox -w backchannel.toml",
                 "examples/backchannel.toml"):  # fmt: skip
        assert hint in said, (hint, run)
    assert max(len(line) for line in run.stderr.splitlines()) <= 80, run


async def test_the_sandbox_prints_a_config_that_works_on_stdout(tmp_path: Path) -> None:
    config = tmp_path / "backchannel.toml"
    with config.open("wb") as out:  # backchannel sandbox > backchannel.toml
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "router.cli", "sandbox", stdout=out,
            stderr=asyncio.subprocess.PIPE, cwd=tmp_path, env=clean_env(),
        )
    try:
        assert process.stderr is not None
        said = b""
        async with asyncio.timeout(60):
            while b"Ctrl-C" not in said:
                line = await process.stderr.readline()
                assert line, said
                said += line
        sent = await run_cli("broadcast", "--group", "ops", "hello", cwd=tmp_path)
        assert sent.status == 0, sent  # the file is the config, and nothing else
        assert "4/4 contacts reached" in sent.stdout, sent
    finally:
        process.terminate()
        await process.wait()


async def test_history_finds_a_message_by_any_unique_part_of_its_id(
    sb: Sandbox, tmp_path: Path
) -> None:
    config = write_config(sb, tmp_path)
    first = await run_cli("send", "--to", "alice", "--json", "one", "--config", str(config))
    second = await run_cli("send", "--to", "bob", "--json", "two", "--config", str(config))
    ids = [first.json()["message_id"], second.json()["message_id"]]
    assert first.status == second.status == 0 and ids[0] != ids[1]

    async def history(*args: str) -> tuple[int, set[str], str]:
        run = await run_cli("history", "--json", *args, "--config", str(config))
        found = {a["message_id"] for a in run.json()["attempts"]} if run.status == 0 else set()
        return run.status, found, run.stderr

    for part in (ids[1], ids[1][-8:], ids[1][:-6], ids[1][-14:]):
        assert await history("--message", part) == (0, {ids[1]}, "")
    status, _, err = await history("--message", "msg_")  # both ids start with it
    assert status == 2 and "several messages match" in err and all(i in err for i in ids), err
    status, _, err = await history("--message", "nothing-like-it")
    assert status == 2 and "no message id is, starts or ends with it" in err, err

    table = await run_cli("history", "--config", str(config), columns=None)
    assert table.status == 0, table
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, table
    assert "…" not in table.stdout, table  # nothing cut short, the timing and detail whole
    assert all(f"message {message_id}" in table.stdout for message_id in ids), table
    assert re.search(r"^ *\d\d:\d\d:\d\d +alice +whatsapp +✓ accepted +\d+ *$", table.stdout,
                     re.MULTILINE), table  # fmt: skip


def test_serve_says_where_it_listens_and_how_providers_reach_it() -> None:
    assert start_line("127.0.0.1", 8080, None, False) == (
        "backchannel serve listening on http://127.0.0.1:8080; no [webhooks] public_url, so"
        " receipts are polled and Telegram is long-polled (SMS and WhatsApp replies need one)"
    )
    assert start_line("::1", 8443, "https://alerts.example.com", True) == (
        "backchannel serve listening on http://[::1]:8443; providers call back at"
        " https://alerts.example.com; a worker sends queued work"
    )


async def test_history_of_one_message_starts_with_its_progress_in_counts(
    sb: Sandbox, tmp_path: Path
) -> None:
    config = write_config(sb, tmp_path)
    queued = await run_cli("broadcast", "--group", "ops", "--queue", "--json", "later",
                           "--config", str(config))  # fmt: skip
    sent = await run_cli("broadcast", "--group", "ops", "--json", "now", "--config", str(config))
    assert queued.status == 0 and sent.status == 0, (queued, sent)
    waiting, done = queued.json()["message_id"], sent.json()["message_id"]

    shown = await run_cli("history", "--message", waiting, "--json", "--config", str(config))
    assert shown.json()["progress"] == {"pending": 4}, shown  # nobody sent it yet
    assert shown.json()["attempts"] == []
    table = await run_cli("history", "--message", waiting[-10:], "--config", str(config))
    assert f"message {waiting}: 4 contact(s): 4 pending" in table.stdout, table

    shown = await run_cli("history", "--message", done, "--json", "--config", str(config))
    progress = shown.json()["progress"]
    assert sum(progress.values()) == 4 and "pending" not in progress, shown
    assert set(progress) <= {"accepted", "delivered"}, shown  # every one of the four reached
