DROP TABLE sync_sequence;
DROP TABLE sync_idempotency;
DROP TABLE sync_records;
