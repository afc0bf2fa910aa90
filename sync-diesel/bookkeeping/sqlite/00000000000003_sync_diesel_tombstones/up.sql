-- The versions at which the remote deleted records this store no longer holds (a pulled or
-- realtime tombstone, or this device's acknowledged delete). A copy of such a record that
-- is not newer than its tombstone is stale and must not bring the record back.
CREATE TABLE _sync_tombstones (
    model_type TEXT NOT NULL,
    record_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (model_type, record_id)
);
UPDATE _sync_schema_version SET version = 3 WHERE id = 1;
