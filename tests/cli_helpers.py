"""Helpers for the end-to-end CLI tests (imported as ``cli_helpers``).

The real ``backchannel`` console script runs as a subprocess against a
:class:`~router.sandbox.Sandbox` served by the test's own event loop, so the
peers keep answering while the command runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import sys
import tomllib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.sandbox import Sandbox, toml_key, toml_value

BACKCHANNEL = Path(sys.executable).with_name("backchannel")

# Fast and deterministic enough for tests: short timeouts, quick retries, no 1 SMS/s pacing.
FAST: dict[str, Any] = {
    "routing": {"tries_per_channel": 2, "retry_backoff": 0.01, "max_retry_after": 1.0},
    "twilio": {"timeout": 3.0, "connect_timeout": 2.0},
    "vonage": {"timeout": 3.0, "connect_timeout": 2.0},
    "telegram": {"timeout": 3.0, "connect_timeout": 2.0},
    "email": {"timeout": 3.0},
    "limits": {
        name: {"per_second": 500.0, "per_recipient_per_second": 500.0, "burst": 50}
        for name in ("whatsapp", "telegram", "sms", "voice", "email")
    },
}


@dataclass(frozen=True, slots=True)
class CliRun:
    """What one ``backchannel`` process did."""

    args: tuple[str, ...]
    status: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        payload = json.loads(self.stdout)
        assert isinstance(payload, dict)
        return payload

    def results(self) -> dict[str, dict[str, Any]]:
        """``--json`` results by contact name."""
        return {r["contact"]: r for r in self.json()["results"]}

    def __str__(self) -> str:
        return (
            f"backchannel {' '.join(self.args)!r} -> {self.status}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def clean_env(
    extra: Mapping[str, str] | None = None, *, columns: int | None = 200
) -> dict[str, str]:
    """This process's environment without any BACKCHANNEL_* variable, plus ``extra``.

    ``columns`` widens the console so that result tables are not folded; None leaves
    the default a pipe gets (80), as cron or a script would see it.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("BACKCHANNEL_") and k not in ("COLUMNS", "LINES")
    }
    env |= {"NO_COLOR": "1", "TERM": "dumb", "PYTHONIOENCODING": "utf-8"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    env |= dict(extra or {})
    return env


async def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    columns: int | None = 200,
    limit: float = 90.0,
) -> CliRun:
    """Run the installed console script; the caller's loop keeps serving the peers."""
    process = await asyncio.create_subprocess_exec(
        str(BACKCHANNEL),
        *args,
        cwd=cwd,
        env=clean_env(env, columns=columns),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"backchannel {' '.join(args)} did not finish") from None
    assert process.returncode is not None
    return CliRun(tuple(args), process.returncode, out.decode(), err.decode())


def free_port() -> int:
    """A port nothing listens on now (the caller binds it soon after)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def until_serving(server: asyncio.subprocess.Process, port: int) -> None:
    """Wait until ``backchannel serve`` answers ``/healthz``; a server that exited says why.

    A bound against hanging, not a timing check: on a machine running two suites at once
    a server may need many seconds to import, open its store and migrate.
    """
    import aiohttp

    async with aiohttp.ClientSession() as http, asyncio.timeout(120):
        while True:
            if server.returncode is not None:
                said = await server.stderr.read() if server.stderr else b""
                raise AssertionError(f"backchannel serve exited {server.returncode}:"
                                     f" {said.decode(errors='replace')[-2000:]}")
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of nested tables; ``override`` wins, a None value deletes the key."""
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dump_toml(data: Mapping[str, Any]) -> str:
    """Nested dicts of scalars and lists as TOML (enough for a backchannel config)."""
    lines: list[str] = []

    def table(prefix: tuple[str, ...], body: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, Mapping)}
        tables = {k: v for k, v in body.items() if isinstance(v, Mapping)}
        if prefix and (scalars or not tables):
            lines.append("[" + ".".join(toml_key(part) for part in prefix) + "]")
        lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in scalars.items())
        for key, sub in tables.items():
            table((*prefix, key), sub)

    table((), data)
    return "\n".join(lines) + "\n"


def config_data(
    sb: Sandbox,
    contacts: Mapping[str, Mapping[str, object]] | None = None,
    *,
    store_path: str = "store.db",
    overrides: Mapping[str, Any] | None = None,
    fast: bool = True,
    vonage: bool = False,
) -> dict[str, Any]:
    """The sandbox's config as data, made fast for tests, with ``overrides`` merged in;
    with ``vonage``, Vonage carries SMS and voice after Twilio."""
    data = tomllib.loads(sb.config_toml(contacts=contacts, store_path=store_path, vonage=vonage))
    if fast:
        data = merge(data, {k: v for k, v in FAST.items() if k in data or k in ("routing",
                                                                                "limits")})
    return merge(data, overrides or {})


def write_config(
    sb: Sandbox,
    directory: Path,
    contacts: Mapping[str, Mapping[str, object]] | None = None,
    *,
    store_path: str = "store.db",
    overrides: Mapping[str, Any] | None = None,
    name: str = "backchannel.toml",
    vonage: bool = False,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    data = config_data(sb, contacts, store_path=store_path, overrides=overrides, vonage=vonage)
    path.write_text(dump_toml(data), encoding="utf-8")
    return path


def duplicates(sb: Sandbox) -> dict[str, list[str]]:
    """Recipients that a provider recorded twice on one channel (should always be empty)."""
    found: dict[str, list[str]] = {}
    for channel, recipients in sb.received().items():
        twice = [r for r, n in Counter(recipients).items() if n > 1]
        if twice:
            found[channel] = twice
    return found


def assert_no_duplicates(sb: Sandbox) -> None:
    assert duplicates(sb) == {}, f"sent twice on one channel: {sb.received()}"


def peer_traffic(sb: Sandbox) -> dict[str, int]:
    """How many requests (or SMTP events) each peer saw; all zero means nothing was sent."""
    return {
        "twilio": len(sb.twilio.requests),
        "vonage": len(sb.vonage.requests),
        "telegram": len(sb.telegram.requests),
        "smtp": len(sb.smtp.log) + len(sb.smtp.received),
    }


def assert_nothing_sent(sb: Sandbox) -> None:
    traffic = peer_traffic(sb)
    assert set(traffic.values()) == {0}, f"peers were contacted: {traffic}"
    assert all(not r for r in sb.received().values()), sb.received()


def store_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a SQLite store (read-only)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        return {
            table: connection.execute(f'SELECT * FROM "{table}"').fetchall()  # noqa: S608
            for table in tables
        }
    finally:
        connection.close()


def attempt_details(path: Path) -> list[str]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in connection.execute("SELECT detail FROM attempts") if row[0]]
    finally:
        connection.close()
