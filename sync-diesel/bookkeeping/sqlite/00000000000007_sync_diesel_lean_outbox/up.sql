-- A leaner outbox (issue 18): a single save dirtied about ten pages, each a WAL frame of its
-- commit; these changes take five of them away without changing what the outbox enforces.
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
-- 4. No AUTOINCREMENT (which writes `sqlite_sequence` on every insert), and no write of the
--    counts row on an insert: every insert takes the next seq, one past the largest ever
--    handed out, and the insert trigger refuses any other. The largest seq handed out is then
--    the larger of the largest present and `last_seq`, which the delete trigger raises to the
--    seq of each op it deletes; so a seq is never used twice, also after the ops that held it
--    were deleted. The ops present are that seq less `gone` (the seqs below it that hold no
--    op: deleted ops, and seqs an earlier build never used), which only a delete changes;
--    `pending` is what remains after `failed`. `LocalStore::counts` reads them as
--    `MAX(last_seq, MAX(seq)) - gone - failed` (a descent of the table's b-tree), and the
--    triggers update the row on deletes and moves into or out of `failed` only.
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
-- since, or the largest seq present; and the seqs up to it that hold no op.
ALTER TABLE _sync_outbox_counts ADD COLUMN last_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE _sync_outbox_counts ADD COLUMN gone BIGINT NOT NULL DEFAULT 0;
UPDATE _sync_outbox_counts SET last_seq = MAX(
    COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '_sync_outbox'), 0),
    COALESCE((SELECT MAX(seq) FROM _sync_outbox), 0)
) WHERE id = 1;
UPDATE _sync_outbox_counts SET gone = last_seq - (SELECT COUNT(*) FROM _sync_outbox)
WHERE id = 1;

-- Drops the old indexes and the outbox's count triggers with it.
DROP TABLE _sync_outbox;
ALTER TABLE _sync_outbox_v7 RENAME TO _sync_outbox;

-- Derived from `last_seq`, `gone` and `failed` from now on (the old triggers went with the
-- old table).
ALTER TABLE _sync_outbox_counts DROP COLUMN pending;

CREATE UNIQUE INDEX _sync_outbox_record ON _sync_outbox (
    model_type, record_id, (CASE WHEN state = 'pending' AND NOT sent THEN 0 ELSE seq END)
);
CREATE INDEX _sync_outbox_ready ON _sync_outbox (state, priority DESC, seq)
    WHERE state <> 'pending' OR priority <> 0;

-- One past the largest seq handed out, and the largest now; nothing to write (a failed op
-- inserted as such is counted by the next trigger).
CREATE TRIGGER _sync_outbox_counts_insert AFTER INSERT ON _sync_outbox
BEGIN
    SELECT RAISE(ABORT, 'an outbox op must take the seq after the largest handed out')
    WHERE NEW.seq <> 1 + MAX(
            (SELECT last_seq FROM _sync_outbox_counts WHERE id = 1),
            COALESCE((SELECT MAX(seq) FROM _sync_outbox WHERE seq < NEW.seq), 0))
        OR NEW.seq <> (SELECT MAX(seq) FROM _sync_outbox);
END;

CREATE TRIGGER _sync_outbox_counts_insert_failed AFTER INSERT ON _sync_outbox
WHEN NEW.state = 'failed'
BEGIN
    UPDATE _sync_outbox_counts SET failed = failed + 1 WHERE id = 1;
END;

CREATE TRIGGER _sync_outbox_counts_delete AFTER DELETE ON _sync_outbox
BEGIN
    UPDATE _sync_outbox_counts
    SET gone = gone + 1, failed = failed - (OLD.state = 'failed'),
        last_seq = MAX(last_seq, OLD.seq)
    WHERE id = 1;
END;

-- Only a move into or out of `failed` changes the counts (pending <-> inflight does not).
CREATE TRIGGER _sync_outbox_counts_state AFTER UPDATE OF state ON _sync_outbox
WHEN (OLD.state = 'failed') <> (NEW.state = 'failed')
BEGIN
    UPDATE _sync_outbox_counts
    SET failed = failed + (NEW.state = 'failed') - (OLD.state = 'failed')
    WHERE id = 1;
END;

-- A seq never changes (the counts and the never-reused rule depend on it).
CREATE TRIGGER _sync_outbox_seq_fixed BEFORE UPDATE OF seq ON _sync_outbox
WHEN NEW.seq <> OLD.seq
BEGIN
    SELECT RAISE(ABORT, 'an outbox op keeps its seq');
END;

UPDATE _sync_schema_version SET version = 7 WHERE id = 1 AND version < 7;
