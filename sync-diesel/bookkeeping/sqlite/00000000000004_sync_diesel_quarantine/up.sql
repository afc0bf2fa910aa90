-- Remote records kept aside because they do not fit their model (or could not be read), so
-- the pull cursor can move past them: the raw record as received, why it was refused and
-- when. `record_key` is the record id, or a hash of the raw record when it has no usable id.
CREATE TABLE _sync_quarantine (
    model_type TEXT NOT NULL,
    record_key TEXT NOT NULL,
    record_id TEXT,
    raw TEXT NOT NULL,
    error TEXT NOT NULL,
    quarantined_at TEXT NOT NULL,
    PRIMARY KEY (model_type, record_key)
);
UPDATE _sync_schema_version SET version = 4 WHERE id = 1;
