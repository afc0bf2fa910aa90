DROP TABLE _sync_quarantine;
UPDATE _sync_schema_version SET version = 3 WHERE id = 1;
