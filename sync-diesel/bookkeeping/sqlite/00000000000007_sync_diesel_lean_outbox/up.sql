-- A leaner outbox (issue 18): a single save dirtied about ten pages, each a WAL frame of its
-- commit; these changes take four of them away without changing what the outbox enforces.
--
-- 1. One unique index serves both the record lookups and the rule that a record has at most
--    one pending op that was never sent (DESIGN.md invariant 2): its third column is 0 for
--    such an op and the op's seq for every other one, so two never-sent pending ops of a
--    record collide and nothing else does. It replaces `_sync_outbox_record` and the partial
--    `_sync_outbox_one_unsent`.
-- 2. `idempotency_key` is no longer UNIQUE. No query looks ops up by key, and keys are unique
--    by construction (a random 122-bit prefix per process and a counter; a changed op gets a
--    new one), so the index only cost a page per save.
-- 3. `_sync_outbox_ready` leaves out pending ops of priority 0, the ops of a save at the
--    default priority: pushes read those in seq order from the table itself (its rowid
--    order), and the index keeps the ones of other priorities and the in-flight and failed
--    ones. Queries that read through it repeat its condition, so the planner can use it.
-- 4. No AUTOINCREMENT (which writes `sqlite_sequence` on every insert): the largest seq ever
--    handed out is kept in the counts row, which every insert already updates, and the insert
--    trigger refuses a seq at or below it, so a seq is never used twice, also after the ops
--    that held it were deleted.
--
-- SQLite cannot drop a column's UNIQUE or a table's AUTOINCREMENT in place, so the table is
-- rebuilt with every row as it was.

CREATE TABLE _sync_outbox_v7 (
    seq INTEGER PRIMARY KEY,
    model_type TEXT NOT NULL,
    record_id TEXT NOT NULL,
    user_id TEXT,
    op TEXT NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    changed_fields TEXT NOT NULL DEFAULT '[]',
    base_version BIGINT NOT NULL DEFAULT 0,
    base_values TEXT NOT NULL DEFAULT '{}',
    idempotency_key TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    last_error TEXT,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'inflight', 'failed')),
    created_at TEXT NOT NULL,
    sent BOOLEAN NOT NULL DEFAULT FALSE
);

INSERT INTO _sync_outbox_v7 (seq, model_type, record_id, user_id, op, changed_fields,
    base_version, base_values, idempotency_key, priority, attempts, next_attempt_at, last_error,
    state, created_at, sent)
SELECT seq, model_type, record_id, user_id, op, changed_fields, base_version, base_values,
    idempotency_key, priority, attempts, next_attempt_at, last_error, state, created_at, sent
FROM _sync_outbox;

-- The largest seq ever handed out: AUTOINCREMENT's record of it, which covers ops deleted
-- since, or the largest seq present.
ALTER TABLE _sync_outbox_counts ADD COLUMN last_seq BIGINT NOT NULL DEFAULT 0;
UPDATE _sync_outbox_counts SET last_seq = MAX(
    COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '_sync_outbox'), 0),
    COALESCE((SELECT MAX(seq) FROM _sync_outbox), 0)
) WHERE id = 1;

-- Drops the old indexes and the outbox's count triggers with it.
DROP TABLE _sync_outbox;
ALTER TABLE _sync_outbox_v7 RENAME TO _sync_outbox;

CREATE UNIQUE INDEX _sync_outbox_record ON _sync_outbox (
    model_type, record_id, (CASE WHEN state = 'pending' AND NOT sent THEN 0 ELSE seq END)
);
CREATE INDEX _sync_outbox_ready ON _sync_outbox (state, priority DESC, seq)
    WHERE state <> 'pending' OR priority <> 0;

CREATE TRIGGER _sync_outbox_counts_insert AFTER INSERT ON _sync_outbox
BEGIN
    SELECT RAISE(ABORT, 'outbox seq at or below one already handed out')
    WHERE NEW.seq <= (SELECT last_seq FROM _sync_outbox_counts WHERE id = 1);
    UPDATE _sync_outbox_counts
    SET pending = pending + (NEW.state <> 'failed'), failed = failed + (NEW.state = 'failed'),
        last_seq = NEW.seq
    WHERE id = 1;
END;

CREATE TRIGGER _sync_outbox_counts_delete AFTER DELETE ON _sync_outbox
BEGIN
    UPDATE _sync_outbox_counts
    SET pending = pending - (OLD.state <> 'failed'), failed = failed - (OLD.state = 'failed')
    WHERE id = 1;
END;

-- Only a move into or out of `failed` changes the counts (pending <-> inflight does not).
CREATE TRIGGER _sync_outbox_counts_state AFTER UPDATE OF state ON _sync_outbox
WHEN (OLD.state = 'failed') <> (NEW.state = 'failed')
BEGIN
    UPDATE _sync_outbox_counts
    SET pending = pending + (OLD.state = 'failed') - (NEW.state = 'failed'),
        failed = failed + (NEW.state = 'failed') - (OLD.state = 'failed')
    WHERE id = 1;
END;

UPDATE _sync_schema_version SET version = 7 WHERE id = 1 AND version < 7;
