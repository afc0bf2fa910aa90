-- The status counts of the outbox and the quarantine, kept in one row so that reading them
-- costs the same however many ops are queued. Statement-level triggers update the row in the
-- transaction of every change to `_sync_outbox` and `_sync_quarantine` (once per statement,
-- from its transition tables). `pending` counts pending and in-flight ops, `failed` failed
-- ops, `quarantined` every model's quarantined records. The rows already there are counted
-- once, here. Writers of a store already take its advisory lock, so the row adds no waits.
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

-- Applies the ops a statement inserted, deleted or updated (its transition tables).
CREATE FUNCTION _sync_outbox_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d_pending BIGINT;
    d_failed BIGINT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT COUNT(*) FILTER (WHERE state <> 'failed'), COUNT(*) FILTER (WHERE state = 'failed')
        INTO d_pending, d_failed FROM _sync_counts_new;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT -COUNT(*) FILTER (WHERE state <> 'failed'), -COUNT(*) FILTER (WHERE state = 'failed')
        INTO d_pending, d_failed FROM _sync_counts_old;
    ELSE
        -- An update moves ops between the counts; only moves into or out of `failed` count.
        SELECT (SELECT COUNT(*) FROM _sync_counts_new WHERE state = 'failed')
             - (SELECT COUNT(*) FROM _sync_counts_old WHERE state = 'failed')
        INTO d_failed;
        d_pending := -d_failed;
    END IF;
    IF d_pending <> 0 OR d_failed <> 0 THEN
        UPDATE _sync_outbox_counts
        SET pending = pending + d_pending, failed = failed + d_failed
        WHERE id = 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER _sync_outbox_counts_insert AFTER INSERT ON _sync_outbox
    REFERENCING NEW TABLE AS _sync_counts_new
    FOR EACH STATEMENT EXECUTE FUNCTION _sync_outbox_counts_add();
CREATE TRIGGER _sync_outbox_counts_delete AFTER DELETE ON _sync_outbox
    REFERENCING OLD TABLE AS _sync_counts_old
    FOR EACH STATEMENT EXECUTE FUNCTION _sync_outbox_counts_add();
CREATE TRIGGER _sync_outbox_counts_update AFTER UPDATE ON _sync_outbox
    REFERENCING OLD TABLE AS _sync_counts_old NEW TABLE AS _sync_counts_new
    FOR EACH STATEMENT EXECUTE FUNCTION _sync_outbox_counts_add();

CREATE FUNCTION _sync_quarantine_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d BIGINT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT COUNT(*) INTO d FROM _sync_counts_new;
    ELSE
        SELECT -COUNT(*) INTO d FROM _sync_counts_old;
    END IF;
    IF d <> 0 THEN
        UPDATE _sync_outbox_counts SET quarantined = quarantined + d WHERE id = 1;
    END IF;
    RETURN NULL;
END
$$;

-- An upsert that updates an existing quarantined record adds nothing to the insert's table.
CREATE TRIGGER _sync_quarantine_counts_insert AFTER INSERT ON _sync_quarantine
    REFERENCING NEW TABLE AS _sync_counts_new
    FOR EACH STATEMENT EXECUTE FUNCTION _sync_quarantine_counts_add();
CREATE TRIGGER _sync_quarantine_counts_delete AFTER DELETE ON _sync_quarantine
    REFERENCING OLD TABLE AS _sync_counts_old
    FOR EACH STATEMENT EXECUTE FUNCTION _sync_quarantine_counts_add();

-- Guarded: a store may already have a later migration (6) applied when this one runs.
UPDATE _sync_schema_version SET version = 5 WHERE id = 1 AND version < 5;
