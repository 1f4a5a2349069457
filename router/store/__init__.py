"""Where messages, deliveries, attempts and channel health are recorded.

Every attempt is written as ``sending`` before the provider is called and
finished after, so that after a crash nothing is lost and nothing whose fate is
unclear is sent again. One implementation (:class:`SqlStore`) runs on SQLite,
the embedded default, or on PostgreSQL for several instances.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from config.sections import StoreSettings
from config.settings import ConfigError
from router.store.base import (
    AttemptStart,
    Claim,
    DeliverySeed,
    KeyConflict,
    MessageRecord,
    Store,
    StoredAttempt,
    StoredDelivery,
    StoredMessage,
)
from router.store.engines import PostgresEngine, SqliteEngine, sqlite_trouble
from router.store.sqlstore import SqlStore


class SqliteStore(SqlStore):
    """The embedded default: one file shared by the CLI, cron and a server."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        super().__init__(SqliteEngine(path, busy_timeout=busy_timeout))
        self.path = str(path)


class PostgresStore(SqlStore):
    """One database shared by several instances (servers and workers)."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        super().__init__(PostgresEngine(url, pool_size=pool_size))


def open_store(settings: StoreSettings) -> SqlStore:
    """``[store] url`` selects PostgreSQL; otherwise ``[store] path`` is a SQLite file."""
    if settings.url is not None:
        return PostgresStore(settings.url.get_secret_value())
    return SqliteStore(settings.path)


def unusable(exc: Exception, settings: StoreSettings) -> ConfigError | None:
    """What to tell the user when the store cannot be opened: bad config (exit 2, nothing
    sent), naming the file, or the database without its URL (it may carry a password)."""
    if isinstance(exc, OSError | sqlite3.Error):
        if settings.url is not None:
            return ConfigError(f"store.url: cannot reach the database ({type(exc).__name__})")
        return ConfigError(f"store.path: cannot open it: {sqlite_trouble(exc, str(settings.path))}")
    if settings.url is not None and type(exc).__module__.split(".")[0] == "asyncpg":
        return ConfigError(f"store.url: the database refused us ({type(exc).__name__})")
    return None


__all__ = [
    "AttemptStart",
    "Claim",
    "DeliverySeed",
    "KeyConflict",
    "MessageRecord",
    "PostgresStore",
    "SqlStore",
    "SqliteStore",
    "Store",
    "StoredAttempt",
    "StoredDelivery",
    "StoredMessage",
    "open_store",
    "unusable",
]
