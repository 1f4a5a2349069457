"""A throwaway PostgreSQL cluster for the tests, on loopback, started on demand.

``PG_TEST_URL`` points at an existing server; otherwise, if the
PostgreSQL server binaries are installed (Debian: ``apt-get install postgresql``),
a cluster is created in a temporary directory and stopped at the end. initdb
refuses to run as root, so as root the cluster runs as the ``postgres`` user.
Without either, PostgreSQL tests are skipped, unless ``REQUIRE_POSTGRES=1``
(CI), where that is an error.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HOW_TO = (
    "PostgreSQL tests need a server: install Debian's postgresql package (make test then "
    "starts a throwaway cluster), or set PG_TEST_URL=postgresql://user@host/db"
)


def _binaries() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and Path(found).with_name("initdb").exists() else None


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def cluster() -> Iterator[str | None]:
    """Yield a server URL (with a database we may create others from), or None."""
    given = os.environ.get("PG_TEST_URL")
    if given:
        yield given
        return
    binaries = _binaries()
    if binaries is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="backchannel-pg-"))
    data, port = root / "data", _free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    run = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    try:
        subprocess.run(_as_postgres([
            str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8",
        ]), **run)  # type: ignore[call-overload]
        subprocess.run(_as_postgres([
            str(binaries / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
            f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=300",
            "start",
        ]), **run)  # type: ignore[call-overload]
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([
            str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop",
        ]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(root, ignore_errors=True)


async def fresh_database(server_url: str) -> str:
    """A new empty database on the server; each test gets its own."""
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"
    for attempt in range(40):
        try:
            connection = await asyncpg.connect(server_url)
            break
        except (OSError, asyncpg.CannotConnectNowError):
            await asyncio.sleep(0.1 * (attempt + 1))  # the cluster may still be starting
    else:
        raise RuntimeError(f"cannot reach the test PostgreSQL at {server_url}")
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"
