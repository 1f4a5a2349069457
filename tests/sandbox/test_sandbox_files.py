"""Every sandbox removes the temporary files it creates (the SMTP relay's CA, the Vonage
key), however it stops: closed in process, or ``backchannel sandbox`` stopped by Ctrl-C,
a second Ctrl-C, SIGTERM or a closed terminal (SIGHUP).

Each test gives the sandbox a temp directory of its own (``TMPDIR``), so that the count
is this sandbox's alone, whatever else runs on the machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from router.sandbox import Sandbox

CREATED = "backchannel-*"
"""What the sandbox and the demo name their directories (backchannel-sandbox-...)."""


def left_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob(CREATED))


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp directory for this test's sandboxes alone (in process and in children)."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    monkeypatch.setenv("TMPDIR", str(directory))
    return directory


async def test_a_sandbox_in_process_removes_its_files(own_tmp: Path) -> None:
    before = left_in(own_tmp)
    async with Sandbox() as sandbox:
        during = left_in(own_tmp)
        files = [sandbox.smtp.ca_pem_path, sandbox.vonage_key_path]
        assert all(map(os.path.isfile, files)), files
    assert before == [] and len(during) == 2, during
    assert left_in(own_tmp) == before


async def test_a_sandbox_that_fails_to_start_removes_its_files(own_tmp: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The SMTP relay, started last, cannot listen: the others are up by then.
        with pytest.raises(OSError, match=r"(?i)address already in use"):
            await Sandbox(smtp_port=port).start()
    assert left_in(own_tmp) == []


async def start_sandbox(config: Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "sandbox", "--write-config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    said = b""
    async with asyncio.timeout(60):
        while b"Ctrl-C" not in said:
            line = await process.stderr.readline()
            assert line, said.decode()
            said += line
    return process


@pytest.mark.parametrize("how", ["ctrl-c", "ctrl-c twice", "sigterm", "sighup"])
async def test_backchannel_sandbox_removes_its_files_however_it_stops(
    own_tmp: Path, tmp_path: Path, how: str
) -> None:
    before = left_in(own_tmp)
    process = await start_sandbox(tmp_path / "backchannel.toml")
    during = left_in(own_tmp)
    if how == "ctrl-c twice":
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)  # forced: ends at once, but cleans up first
    else:
        process.send_signal({"ctrl-c": signal.SIGINT, "sigterm": signal.SIGTERM,
                             "sighup": signal.SIGHUP}[how])  # fmt: skip
    await process.communicate()
    assert before == [] and len(during) == 2, during
    assert left_in(own_tmp) == before, how
    assert process.returncode in (0, 130), process.returncode


def test_the_temp_directory_is_this_tests_own(own_tmp: Path) -> None:
    assert tempfile.gettempdir() == str(own_tmp)
    assert os.environ["TMPDIR"] == str(own_tmp)
