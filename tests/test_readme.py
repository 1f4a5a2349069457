"""The README's examples work as pasted: every ``sh`` and ``python`` block is run.

Each block runs in a directory of its own, as a newcomer following the README would
have it: ``backchannel sandbox -w backchannel.toml`` running there (the README's first
step), ``examples/`` beside the config (the README refers to it as in a clone), and the
virtualenv's ``bin`` first on the PATH (``. .venv/bin/activate``). A shell block runs
under ``set -euo pipefail`` and must succeed; a Python block runs with this interpreter
and must succeed. An HTML comment just before a block says when it cannot run that way:

- ``<!-- readme-test: skip: WHY -->``: not run (real providers, a person who must answer);
- ``<!-- readme-test: keeps running; ready when it prints "TEXT" -->``: a server; it is
  started, must print TEXT (stdout or stderr), and then stops cleanly on Ctrl-C.

Anything else in such a comment is an error, so that a typo cannot skip a block. The
webhook port is a free one per block (``BACKCHANNEL_WEBHOOKS__PORT``), so that two runs
on one machine do not collide on 8080.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import clean_env, free_port

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
RUNNABLE = {"sh": "sh", "bash": "sh", "python": "python"}
DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")
KEEPS_RUNNING = re.compile(r'keeps running; ready when it prints "([^"]+)"')
LIMIT = 120.0
"""Seconds a block may take: a bound against hanging, not a timing assertion."""


@dataclass(frozen=True, slots=True)
class Block:
    line: int
    language: str
    code: str
    skip: str | None = None
    ready: str | None = None
    """For a block that keeps running: what it prints once it is up."""

    @property
    def id(self) -> str:
        return f"line-{self.line}"


def readme_blocks(text: str) -> list[Block]:
    """The README's sh and python blocks, with what the comment before each says."""
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[index])
        if not fence:
            index += 1
            continue
        start = index
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
        index = end + 1
        language = RUNNABLE.get(fence.group(1))
        before = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        found = DIRECTIVE.fullmatch(before.strip())
        if language is None:
            assert found is None, f"README line {start + 1}: a directive on a non-run block"
            continue
        code = "\n".join(lines[start + 1:end]) + "\n"
        if found is None:
            blocks.append(Block(start + 2, language, code))
            continue
        directive = found.group(1)
        if directive.startswith("skip:") and directive[5:].strip():
            blocks.append(Block(start + 2, language, code, skip=directive[5:].strip()))
        elif (running := KEEPS_RUNNING.fullmatch(directive)) is not None:
            blocks.append(Block(start + 2, language, code, ready=running.group(1)))
        else:
            raise AssertionError(f"README line {start + 1}: unknown directive {directive!r}")
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
TO_RUN = [block for block in BLOCKS if block.skip is None]


def test_every_block_runs_or_says_why_not() -> None:
    skipped = [block for block in BLOCKS if block.skip is not None]
    assert len(TO_RUN) >= 10 and len(skipped) <= 6, [b.id for b in skipped]
    for block in skipped:
        # Only what truly cannot run here: a real provider, a person, the suite itself.
        assert re.search(r"real|person|suite|cron|systemd", block.skip or ""), block
    languages = {block.language for block in TO_RUN}
    assert languages == {"sh", "python"}, languages


@dataclass(slots=True)
class Place:
    """A directory with a running sandbox and its config, as the README sets it up."""

    directory: Path
    env: dict[str, str]


@pytest.fixture
async def place(tmp_path: Path) -> AsyncIterator[Place]:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = clean_env({"BACKCHANNEL_WEBHOOKS__PORT": str(free_port()), "TMPDIR": str(tmp_path)},
                    columns=None)  # fmt: skip
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    sandbox = await asyncio.create_subprocess_exec(
        "backchannel", "sandbox", "-w", "backchannel.toml", cwd=tmp_path, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await until_printed(sandbox, "Ctrl-C")
        yield Place(tmp_path, env)
    finally:
        if sandbox.returncode is None:
            sandbox.send_signal(signal.SIGINT)
        await sandbox.wait()


async def until_printed(process: asyncio.subprocess.Process, text: str) -> str:
    """What the process printed (on the pipe it has) until ``text``."""
    stream = process.stderr or process.stdout
    assert stream is not None
    said = ""
    async with asyncio.timeout(LIMIT):
        while text not in said:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"exited before printing {text!r}:\n{said}")
            said += line.decode(errors="replace")
    return said


@pytest.mark.parametrize("block", TO_RUN, ids=[block.id for block in TO_RUN])
async def test_the_block_runs_as_written(block: Block, place: Place) -> None:
    if block.language == "python":
        script = place.directory / "example.py"
        script.write_text(block.code, encoding="utf-8")
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-c", "set -euo pipefail\n" + block.code]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=place.directory, env=place.env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        if block.ready is not None:
            said = await until_printed(process, block.ready)
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C, to the whole command line
            async with asyncio.timeout(LIMIT):
                rest, _ = await process.communicate()
            output = said + rest.decode(errors="replace")
            assert process.returncode in (0, 130), f"README line {block.line}:\n{output}"
            return
        async with asyncio.timeout(LIMIT):
            out, _ = await process.communicate()
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    output = out.decode(errors="replace")
    status = process.returncode
    assert status == 0, f"README line {block.line} exited {status}:\n{output}"
    assert "Traceback" not in output, f"README line {block.line}:\n{output}"
