-- What the store knows of the remote's records, per model: how many (rows the remote
-- versioned and remembered tombstones) and their checksum (sync-protocol's `metadata`: the sum
-- of the record hashes, kept as two sums of their low and high 32 bits). Changed in the
-- transaction of every write that changes a row's version or deletion or a tombstone; a model
-- without a row here is counted by a scan the first time its checksum is read.
CREATE TABLE _sync_checksums (
    model_type TEXT PRIMARY KEY,
    records BIGINT NOT NULL,
    checksum_lo BIGINT NOT NULL,
    checksum_hi BIGINT NOT NULL
);
UPDATE _sync_schema_version SET version = 6 WHERE id = 1;
