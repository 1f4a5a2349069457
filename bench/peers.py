"""Sandbox peers in a separate process, so that they do not share the router's core."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tomllib
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any


@asynccontextmanager
async def sandbox_process(workdir: Path, *extra: str) -> AsyncIterator[dict[str, Any]]:
    """Run ``backchannel sandbox`` in its own process; yield its config as a dict."""
    config_path = workdir / "sandbox.toml"
    config_path.unlink(missing_ok=True)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "sandbox", "--write-config", str(config_path), *extra,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        for _ in range(300):
            if config_path.exists() and config_path.stat().st_size:
                break
            if process.returncode is not None:
                raise RuntimeError("the sandbox process exited")
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the sandbox did not start")
        yield tomllib.loads(config_path.read_text())
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await process.wait()


def control(base_url: str, path: str, payload: object | None = None, method: str = "GET") -> Any:
    """Drive the sandbox's /_sandbox/ control API (blocking; fine between runs)."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(  # noqa: S310 - a loopback URL we built
        base_url.rstrip("/") + path, data=data, method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        body = response.read()
    return json.loads(body) if body else None
