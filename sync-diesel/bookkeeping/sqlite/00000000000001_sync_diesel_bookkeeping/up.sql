-- Bookkeeping tables of offline-sync-kit's local store (sync-diesel), SQLite.
-- Times are fixed-width UTC text (2024-05-01T12:00:00.000000000Z).

CREATE TABLE _sync_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model_type TEXT NOT NULL,
    record_id TEXT NOT NULL,
    user_id TEXT,
    op TEXT NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    changed_fields TEXT NOT NULL DEFAULT '[]',
    base_version BIGINT NOT NULL DEFAULT 0,
    base_values TEXT NOT NULL DEFAULT '{}',
    idempotency_key TEXT NOT NULL UNIQUE,
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    last_error TEXT,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'inflight', 'failed')),
    created_at TEXT NOT NULL,
    sent BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE INDEX _sync_outbox_record ON _sync_outbox (model_type, record_id, seq);
-- At most one pending op per record (DESIGN.md invariant 2), enforced by the database.
CREATE UNIQUE INDEX _sync_outbox_one_pending ON _sync_outbox (model_type, record_id)
    WHERE state = 'pending';
CREATE INDEX _sync_outbox_ready ON _sync_outbox (state, priority DESC, seq);

CREATE TABLE _sync_state (
    user_id TEXT NOT NULL DEFAULT '',
    model_type TEXT NOT NULL,
    cursor TEXT,
    last_pull_at TEXT,
    last_push_at TEXT,
    PRIMARY KEY (user_id, model_type)
);

CREATE TABLE _sync_metadata (
    user_id TEXT NOT NULL DEFAULT '',
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
);

CREATE TABLE _sync_schema_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);

INSERT INTO _sync_schema_version (id, version) VALUES (1, 1);
