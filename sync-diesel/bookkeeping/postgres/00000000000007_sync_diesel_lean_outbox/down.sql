DROP INDEX _sync_outbox_record;
DROP INDEX _sync_outbox_ready;
CREATE INDEX _sync_outbox_ready ON _sync_outbox (state, priority DESC, seq);
CREATE INDEX _sync_outbox_record ON _sync_outbox (model_type, record_id, seq);
CREATE UNIQUE INDEX _sync_outbox_one_unsent ON _sync_outbox (model_type, record_id)
    WHERE state = 'pending' AND NOT sent;
ALTER TABLE _sync_outbox ADD CONSTRAINT _sync_outbox_idempotency_key_key UNIQUE (idempotency_key);
UPDATE _sync_schema_version SET version = 6 WHERE id = 1;
