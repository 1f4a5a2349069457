"""Schema migrations, applied in order at startup. Portable SQL: SQLite and PostgreSQL."""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            idempotency_key TEXT UNIQUE,
            fingerprint TEXT NOT NULL,
            body TEXT NOT NULL,
            audience TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION,
            state TEXT NOT NULL,
            owner TEXT,
            heartbeat_at DOUBLE PRECISION,
            finished_at DOUBLE PRECISION
        )""",
        "CREATE INDEX messages_by_state ON messages (state)",
        """CREATE TABLE deliveries (
            message_id TEXT NOT NULL REFERENCES messages (id),
            contact TEXT NOT NULL,
            position INTEGER NOT NULL,
            addresses TEXT NOT NULL,
            status TEXT NOT NULL,
            channel TEXT,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (message_id, contact)
        )""",
        """CREATE TABLE attempts (
            id TEXT PRIMARY KEY,
            message_id TEXT NOT NULL,
            contact TEXT NOT NULL,
            channel TEXT NOT NULL,
            address TEXT NOT NULL,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            verdict TEXT,
            scope TEXT,
            detail TEXT,
            provider_id TEXT,
            retry_after DOUBLE PRECISION,
            started_at DOUBLE PRECISION NOT NULL,
            finished_at DOUBLE PRECISION,
            FOREIGN KEY (message_id, contact) REFERENCES deliveries (message_id, contact)
        )""",
        "CREATE INDEX attempts_by_delivery ON attempts (message_id, contact)",
        "CREATE INDEX attempts_in_doubt ON attempts (state)",
        "CREATE INDEX attempts_by_contact ON attempts (contact, started_at)",
    ],
    [
        # One row per channel or shared dependency; the newest writer wins (updated_at).
        """CREATE TABLE channel_health (
            name TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            since DOUBLE PRECISION NOT NULL,
            consecutive_failures INTEGER NOT NULL,
            cooldown DOUBLE PRECISION NOT NULL,
            next_trial_at DOUBLE PRECISION NOT NULL,
            trial_started_at DOUBLE PRECISION NOT NULL,
            closed_at DOUBLE PRECISION NOT NULL,
            last_error TEXT NOT NULL,
            last_probe_at DOUBLE PRECISION,
            last_probe_ok BOOLEAN,
            last_probe_latency DOUBLE PRECISION,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
    ],
]
