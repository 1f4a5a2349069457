"""The examples run as documented, against the sandbox peers."""

from __future__ import annotations

import asyncio
import configparser
import os
import shlex
import sys
from pathlib import Path

from config import load_settings
from router.sandbox import Sandbox

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_the_example_config_is_valid_and_complete() -> None:
    settings = load_settings(EXAMPLES / "backchannel.toml")
    assert settings.enabled_channels() == ["whatsapp", "telegram", "sms", "voice", "email"]
    assert settings.store.path == EXAMPLES / "backchannel.db"


async def run_example(script: str, *args: str, config: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / script), *args,
        env={**os.environ, "BACKCHANNEL_CONFIG": str(config)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_python_examples_send(tmp_path: Path) -> None:
    async with Sandbox() as sandbox:
        config = tmp_path / "backchannel.toml"
        config.write_text(sandbox.config_toml() + "\n[limits.sms]\nper_second = 50\n")
        status, out = await run_example("send_alert.py", "alice", "Disk full", config=config)
        assert status == 0, out
        assert "alice: accepted via whatsapp" in out
        status, out = await run_example("broadcast.py", "ops", config=config)
        assert status == 0, out
        received = sandbox.received()
    assert len(received["whatsapp"]) == 4  # alice twice (two scripts), bob and dave
    assert [s.text for s in sandbox.telegram.sent] == [
        "Major incident: the main site is down. Crisis cell on the usual bridge at 10:15."
    ]


def command_options(command: str) -> set[str]:
    """The long options a subcommand really has, read from the CLI itself."""
    import typer.main

    from router.cli import app

    group = typer.main.get_command(app)
    sub = group.commands[command]  # type: ignore[attr-defined]
    return {name for param in sub.params for name in param.opts if name.startswith("--")}


def test_the_worker_and_server_units_run_real_commands() -> None:
    for unit, command in (("backchannel-worker@.service", "worker"),
                          ("backchannel-serve.service", "serve")):
        service = configparser.ConfigParser(interpolation=None, strict=True)
        service.read(EXAMPLES / unit)
        words = shlex.split(service["Service"]["ExecStart"])
        assert Path(words[0]).name == "backchannel" and words[1] == command
        flags = {word for word in words[2:] if word.startswith("--")}
        assert flags <= command_options(command), flags - command_options(command)
        assert "BACKCHANNEL_CONFIG=" in service["Service"]["Environment"]
