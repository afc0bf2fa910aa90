DROP TABLE sync_devices;
ALTER TABLE sync_usage DROP COLUMN checksum_hi;
ALTER TABLE sync_usage DROP COLUMN checksum_lo;
ALTER TABLE sync_usage DROP COLUMN total;
