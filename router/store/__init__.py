"""Where messages, deliveries, attempts and channel health are recorded.

Every attempt is written as ``sending`` before the provider is called and
finished after, so that after a crash nothing is lost and nothing whose fate is
unclear is sent again. :class:`Store` is the protocol; SQLite is the embedded
default, and the SQL is kept portable for a PostgreSQL backend.
"""

from __future__ import annotations

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
from router.store.sqlite import SqliteStore

__all__ = [
    "AttemptStart",
    "Claim",
    "DeliverySeed",
    "KeyConflict",
    "MessageRecord",
    "SqliteStore",
    "Store",
    "StoredAttempt",
    "StoredDelivery",
    "StoredMessage",
]
