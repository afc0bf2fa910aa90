//! The write path shared by both backends: load what a batch touches, plan it
//! ([`Planner`]), write the plan, all in one transaction under the version lock
//! (ARCHITECTURE.md, "Storage and versions"). Each backend implements [`WriteConn`], the few
//! statements that differ (how the lock is taken, how lists of ids are bound, how rows are
//! inserted, the Postgres NOTIFY).

use std::collections::{HashMap, HashSet};

use super::planner::{Plan, Planner, UsageDelta, WriteSettings};
use super::rows::{IdemRow, RawResult, RecordRow, WriteOp};
use super::NotifyTarget;
use crate::error::{Error, Result};
use crate::events::RawEvent;
use crate::protocol::{OpKind, OpStatus};

/// The `updated_at` of rows written now: RFC 3339, milliseconds, UTC.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Ids per `IN (...)` list.
const IDS_PER_SELECT: usize = 1000;

/// What a committed write produced.
#[derive(Debug)]
pub(crate) struct WriteOutcome {
    /// One result per op, in order.
    pub(crate) results: Vec<RawResult>,
    /// Change events of the applied ops, in version order; publish only after commit.
    pub(crate) events: Vec<RawEvent>,
}

/// The statements of the write path that each backend writes its own way.
pub(super) trait WriteConn: Sized {
    /// Runs `f` in a transaction that holds the version lock from its start; `f` gets the
    /// current head version.
    fn write_transaction<T>(&mut self, f: impl FnOnce(&mut Self, i64) -> Result<T>) -> Result<T>;
    /// Runs `f` in a savepoint of the current transaction, rolled back if `f` fails.
    fn savepoint<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T>;
    /// The rows of `ids` in one collection of `owner`.
    fn load_records(
        &mut self,
        owner: &str,
        collection: &str,
        ids: &[&str],
    ) -> Result<Vec<RecordRow>>;
    /// The `sync_idempotency` rows among `keys`.
    fn load_keys(&mut self, owner: &str, keys: &[&str]) -> Result<Vec<IdemRow>>;
    /// The record rows of `owner` that hold one of `keys`.
    fn load_held_keys(&mut self, owner: &str, keys: &[&str]) -> Result<Vec<RecordRow>>;
    /// Deletes the rows of `ids` in one collection of `owner`.
    fn delete_records(&mut self, owner: &str, collection: &str, ids: &[&str]) -> Result<()>;
    /// Inserts record rows.
    fn insert_records(&mut self, rows: Vec<RecordRow>) -> Result<()>;
    /// Inserts `sync_idempotency` rows.
    fn insert_keys(&mut self, rows: Vec<IdemRow>) -> Result<()>;
    /// Stores the full result of a lazy key row that names `version`; returns the rows changed.
    fn store_key_result(
        &mut self,
        owner: &str,
        key: &str,
        version: i64,
        result: &str,
    ) -> Result<usize>;
    /// Sets the head of the version sequence.
    fn set_head_version(&mut self, version: i64) -> Result<()>;
    /// Bytes of record data `owner` stores (the sum of its `sync_usage` rows).
    fn used_bytes(&mut self, owner: &str) -> Result<i64>;
    /// Adds `deltas` to `owner`'s `sync_usage` rows, creating those that do not exist.
    fn add_usage(&mut self, owner: &str, deltas: &[UsageDelta]) -> Result<()>;
    /// Last step before commit (Postgres: queue the NOTIFY of `events`).
    fn before_commit(&mut self, events: &[RawEvent], notify: Option<&NotifyTarget>) -> Result<()>;
}

pub(super) fn write<C: WriteConn>(
    conn: &mut C,
    owner: &str,
    ops: &[WriteOp],
    settings: WriteSettings,
    notify: Option<&NotifyTarget>,
) -> Result<WriteOutcome> {
    conn.write_transaction(|conn, current_version| {
        // Read under the version lock, so concurrent batches of one user cannot both pass the
        // quota with what only one of them fits in.
        let used_bytes = match settings.quota {
            Some(_) => conn.used_bytes(owner)?,
            None => 0,
        };
        if ops.iter().all(|op| op.kind == OpKind::Create)
            && load_table_keys(conn, owner, ops)?.is_empty()
        {
            if let Some(outcome) = write_fresh_creates(
                conn,
                owner,
                ops,
                current_version,
                settings,
                used_bytes,
                notify,
            )? {
                return Ok(outcome);
            }
        }
        let stored = load_stored_keys(conn, owner, ops)?;

        // The ops' records, and those that stored keys rebuild their results from (a replayed
        // create without id names a record the op does not).
        let slots = ops
            .iter()
            .map(|op| (op.collection.as_str(), op.id.as_str()))
            .chain(
                stored
                    .iter()
                    .filter(|key| key.record_version.is_some())
                    .map(|key| (key.collection.as_str(), key.record_id.as_str())),
            );
        let mut loaded = Vec::new();
        for (collection, ids) in ids_by_collection(slots) {
            for chunk in ids.chunks(IDS_PER_SELECT) {
                loaded.extend(conn.load_records(owner, collection, chunk)?);
            }
        }

        let existed: HashSet<(String, String)> = loaded
            .iter()
            .map(|row| (row.collection.clone(), row.id.clone()))
            .collect();
        let mut planner = Planner::new(owner, current_version, now(), loaded, stored, settings)
            .with_used_bytes(used_bytes);
        let results = ops
            .iter()
            .map(|op| planner.apply(op))
            .collect::<Result<Vec<_>>>()?;
        let mut plan = planner.finish();

        // Replacing changed rows by delete + multi-row insert keeps a batch to a few statements
        // on both backends.
        let mut replaced: HashMap<&str, Vec<&str>> = HashMap::new();
        for row in &plan.rows {
            if existed.contains(&(row.collection.clone(), row.id.clone())) {
                replaced
                    .entry(row.collection.as_str())
                    .or_default()
                    .push(row.id.as_str());
            }
        }
        for (collection, ids) in replaced {
            for chunk in ids.chunks(IDS_PER_SELECT) {
                conn.delete_records(owner, collection, chunk)?;
            }
        }
        conn.insert_records(std::mem::take(&mut plan.rows))?;
        finish_write(conn, owner, current_version, plan, results, notify)
    })
}

/// The rows of `sync_idempotency` among the ops' keys.
fn load_table_keys<C: WriteConn>(
    conn: &mut C,
    owner: &str,
    ops: &[WriteOp],
) -> Result<Vec<IdemRow>> {
    let keys: Vec<&str> = ops.iter().filter_map(|op| op.key.as_deref()).collect();
    let mut stored = Vec::new();
    for chunk in keys.chunks(IDS_PER_SELECT) {
        stored.extend(conn.load_keys(owner, chunk)?);
    }
    Ok(stored)
}

/// The stored idempotency keys among the ops' keys: rows of `sync_idempotency`, and keys that
/// live on the record row their op wrote.
fn load_stored_keys<C: WriteConn>(
    conn: &mut C,
    owner: &str,
    ops: &[WriteOp],
) -> Result<Vec<IdemRow>> {
    let keys: Vec<&str> = ops.iter().filter_map(|op| op.key.as_deref()).collect();
    let mut stored = Vec::new();
    for chunk in keys.chunks(IDS_PER_SELECT) {
        stored.extend(conn.load_keys(owner, chunk)?);
        let in_table: HashSet<&str> = stored.iter().map(|k| k.idem_key.as_str()).collect();
        let held: Vec<IdemRow> = conn
            .load_held_keys(owner, chunk)?
            .iter()
            .filter_map(RecordRow::held_key)
            .filter(|key| !in_table.contains(key.idem_key.as_str()))
            .collect();
        stored.extend(held);
    }
    Ok(stored)
}

/// A batch of creates none of whose keys has a `sync_idempotency` row, the common push of new
/// records: planned as if none of the records existed and no key was held by a record, and
/// inserted without reading either first, since the insert checks both unique indexes anyway
/// (the primary key, and the key held by a record row). If a record does exist (or is a
/// tombstone) or a key is held, the insert fails on that index and is rolled back to its
/// savepoint; a plan that did not apply every op (an id twice) is not inserted. `None` then
/// sends the batch the usual way, which reads records and keys and answers each op.
fn write_fresh_creates<C: WriteConn>(
    conn: &mut C,
    owner: &str,
    ops: &[WriteOp],
    current_version: i64,
    settings: WriteSettings,
    used_bytes: i64,
    notify: Option<&NotifyTarget>,
) -> Result<Option<WriteOutcome>> {
    let mut planner = Planner::new(
        owner,
        current_version,
        now(),
        Vec::new(),
        Vec::new(),
        settings,
    )
    .with_used_bytes(used_bytes);
    let results = ops
        .iter()
        .map(|op| planner.apply(op))
        .collect::<Result<Vec<_>>>()?;
    if results.iter().any(|r| r.status != OpStatus::Applied) {
        return Ok(None);
    }
    let mut plan = planner.finish();
    let rows = std::mem::take(&mut plan.rows);
    match conn.savepoint(|conn| conn.insert_records(rows)) {
        Ok(()) => finish_write(conn, owner, current_version, plan, results, notify).map(Some),
        Err(Error::Database(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ))) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Writes what a planned batch adds besides its record rows, and queues its events.
fn finish_write<C: WriteConn>(
    conn: &mut C,
    owner: &str,
    current_version: i64,
    plan: Plan,
    results: Vec<RawResult>,
    notify: Option<&NotifyTarget>,
) -> Result<WriteOutcome> {
    conn.insert_keys(plan.new_keys)?;
    for done in plan.materialized {
        if done.held {
            conn.insert_keys(vec![done.row])?;
            continue;
        }
        let updated =
            conn.store_key_result(owner, &done.row.idem_key, done.version, &done.row.result)?;
        if updated == 0 {
            // The record names a key it does not hold and no row stores: changing the record
            // would lose the key's first result for good.
            return Err(Error::Corrupt(format!(
                "record {}/{} names idempotency key {:?} (version {}), which has no stored row; \
                 the record cannot change until the key's row is restored or the record's \
                 idem_key is cleared",
                done.row.collection, done.row.record_id, done.row.idem_key, done.version
            )));
        }
    }
    if plan.last_version != current_version {
        conn.set_head_version(plan.last_version)?;
    }
    if !plan.usage.is_empty() {
        conn.add_usage(owner, &plan.usage)?;
    }
    conn.before_commit(&plan.events, notify)?;
    Ok(WriteOutcome {
        results,
        events: plan.events,
    })
}

/// The distinct ids of `slots` (collection, id), by collection.
fn ids_by_collection<'a>(
    slots: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> HashMap<&'a str, Vec<&'a str>> {
    let mut by: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut seen = HashSet::new();
    for (collection, id) in slots {
        if seen.insert((collection, id)) {
            by.entry(collection).or_default().push(id);
        }
    }
    by
}
