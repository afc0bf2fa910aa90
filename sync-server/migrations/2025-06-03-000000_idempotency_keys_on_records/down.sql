-- The build before this migration finds every key in `sync_idempotency`; a key that lives on
-- its record row gets the lazy row that build rebuilds the result from.
ALTER TABLE sync_sequence RENAME COLUMN head_version TO last_version;

INSERT INTO sync_idempotency
    (owner, idem_key, collection, op, record_id, result, created_at, record_version)
SELECT owner, idem_key, collection, idem_op, id, '', updated_at, version
FROM sync_records
WHERE idem_key IS NOT NULL AND idem_op IS NOT NULL;

DROP INDEX sync_records_idem_key;
ALTER TABLE sync_records DROP COLUMN idem_op;
