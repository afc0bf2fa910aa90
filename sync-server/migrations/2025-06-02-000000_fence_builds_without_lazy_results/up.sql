-- A build from before `lazy_idempotency_results` still running against this database (a rolling
-- upgrade of several instances on one Postgres) would rewrite record rows without storing the
-- results rebuilt from them first, and those keys could never be replayed again. Every write
-- transaction of such a build starts by locking `sync_sequence.value`; renaming the column makes
-- its writes fail (and roll back) instead, until it is replaced. Its reads keep working.
ALTER TABLE sync_sequence RENAME COLUMN value TO last_version;
