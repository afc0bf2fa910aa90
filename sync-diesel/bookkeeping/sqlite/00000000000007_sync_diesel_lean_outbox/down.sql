-- Back to the outbox of version 6: AUTOINCREMENT (its sequence set to the largest seq ever
-- handed out), a UNIQUE key, the record index and the partial unique index.
CREATE TABLE _sync_outbox_v6 (
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

INSERT INTO _sync_outbox_v6 (seq, model_type, record_id, user_id, op, changed_fields,
    base_version, base_values, idempotency_key, priority, attempts, next_attempt_at, last_error,
    state, created_at, sent)
SELECT seq, model_type, record_id, user_id, op, changed_fields, base_version, base_values,
    idempotency_key, priority, attempts, next_attempt_at, last_error, state, created_at, sent
FROM _sync_outbox;

DROP TABLE _sync_outbox;
ALTER TABLE _sync_outbox_v6 RENAME TO _sync_outbox;

DELETE FROM sqlite_sequence WHERE name = '_sync_outbox';
INSERT INTO sqlite_sequence (name, seq)
SELECT '_sync_outbox', MAX(last_seq, COALESCE((SELECT MAX(seq) FROM _sync_outbox), 0))
FROM _sync_outbox_counts WHERE id = 1;
ALTER TABLE _sync_outbox_counts ADD COLUMN pending BIGINT NOT NULL DEFAULT 0;
UPDATE _sync_outbox_counts SET pending = (SELECT COUNT(*) FROM _sync_outbox WHERE state <> 'failed')
WHERE id = 1;
ALTER TABLE _sync_outbox_counts DROP COLUMN last_seq;
ALTER TABLE _sync_outbox_counts DROP COLUMN gone;

CREATE INDEX _sync_outbox_record ON _sync_outbox (model_type, record_id, seq);
CREATE UNIQUE INDEX _sync_outbox_one_unsent ON _sync_outbox (model_type, record_id)
    WHERE state = 'pending' AND NOT sent;
CREATE INDEX _sync_outbox_ready ON _sync_outbox (state, priority DESC, seq);

CREATE TRIGGER _sync_outbox_counts_insert AFTER INSERT ON _sync_outbox
BEGIN
    UPDATE _sync_outbox_counts
    SET pending = pending + (NEW.state <> 'failed'), failed = failed + (NEW.state = 'failed')
    WHERE id = 1;
END;

CREATE TRIGGER _sync_outbox_counts_delete AFTER DELETE ON _sync_outbox
BEGIN
    UPDATE _sync_outbox_counts
    SET pending = pending - (OLD.state <> 'failed'), failed = failed - (OLD.state = 'failed')
    WHERE id = 1;
END;

CREATE TRIGGER _sync_outbox_counts_state AFTER UPDATE OF state ON _sync_outbox
WHEN (OLD.state = 'failed') <> (NEW.state = 'failed')
BEGIN
    UPDATE _sync_outbox_counts
    SET pending = pending + (OLD.state = 'failed') - (NEW.state = 'failed'),
        failed = failed + (NEW.state = 'failed') - (OLD.state = 'failed')
    WHERE id = 1;
END;

UPDATE _sync_schema_version SET version = 6 WHERE id = 1;
