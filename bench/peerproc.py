"""Sandbox peers in their own process, with the options benchmarks need, and their CPU time.

    python -m bench.peerproc --write-config PATH [--smtp-tls none] [--telegram-flood 30,1]

``backchannel sandbox`` cannot turn on the Telegram peer's flood control; this
runs the same :class:`router.sandbox.Sandbox` with it, in a process of its own
so that the peers never share the measured process's core. The parent reads
the peers' CPU time from ``/proc`` to show whether they were ever the limit.

One change to the peers, for throughput only: the sandbox's SMTP peer parses
every message it receives with ``email.policy.default`` (about a third of its
CPU, which made it the bottleneck of the email rows); here it keeps the raw
bytes (``ReceivedMail.data``) and an empty ``EmailMessage`` in their place.
Everything else (SMTP dialogue, STARTTLS, AUTH, faults, the request log) is the
sandbox's own code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tomllib
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import router.sandbox.smtp
from router.sandbox import Sandbox

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None = None) -> float:
    """User plus system CPU time of a process (all its threads); this one by default."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True, slots=True)
class Peers:
    """A running peer process: its router config (as a dict) and its pid."""

    config: dict[str, Any]
    pid: int
    smtp_tls: str

    @property
    def twilio_url(self) -> str:
        return str(self.config["twilio"]["api_base"])

    @property
    def telegram_url(self) -> str:
        return str(self.config["telegram"]["api_base"])

    def cpu(self) -> float:
        return cpu_seconds(self.pid)


@asynccontextmanager
async def peer_process(
    workdir: Path, *, smtp_tls: str = "starttls", telegram_flood: tuple[int, int] | None = None
) -> AsyncIterator[Peers]:
    """Run the peers in a child process until the block ends."""
    config_path = workdir / f"peers-{os.getpid()}-{id(workdir)}.toml"
    config_path.unlink(missing_ok=True)
    args = ["--write-config", str(config_path), "--smtp-tls", smtp_tls]
    if telegram_flood is not None:
        args += ["--telegram-flood", f"{telegram_flood[0]},{telegram_flood[1]}"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.peerproc", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        for _ in range(600):
            if config_path.exists() and config_path.stat().st_size:
                break
            if process.returncode is not None:
                raise RuntimeError("the peer process exited")
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the peers did not start")
        yield Peers(tomllib.loads(config_path.read_text()), process.pid, smtp_tls)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await process.wait()
        config_path.unlink(missing_ok=True)


def _record_without_parsing() -> None:
    """Make the SMTP peer skip parsing received messages (see the module docstring)."""
    import email.policy

    def message_from_bytes(data: bytes, policy: object = None) -> EmailMessage:
        return EmailMessage()

    shim = types.SimpleNamespace(message_from_bytes=message_from_bytes, policy=email.policy)
    setattr(router.sandbox.smtp, "email", shim)  # noqa: B010 - a module attribute, on purpose


async def _serve(write_config: Path, smtp_tls: str, flood: tuple[int, int] | None) -> None:
    async with Sandbox(
        smtp_tls=smtp_tls,  # type: ignore[arg-type]
        telegram_flood_limit=flood,
    ) as sandbox:
        partial = write_config.with_suffix(".partial")
        # Vonage too, for its SMS row; each benchmark's config picks the providers it needs.
        partial.write_text(sandbox.config_toml(contacts={}, vonage=True))
        partial.rename(write_config)  # the parent never reads a half-written file
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-config", type=Path, required=True)
    parser.add_argument("--smtp-tls", default="starttls", choices=["starttls", "implicit", "none"])
    parser.add_argument("--telegram-flood", help="OVERALL,PER_CHAT messages per second")
    options = parser.parse_args()
    _record_without_parsing()
    flood = None
    if options.telegram_flood:
        overall, _, per_chat = options.telegram_flood.partition(",")
        flood = (int(overall), int(per_chat or 1))
    asyncio.run(_serve(options.write_config, options.smtp_tls, flood))
