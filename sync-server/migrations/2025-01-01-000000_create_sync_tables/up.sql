-- Records of every collection. Each user owns its own id space, so one user's record can never
-- be read, overwritten or even detected by another.
CREATE TABLE sync_records (
    owner TEXT NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (owner, collection, id)
);

-- Pulls read one user's collection in version order. The index is on `owner || ''` rather than
-- `owner` so that it can never serve a lookup by key: without statistics (a young table) the
-- Postgres planner rated it as good as the primary key for `owner = ? AND collection = ? AND
-- id = ?` and then scanned the whole collection for every record a write touched. Pulls name
-- the same expression.
CREATE INDEX sync_records_pull ON sync_records ((owner || ''), collection, version);

-- Applied idempotency keys and the result they returned.
CREATE TABLE sync_idempotency (
    owner TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    collection TEXT NOT NULL,
    op TEXT NOT NULL,
    record_id TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (owner, idem_key)
);

-- The one version sequence. Writers lock this row (Postgres) or the database (SQLite) for the
-- whole transaction, so versions become visible in commit order.
CREATE TABLE sync_sequence (
    id INTEGER PRIMARY KEY,
    value BIGINT NOT NULL
);

INSERT INTO sync_sequence (id, value) VALUES (1, 0);
