-- An op that may have reached the remote is frozen until an answer settles it, so a record
-- can have a possibly-sent pending op with a never-sent one behind it. What stays unique is
-- the never-sent pending op, the only one an edit may change.
DROP INDEX _sync_outbox_one_pending;
CREATE UNIQUE INDEX _sync_outbox_one_unsent ON _sync_outbox (model_type, record_id)
    WHERE state = 'pending' AND NOT sent;
UPDATE _sync_schema_version SET version = 2 WHERE id = 1;
