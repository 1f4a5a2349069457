"""What a crash run left behind, read back: the store file, the peers' own records, and
``backchannel`` commands run like a user would. Used by :mod:`bench.crash_check`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.sandbox import Sandbox

PROCESS_LIMIT = 120.0
"""No process may run longer (the run fails instead of hanging)."""
REACHED = frozenset({"accepted", "delivered", "acknowledged"})


def command() -> list[str]:
    """The installed console script next to this interpreter, else the module."""
    script_path = Path(sys.executable).with_name("backchannel")
    if script_path.exists():
        return [str(script_path)]
    return [sys.executable, "-m", "router.cli"]


def child_env() -> dict[str, str]:
    """No BACKCHANNEL_* variable reaches the router (the crash test's own knobs would be
    read as config overrides), no colours, a wide console."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("BACKCHANNEL_")}
    return env | {"NO_COLOR": "1", "TERM": "dumb", "PYTHONIOENCODING": "utf-8",
                  "COLUMNS": "200"}  # fmt: skip


async def run_cli(args: list[str], workdir: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command(), *args, cwd=workdir, env=child_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), PROCESS_LIMIT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


# -- the store, read-only --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptRow:
    attempt_id: str
    contact: str
    channel: str
    address: str
    state: str
    verdict: str | None
    detail: str | None
    provider_id: str | None
    started_at: float
    finished_at: float | None = None

    def describe(self) -> str:
        return (
            f"{self.attempt_id} {self.channel:<8} {self.address:<22} {self.state:<7}"
            f" {self.verdict or '-':<9} {self.provider_id or '-'} {self.detail or ''}"
        )


@dataclass(frozen=True, slots=True)
class StoreRef:
    """The store a crash run uses: a SQLite file, or a PostgreSQL database."""

    path: Path
    url: str | None = None

    @property
    def postgres(self) -> bool:
        return self.url is not None

    def exists(self) -> bool:
        return self.postgres or self.path.exists()

    def section(self) -> dict[str, object]:
        return {"url": self.url} if self.url is not None else {"path": str(self.path)}


def query(store: StoreRef, sql: str, *params: object) -> list[tuple[Any, ...]]:
    if store.url is not None:
        return _query_postgres(store.url, sql, params)
    if not store.path.exists():
        return []
    # Read-only: the file stays exactly as the killed process left it for the next one.
    connection = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        connection.close()


def _query_postgres(url: str, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
    """A read of its own, in a thread of its own (the caller's loop serves the peers)."""
    import asyncpg

    from router.store.sql import numbered

    async def read() -> list[tuple[Any, ...]]:
        connection = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await connection.fetch(numbered(sql), *params)]
        except asyncpg.UndefinedTableError:
            return []
        finally:
            await connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, read()).result()


def message_state(store: StoreRef) -> tuple[str, str] | None:
    rows = query(store, "SELECT id, state FROM messages ORDER BY created_at")
    return None if not rows else (str(rows[-1][0]), str(rows[-1][1]))


def attempt_counts(store: StoreRef, after: float = 0.0) -> tuple[int, float, int]:
    """(attempts, the latest start, attempts begun after ``after`` and still ``sending``).

    Attempts are only ever added: the latest start before a process started tells the
    attempts it began from the ones an earlier process left in doubt."""
    rows = query(
        store,
        "SELECT COUNT(*), COALESCE(MAX(started_at), 0), COALESCE(SUM(CASE WHEN"
        " state = 'sending' AND started_at > ? THEN 1 ELSE 0 END), 0) FROM attempts",
        after,
    )
    return (int(rows[0][0]), float(rows[0][1]), int(rows[0][2])) if rows else (0, 0.0, 0)


def pending(store: StoreRef, contacts: frozenset[str]) -> bool:
    """Whether any of ``contacts`` still waits for its delivery to be settled."""
    if not contacts:
        return False
    rows = query(store, "SELECT contact FROM deliveries WHERE status = 'pending'")
    return any(row[0] in contacts for row in rows)


def settled(store: StoreRef) -> int:
    """Deliveries no longer pending (reached, failed or expired)."""
    rows = query(store, "SELECT COUNT(*) FROM deliveries WHERE status <> 'pending'")
    return int(rows[0][0]) if rows else 0


def in_flight(store: StoreRef, after: float) -> set[str]:
    """Contacts with an attempt begun after ``after`` left ``sending``."""
    return {
        str(row[0])
        for row in query(
            store, "SELECT DISTINCT contact FROM attempts WHERE state = 'sending'"
            " AND started_at > ?", after,
        )
    }


def integrity(store: StoreRef) -> str:
    if store.postgres:
        return "ok"  # a server's own business: PRAGMA integrity_check is SQLite's
    if not store.exists():
        return "no file"
    rows = query(store, "PRAGMA integrity_check")
    return "; ".join(str(row[0]) for row in rows)


def attempts(store: StoreRef) -> list[AttemptRow]:
    rows = query(
        store,
        "SELECT id, contact, channel, address, state, verdict, detail, provider_id, started_at,"
        " finished_at FROM attempts ORDER BY started_at, id",
    )
    return [AttemptRow(*row) for row in rows]


def deliveries(store: StoreRef) -> dict[str, tuple[str, str | None]]:
    rows = query(store, "SELECT contact, status, channel FROM deliveries")
    return {str(contact): (str(status), channel) for contact, status, channel in rows}


# -- what the peers recorded ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerRecord:
    channel: str
    address: str
    """Normalised like the attempt's address (no ``whatsapp:`` prefix)."""
    provider_id: str
    """What an accepted attempt records for it: SID, ``chat/message_id`` or Message-ID."""


def peer_records(sb: Sandbox) -> list[PeerRecord]:
    records = [
        PeerRecord(channel, m.to.removeprefix("whatsapp:"), m.sid)
        for channel in ("whatsapp", "sms")
        for m in sb.twilio.sent(channel)
    ]
    records += [PeerRecord("voice", c.to, c.sid) for c in sb.twilio.sent("voice")]
    records += [
        PeerRecord("telegram", str(s.chat_id), f"{s.chat_id}/{s.message_id}")
        for s in sb.telegram.sent
    ]
    records += [
        PeerRecord("email", rcpt.lower(), mail.message_id or "")
        for mail in sb.smtp.received
        for rcpt in mail.rcpt_tos
    ]
    return records


def peer_requests(sb: Sandbox) -> Counter[tuple[str, str]]:
    """Every request that could have sent something, by (channel, address), whatever the
    peer answered (503s and rejections included), as the peers logged them."""
    found: Counter[tuple[str, str]] = Counter()
    for r in sb.twilio.requests:
        if r.method == "POST" and r.channel in ("whatsapp", "sms", "voice"):
            found[(r.channel, normalised(r.channel, r.params.get("To", "")))] += 1
    for r in sb.telegram.requests:
        if r.path.endswith("/sendMessage"):
            found[("telegram", str(r.params.get("chat_id", "")))] += 1
    for e in sb.smtp.log:
        if e.command == "RCPT":
            found[("email", normalised("email", e.argument.strip("<>")))] += 1
    return found


def normalised(channel: str, address: str) -> str:
    address = address.removeprefix("whatsapp:")
    return address.lower() if channel == "email" else address


# -- a whole run -----------------------------------------------------------------------------
