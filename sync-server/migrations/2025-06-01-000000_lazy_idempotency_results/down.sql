-- A build without this migration reads every key's full result from `result`, so the results
-- still rebuilt from record rows are stored first, byte for byte as the server writes them
-- (`RawResult::write_json` around `write_record_json`). The SQL is the same on SQLite and
-- Postgres: the id is quoted as serde_json quotes a string, by `replace` calls whose second
-- argument is the control character itself (written raw, as neither backend shares an escape
-- syntax with the other). The updated_at text never needs escaping; data is stored compact.
UPDATE sync_idempotency
SET result = (
    SELECT '{"status":"applied","version":' || CAST(r.version AS TEXT)
        || ',"record":{"id":' || '"' || replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(r.id, '\', '\\'), '"', '\"'), '', '\u0001'), '', '\u0002'), '', '\u0003'), '', '\u0004'), '', '\u0005'), '', '\u0006'), '', '\u0007'), '', '\b'), '	', '\t'), '
', '\n'), '', '\u000b'), '', '\f'), '', '\r'), '', '\u000e'), '', '\u000f'), '', '\u0010'), '', '\u0011'), '', '\u0012'), '', '\u0013'), '', '\u0014'), '', '\u0015'), '', '\u0016'), '', '\u0017'), '', '\u0018'), '', '\u0019'), '', '\u001a'), '', '\u001b'), '', '\u001c'), '', '\u001d'), '', '\u001e'), '', '\u001f') || '"'
        || ',"version":' || CAST(r.version AS TEXT)
        || ',"updated_at":"' || r.updated_at || '"'
        || CASE WHEN r.deleted THEN ',"deleted":true' ELSE '' END
        || CASE WHEN length(r.data) > 2 THEN ',' || substr(r.data, 2, length(r.data) - 2) ELSE '' END
        || '}}'
    FROM sync_records r
    WHERE r.owner = sync_idempotency.owner AND r.collection = sync_idempotency.collection
       AND r.id = sync_idempotency.record_id AND r.version = sync_idempotency.record_version),
    record_version = NULL
WHERE record_version IS NOT NULL AND EXISTS (
    SELECT 1 FROM sync_records r
    WHERE r.owner = sync_idempotency.owner AND r.collection = sync_idempotency.collection
       AND r.id = sync_idempotency.record_id AND r.version = sync_idempotency.record_version);

ALTER TABLE sync_records DROP COLUMN idem_key;
ALTER TABLE sync_idempotency DROP COLUMN record_version;
