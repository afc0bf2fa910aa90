-- The status counts of the outbox and the quarantine, kept in one row so that reading them
-- costs the same however many ops are queued. Triggers update the row in the transaction of
-- every change to `_sync_outbox` and `_sync_quarantine`, whichever statement makes it.
-- `pending` counts pending and in-flight ops, `failed` failed ops, `quarantined` every model's
-- quarantined records. The rows already there are counted once, here.
CREATE TABLE _sync_outbox_counts (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pending BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    quarantined BIGINT NOT NULL
);

INSERT INTO _sync_outbox_counts (id, pending, failed, quarantined) VALUES (
    1,
    (SELECT COUNT(*) FROM _sync_outbox WHERE state <> 'failed'),
    (SELECT COUNT(*) FROM _sync_outbox WHERE state = 'failed'),
    (SELECT COUNT(*) FROM _sync_quarantine)
);

CREATE TRIGGER _sync_outbox_counts_insert AFTER INSERT ON _sync_outbox
BEGIN
    UPDATE _sync_outbox_counts
    SET pending = pending + (NEW.state <> 'failed'), failed = failed + (NEW.state = 'failed')
    WHERE id = 1;
END;

CREATE TRIGGER _sync_outbox_counts_delete AFTER DELETE ON _sync_outbox
BEGIN
    UPDATE _sync_outbox_counts
    SET pending = pending - (OLD.state <> 'failed'), failed = failed - (OLD.state = 'failed')
    WHERE id = 1;
END;

-- Only a move into or out of `failed` changes the counts (pending <-> inflight does not).
CREATE TRIGGER _sync_outbox_counts_state AFTER UPDATE OF state ON _sync_outbox
WHEN (OLD.state = 'failed') <> (NEW.state = 'failed')
BEGIN
    UPDATE _sync_outbox_counts
    SET pending = pending + (OLD.state = 'failed') - (NEW.state = 'failed'),
        failed = failed + (NEW.state = 'failed') - (OLD.state = 'failed')
    WHERE id = 1;
END;

-- An upsert that updates an existing quarantined record fires neither of these.
CREATE TRIGGER _sync_quarantine_counts_insert AFTER INSERT ON _sync_quarantine
BEGIN
    UPDATE _sync_outbox_counts SET quarantined = quarantined + 1 WHERE id = 1;
END;

CREATE TRIGGER _sync_quarantine_counts_delete AFTER DELETE ON _sync_quarantine
BEGIN
    UPDATE _sync_outbox_counts SET quarantined = quarantined - 1 WHERE id = 1;
END;

-- Guarded: a store may already have a later migration (6) applied when this one runs.
UPDATE _sync_schema_version SET version = 5 WHERE id = 1 AND version < 5;
