DROP TRIGGER _sync_quarantine_counts_delete ON _sync_quarantine;
DROP TRIGGER _sync_quarantine_counts_insert ON _sync_quarantine;
DROP FUNCTION _sync_quarantine_counts_add();
DROP TRIGGER _sync_outbox_counts_update ON _sync_outbox;
DROP TRIGGER _sync_outbox_counts_delete ON _sync_outbox;
DROP TRIGGER _sync_outbox_counts_insert ON _sync_outbox;
DROP FUNCTION _sync_outbox_counts_add();
DROP TABLE _sync_outbox_counts;
UPDATE _sync_schema_version SET version = 4 WHERE id = 1 AND version = 5;
