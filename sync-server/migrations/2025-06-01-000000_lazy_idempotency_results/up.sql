-- An idempotency key's result used to hold a full copy of the record it returned, which doubled
-- the bytes every keyed write stored. Now, while the record is still at the version the keyed op
-- wrote, the result is left empty and rebuilt from the record row (`record_version` names that
-- version); the writer that next changes the row first stores the full result (and clears
-- `record_version`), so a replay still returns exactly the first response. Rows written before
-- this migration keep their full results and a NULL `record_version`.
ALTER TABLE sync_idempotency ADD COLUMN record_version BIGINT;

-- The idempotency key of the op that wrote this version of the record, if it had one: the key
-- whose result must be stored in full before the row changes.
ALTER TABLE sync_records ADD COLUMN idem_key TEXT;
