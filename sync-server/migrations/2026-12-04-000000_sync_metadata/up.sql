-- Sync metadata (sync-protocol's `metadata` module): per user and collection, the records
-- with tombstones and the collection checksum, kept as two sums (low and high 32 bits of the
-- record hashes) that plain SQL addition cannot overflow. NULL means "not counted yet": the
-- hash is SHA-256 based, which SQL cannot compute here, so rows from before this migration
-- are counted by the server when it opens the database (`store::meta::count_checksums`).
ALTER TABLE sync_usage ADD COLUMN total BIGINT;
ALTER TABLE sync_usage ADD COLUMN checksum_lo BIGINT;
ALTER TABLE sync_usage ADD COLUMN checksum_hi BIGINT;

-- The devices of each user: the `X-Sync-Device` header of their requests.
CREATE TABLE sync_devices (
    owner TEXT NOT NULL,
    device_id TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    last_successful_sync TEXT,
    PRIMARY KEY (owner, device_id)
);
