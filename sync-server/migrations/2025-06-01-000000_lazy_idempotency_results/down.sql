-- Keys whose result still lives in the record row keep an empty result: a build without this
-- migration answers a replay of such a key with an error rather than applying the op again.
ALTER TABLE sync_records DROP COLUMN idem_key;
ALTER TABLE sync_idempotency DROP COLUMN record_version;
