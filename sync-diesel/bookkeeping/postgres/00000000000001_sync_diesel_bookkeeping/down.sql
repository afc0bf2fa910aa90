DROP TABLE _sync_schema_version;
DROP TABLE _sync_metadata;
DROP TABLE _sync_state;
DROP TABLE _sync_outbox;
