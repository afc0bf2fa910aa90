DROP INDEX _sync_outbox_one_unsent;
CREATE UNIQUE INDEX _sync_outbox_one_pending ON _sync_outbox (model_type, record_id)
    WHERE state = 'pending';
UPDATE _sync_schema_version SET version = 1 WHERE id = 1;
