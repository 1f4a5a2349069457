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


CRON_PATH = "/usr/bin:/bin"
"""The PATH cron gives a job (Debian's, Vixie cron's and cronie's default)."""


def crontab_entries() -> tuple[dict[str, str], list[str]]:
    """examples/crontab's variables and each job's command (after its five time fields)."""
    variables: dict[str, str] = {}
    commands: list[str] = []
    for line in (EXAMPLES / "crontab").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if equals and name.isidentifier():
            variables[name] = value
        else:
            commands.append(line.split(None, 5)[5])
    return variables, commands


async def test_the_crontab_runs_as_cron_runs_it(tmp_path: Path) -> None:
    """Each job runs through /bin/sh with cron's environment: its PATH and the crontab's
    variables only. The install prefix, the config and the output paths are swapped for
    this checkout's virtualenv and the sandbox's; the rest of each line runs as written."""
    from aiohttp import web

    pings: list[str] = []

    async def switch(request: web.Request) -> web.Response:
        pings.append(request.path)
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_post("/{tail:.*}", switch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    variables, commands = crontab_entries()
    assert len(commands) == 2
    prefix = "/opt/backchannel/bin/"
    for command in commands:
        # Not found on cron's PATH: the job names the script by its absolute path.
        assert command.startswith(prefix), command
    swaps = {
        prefix: f"{Path(sys.executable).parent}/",
        "/var/lib/prometheus/node-exporter/": f"{tmp_path}/",
        "/var/log/backchannel/": f"{tmp_path}/",
        "https://hc-ping.com/YOUR-CHECK-UUID": f"http://127.0.0.1:{port}/ping/check",
    }
    try:
        async with Sandbox() as sandbox:
            config = tmp_path / "backchannel.toml"
            config.write_text(sandbox.config_toml(store_path="cron.db"))
            env = {**variables, "BACKCHANNEL_CONFIG": str(config), "HOME": str(tmp_path),
                   "LOGNAME": "backchannel", "SHELL": "/bin/sh"}
            env.setdefault("PATH", CRON_PATH)
            statuses = []
            for command in commands:
                for original, here in swaps.items():
                    command = command.replace(original, here)
                process = await asyncio.create_subprocess_exec("/bin/sh", "-c", command,
                                                               env=env, cwd="/")
                statuses.append(await process.wait())
            tests_sent = sum(len(to) for to in sandbox.received().values())
    finally:
        await runner.cleanup()
    log = (tmp_path / "reachability.log").read_text()
    # The sandbox's contacts are each on two independent channels: exit 0.
    assert statuses == [0, 0], log
    assert log.count("channel health") == 2 and "4 contacts: 4 redundant" in log, log
    assert "✓ test" in log, log  # the second job sent its tests, and says so
    assert "backchannel_contacts_redundant 4.0" in (tmp_path / "backchannel.prom").read_text()
    assert pings == ["/ping/check"]
    assert tests_sent >= 4
