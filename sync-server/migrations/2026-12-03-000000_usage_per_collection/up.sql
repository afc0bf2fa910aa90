-- What each user stores, per collection: live (not deleted) records and the bytes of every
-- record row's data, tombstones included (a tombstone keeps its last data for filtered readers,
-- so deleting does not free it). Maintained by every write in the same transaction as the
-- records (`store/write.rs`); `Limits::max_user_bytes` is checked against its sum per user.
CREATE TABLE sync_usage (
    owner TEXT NOT NULL,
    collection TEXT NOT NULL,
    records BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    PRIMARY KEY (owner, collection)
);

-- The records stored before this migration.
INSERT INTO sync_usage (owner, collection, records, bytes)
SELECT owner, collection,
       SUM(CASE WHEN deleted THEN 0 ELSE 1 END),
       SUM(octet_length(data))
FROM sync_records
GROUP BY owner, collection;
