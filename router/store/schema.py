"""Schema migrations, applied in order at startup. Portable SQL: SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

from router.store.sql import Dialect


@dataclass(frozen=True, slots=True)
class Only:
    """A statement for one engine only (PostgreSQL's triggers have no SQLite twin)."""

    dialect: Dialect
    sql: str


BOARD_CHANNEL = "backchannel_board"
"""PostgreSQL NOTIFY channel: the payload names the table that changed."""
BOARD_TABLES = ("messages", "deliveries", "attempts", "channel_health", "inbound", "opt_outs",
                "reachability_runs")  # fmt: skip

MIGRATIONS: list[list[str | Only]] = [
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
    [
        # Two-way: what each delivery is waiting for, receipts, replies and acknowledgements.
        "ALTER TABLE messages ADD COLUMN goal TEXT NOT NULL DEFAULT 'accepted'",
        "ALTER TABLE deliveries ADD COLUMN goal TEXT NOT NULL DEFAULT 'accepted'",
        "ALTER TABLE deliveries ADD COLUMN done INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE deliveries ADD COLUMN round INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE deliveries ADD COLUMN ack_code TEXT",
        "ALTER TABLE deliveries ADD COLUMN waiting_for TEXT",
        "ALTER TABLE deliveries ADD COLUMN waiting_attempt TEXT",
        "ALTER TABLE deliveries ADD COLUMN next_action_at DOUBLE PRECISION",
        "CREATE INDEX deliveries_due ON deliveries (next_action_at)",
        "CREATE INDEX deliveries_by_ack_code ON deliveries (ack_code)",
        "ALTER TABLE attempts ADD COLUMN round INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE attempts ADD COLUMN receipt TEXT",
        "CREATE INDEX attempts_by_provider_id ON attempts (provider_id)",
        """CREATE TABLE inbound (
            id TEXT PRIMARY KEY,
            channel TEXT NOT NULL,
            external_id TEXT NOT NULL UNIQUE,
            address TEXT NOT NULL,
            contact TEXT,
            kind TEXT NOT NULL,
            text TEXT NOT NULL,
            message_id TEXT,
            received_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX inbound_by_time ON inbound (received_at)",
        """CREATE TABLE opt_outs (
            contact TEXT NOT NULL,
            channel TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (contact, channel)
        )""",
        "CREATE TABLE webhook_events (key TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL)",
        """CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            heartbeat_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE TABLE settings_kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
    [
        # Reachability runs (cron): one row per run, one per contact and channel checked.
        """CREATE TABLE reachability_runs (
            id TEXT PRIMARY KEY,
            started_at DOUBLE PRECISION NOT NULL,
            finished_at DOUBLE PRECISION NOT NULL,
            audience TEXT,
            send_test BOOLEAN NOT NULL,
            exit_status INTEGER NOT NULL,
            contacts INTEGER NOT NULL,
            redundant INTEGER NOT NULL,
            single_domain INTEGER NOT NULL,
            unreachable INTEGER NOT NULL,
            channels_down TEXT NOT NULL
        )""",
        "CREATE INDEX reachability_runs_by_time ON reachability_runs (started_at)",
        """CREATE TABLE reachability_checks (
            run_id TEXT NOT NULL REFERENCES reachability_runs (id),
            contact TEXT NOT NULL,
            channel TEXT NOT NULL,
            up BOOLEAN NOT NULL,
            tested BOOLEAN NOT NULL,
            outcome TEXT,
            detail TEXT,
            message_id TEXT,
            acknowledged_at DOUBLE PRECISION,
            at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (run_id, contact, channel)
        )""",
        "CREATE INDEX reachability_checks_by_contact ON reachability_checks (contact, channel, at)",
    ],
    [
        # Several instances: leased deliveries for workers, shared rate limits, and leases
        # for jobs that one instance at a time should do (probing).
        "ALTER TABLE deliveries ADD COLUMN lease_owner TEXT",
        "ALTER TABLE deliveries ADD COLUMN lease_until DOUBLE PRECISION",
        "CREATE INDEX deliveries_claimable ON deliveries (status, done, lease_until)",
        """CREATE TABLE rate_limits (
            key TEXT PRIMARY KEY,
            due DOUBLE PRECISION NOT NULL,
            paused_until DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            until DOUBLE PRECISION NOT NULL
        )""",
    ],
    [
        # Receipts are stored in neutral states (router.model.inbound.ReceiptState), not in
        # a provider's words: the ones Twilio's statuses were stored as before, mapped.
        """UPDATE attempts SET receipt = CASE receipt
            WHEN 'accepted' THEN 'queued' WHEN 'scheduled' THEN 'queued'
            WHEN 'initiated' THEN 'queued' WHEN 'ringing' THEN 'sent'
            WHEN 'in-progress' THEN 'answered' WHEN 'completed' THEN 'delivered'
            WHEN 'undelivered' THEN 'failed' WHEN 'busy' THEN 'failed'
            WHEN 'no-answer' THEN 'failed' WHEN 'canceled' THEN 'failed'
            ELSE receipt END
        WHERE receipt IS NOT NULL""",
        # Update cursors are kept per feed, whatever the provider.
        "UPDATE settings_kv SET key = 'telegram-updates.cursor'"
        " WHERE key = 'telegram.update_offset'",
    ],
    [
        # Fencing: ownership of a message (a run) and the lease of a delivery (a worker)
        # carry an epoch that grows at every take-over; an attempt is started only while
        # the starter's epoch is current (compare-and-set in the same transaction).
        "ALTER TABLE messages ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE deliveries ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0",
    ],
    [
        # Channels and providers: which provider carried each attempt (those recorded
        # before there was a choice went through the only provider of their channel), and
        # a probe's warning that is not a failure (a low balance).
        "ALTER TABLE attempts ADD COLUMN provider TEXT",
        "UPDATE attempts SET provider = CASE channel WHEN 'telegram' THEN 'telegram'"
        " WHEN 'email' THEN 'email' ELSE 'twilio' END",
        "ALTER TABLE channel_health ADD COLUMN warning TEXT NOT NULL DEFAULT ''",
    ],
    [
        # Per-message writes: every index is one more B-tree to update on each attempt.
        # Those that only serve rare lookups keep just the rows they look up (partial
        # indexes): an attempt leaves the in-doubt index when it finishes, a delivery
        # leaves the claimable and due ones when it is settled.
        "DROP INDEX attempts_in_doubt",
        "CREATE INDEX attempts_in_doubt ON attempts (state) WHERE state = 'sending'",
        "DROP INDEX attempts_by_provider_id",
        "CREATE INDEX attempts_by_provider_id ON attempts (provider_id)"
        " WHERE provider_id IS NOT NULL",
        "DROP INDEX deliveries_due",
        "CREATE INDEX deliveries_due ON deliveries (next_action_at)"
        " WHERE next_action_at IS NOT NULL",
        "DROP INDEX deliveries_claimable",
        "CREATE INDEX deliveries_claimable ON deliveries (lease_until)"
        " WHERE status = 'pending' AND done = 0",
        "DROP INDEX deliveries_by_ack_code",  # ack codes are matched per contact, in code
    ],
    [
        # Audiences of any size: deliveries are worked and read back a page at a time, in
        # audience order; what a result said beyond its attempts is kept with it.
        "CREATE INDEX deliveries_by_position ON deliveries (message_id, position)",
        # Claims walk one message's open deliveries in audience order, and a message ends
        # when none is open: settled ones leave this index, so both cost the same at the
        # end of a million deliveries as at the start.
        "DROP INDEX deliveries_claimable",
        "CREATE INDEX deliveries_open ON deliveries (message_id, position) WHERE done = 0",
        "ALTER TABLE deliveries ADD COLUMN notes TEXT",
    ],
    [
        # The crisis board reads counts by status from an index, never by loading rows;
        # its lists are newest first and paginated by position (deliveries_by_position).
        "CREATE INDEX messages_by_time ON messages (created_at)",
        "CREATE INDEX deliveries_by_status ON deliveries (message_id, status)",
        "CREATE INDEX inbound_by_contact ON inbound (contact, kind, received_at)",
        "CREATE INDEX reachability_checks_by_channel"
        " ON reachability_checks (channel, outcome, at)",
        # What any process writes reaches the board at once: on PostgreSQL by NOTIFY at
        # commit (one per statement and table, merged within a transaction); SQLite's
        # board watches the file's data_version instead, which costs writers nothing.
        Only("postgres", f"""CREATE FUNCTION backchannel_board_changed() RETURNS trigger
            LANGUAGE plpgsql AS $$ BEGIN
                PERFORM pg_notify('{BOARD_CHANNEL}', TG_TABLE_NAME);
                RETURN NULL;
            END $$"""),
        *(Only("postgres", f"CREATE TRIGGER board_{table} AFTER INSERT OR UPDATE OR DELETE"
                           f" ON {table} FOR EACH STATEMENT"
                           " EXECUTE FUNCTION backchannel_board_changed()")
          for table in BOARD_TABLES),
    ],
    [
        # Incidents: one thread from the first alert to the all-clear. Every message sent
        # for an incident names it and the entry of its timeline it carries; resolving
        # stops the incident's messages (stopped_at): no attempt starts after it.
        "ALTER TABLE messages ADD COLUMN incident_id TEXT",
        "ALTER TABLE messages ADD COLUMN incident_entry TEXT",
        "ALTER TABLE messages ADD COLUMN stopped_at DOUBLE PRECISION",
        "CREATE INDEX messages_by_incident ON messages (incident_id)",
        "CREATE INDEX inbound_by_message ON inbound (message_id)",
        """CREATE TABLE incidents (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            severity TEXT NOT NULL,
            owner TEXT,
            audience TEXT NOT NULL,
            variables TEXT NOT NULL,
            opened_at DOUBLE PRECISION NOT NULL,
            resolved_at DOUBLE PRECISION,
            updated_at DOUBLE PRECISION NOT NULL,
            next_update_at DOUBLE PRECISION,
            reminded_at DOUBLE PRECISION,
            reminder_claimed_until DOUBLE PRECISION,
            ack_announced_at DOUBLE PRECISION,
            announce_claimed_until DOUBLE PRECISION
        )""",
        "CREATE INDEX incidents_by_time ON incidents (opened_at)",
        "CREATE INDEX incidents_promised ON incidents (next_update_at)",
        """CREATE TABLE incident_entries (
            id TEXT PRIMARY KEY,
            incident_id TEXT NOT NULL REFERENCES incidents (id),
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            text TEXT NOT NULL,
            public_text TEXT,
            next_update_at DOUBLE PRECISION,
            UNIQUE (incident_id, seq)
        )""",
        # The crisis board lists incidents: their changes reach it as the others' do.
        *(Only("postgres", f"CREATE TRIGGER board_{table} AFTER INSERT OR UPDATE OR DELETE"
                           f" ON {table} FOR EACH STATEMENT"
                           " EXECUTE FUNCTION backchannel_board_changed()")
          for table in ("incidents", "incident_entries")),
    ],
]
