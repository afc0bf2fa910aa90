DROP TRIGGER _sync_quarantine_counts_delete;
DROP TRIGGER _sync_quarantine_counts_insert;
DROP TRIGGER _sync_outbox_counts_state;
DROP TRIGGER _sync_outbox_counts_delete;
DROP TRIGGER _sync_outbox_counts_insert;
DROP TABLE _sync_outbox_counts;
UPDATE _sync_schema_version SET version = 4 WHERE id = 1 AND version = 5;
