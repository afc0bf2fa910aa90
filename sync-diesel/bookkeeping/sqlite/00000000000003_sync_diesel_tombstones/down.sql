DROP TABLE _sync_tombstones;
UPDATE _sync_schema_version SET version = 2 WHERE id = 1;
