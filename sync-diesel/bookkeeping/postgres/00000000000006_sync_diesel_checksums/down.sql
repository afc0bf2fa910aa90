DROP TABLE _sync_checksums;
UPDATE _sync_schema_version SET version = 5 WHERE id = 1;
