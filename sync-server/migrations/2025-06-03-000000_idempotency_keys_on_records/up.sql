-- A keyed op's idempotency key no longer gets a row of its own: it stays on the record row the
-- op wrote (`idem_key`, and now `idem_op`, the op's kind), found through the index below, and
-- the result is rebuilt from that row. Only when the row changes does the key move to
-- `sync_idempotency`, with its full result. Rows stored there before this migration (full
-- results, or lazy ones naming `record_version`) keep working; their records carry no `idem_op`.
ALTER TABLE sync_records ADD COLUMN idem_op TEXT;

CREATE UNIQUE INDEX sync_records_idem_key ON sync_records (owner, idem_key)
    WHERE idem_key IS NOT NULL;

-- A build from before this migration looks keys up in `sync_idempotency` only, so it would
-- apply a replay of a key that lives on a record row a second time. Its writes start by locking
-- `sync_sequence.last_version`; renaming the column makes them fail (and roll back) until it is
-- replaced. Its reads keep working.
ALTER TABLE sync_sequence RENAME COLUMN last_version TO head_version;
