-- A leaner outbox (issue 18), as on SQLite (see its migration 7): one unique index serves the
-- record lookups and the rule that a record has at most one pending op that was never sent
-- (its third column is 0 for such an op and the seq for every other one), replacing
-- `_sync_outbox_record` and the partial `_sync_outbox_one_unsent`; `idempotency_key` loses
-- its UNIQUE constraint (no query looks ops up by key, and keys are unique by construction).
-- `_sync_outbox_ready` leaves out pending ops of priority 0 (read in seq order from the
-- primary key instead). `seq` stays a sequence: Postgres never hands a value out twice.
ALTER TABLE _sync_outbox DROP CONSTRAINT _sync_outbox_idempotency_key_key;
DROP INDEX _sync_outbox_one_unsent;
DROP INDEX _sync_outbox_record;
CREATE UNIQUE INDEX _sync_outbox_record ON _sync_outbox (
    model_type, record_id, (CASE WHEN state = 'pending' AND NOT sent THEN 0 ELSE seq END)
);
DROP INDEX _sync_outbox_ready;
CREATE INDEX _sync_outbox_ready ON _sync_outbox (state, priority DESC, seq)
    WHERE state <> 'pending' OR priority <> 0;
UPDATE _sync_schema_version SET version = 7 WHERE id = 1 AND version < 7;
