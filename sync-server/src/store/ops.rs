// Statements shared by the SQLite and Postgres modules.
//
// This file is `include!`d by `sqlite.rs` and `postgres.rs`, so the same code is compiled
// against each concrete connection type (Diesel's generic bounds across backends would drown
// the logic). The including module defines `Conn`, `Db`, `write_transaction`, `field_equals`
// `load_records`, `load_keys`, `load_held_keys`, `insert_records`, `insert_keys` and
// `before_commit`.

use std::collections::{HashMap, HashSet};

use super::schema::{sync_idempotency as idem, sync_records as rec, sync_sequence as seq};
use super::{
    ids_by_collection, Filter, IdemRow, NotifyTarget, Plan, Planner, PulledRow, RawResult,
    RecordRow, WriteOp, WriteOutcome,
};
use crate::protocol::{OpKind, OpStatus};

/// Ids per `IN (...)` list.
const IDS_PER_SELECT: usize = 1000;

pub(super) fn get(
    conn: &mut Conn,
    owner: &str,
    collection: &str,
    id: &str,
) -> Result<Option<RecordRow>> {
    Ok(rec::table
        .filter(rec::owner.eq(owner))
        .filter(rec::collection.eq(collection))
        .filter(rec::id.eq(id))
        .select(RecordRow::as_select())
        .first(conn)
        .optional()?)
}

pub(super) fn pull(
    conn: &mut Conn,
    owner: &str,
    collection: &str,
    since: i64,
    limit: i64,
    offset: i64,
    filters: &[Filter],
) -> Result<Vec<PulledRow>> {
    // `owner || ''` is the expression of the pull index (see the migration).
    let mut query = rec::table
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("(owner || '') = ")
                .bind::<diesel::sql_types::Text, _>(owner.to_owned()),
        )
        .filter(rec::collection.eq(collection))
        .filter(rec::version.gt(since))
        .order(rec::version.asc())
        .limit(limit)
        .offset(offset)
        .select((
            rec::id,
            rec::data,
            rec::version,
            rec::updated_at,
            rec::deleted,
        ))
        .into_boxed::<Db>();
    for filter in filters {
        query = query.filter(field_equals(filter));
    }
    Ok(query.load(conn)?)
}

pub(super) fn write(
    conn: &mut Conn,
    owner: &str,
    ops: &[WriteOp],
    want_events: bool,
    notify: Option<&NotifyTarget>,
) -> Result<WriteOutcome> {
    write_transaction(conn, |conn, current_version| {
        if ops.iter().all(|op| op.kind == OpKind::Create)
            && load_table_keys(conn, owner, ops)?.is_empty()
        {
            if let Some(outcome) =
                write_fresh_creates(conn, owner, ops, current_version, want_events, notify)?
            {
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
                loaded.extend(load_records(conn, owner, collection, chunk)?);
            }
        }

        let existed: HashSet<(String, String)> = loaded
            .iter()
            .map(|row| (row.collection.clone(), row.id.clone()))
            .collect();
        let mut planner = Planner::new(owner, current_version, loaded, stored, want_events);
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
                diesel::delete(
                    rec::table
                        .filter(rec::owner.eq(owner))
                        .filter(rec::collection.eq(collection))
                        .filter(rec::id.eq_any(chunk.to_vec())),
                )
                .execute(conn)?;
            }
        }
        insert_records(conn, std::mem::take(&mut plan.rows))?;
        finish_write(conn, owner, current_version, plan, results, notify)
    })
}

/// The rows of `sync_idempotency` among the ops' keys.
fn load_table_keys(conn: &mut Conn, owner: &str, ops: &[WriteOp]) -> Result<Vec<IdemRow>> {
    let keys: Vec<&str> = ops.iter().filter_map(|op| op.key.as_deref()).collect();
    let mut stored = Vec::new();
    for chunk in keys.chunks(IDS_PER_SELECT) {
        stored.extend(load_keys(conn, owner, chunk)?);
    }
    Ok(stored)
}

/// The stored idempotency keys among the ops' keys: rows of `sync_idempotency`, and keys that
/// live on the record row their op wrote.
fn load_stored_keys(conn: &mut Conn, owner: &str, ops: &[WriteOp]) -> Result<Vec<IdemRow>> {
    let keys: Vec<&str> = ops.iter().filter_map(|op| op.key.as_deref()).collect();
    let mut stored = Vec::new();
    for chunk in keys.chunks(IDS_PER_SELECT) {
        stored.extend(load_keys(conn, owner, chunk)?);
        let in_table: HashSet<&str> = stored.iter().map(|k| k.idem_key.as_str()).collect();
        let held: Vec<IdemRow> = load_held_keys(conn, owner, chunk)?
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
fn write_fresh_creates(
    conn: &mut Conn,
    owner: &str,
    ops: &[WriteOp],
    current_version: i64,
    want_events: bool,
    notify: Option<&NotifyTarget>,
) -> Result<Option<WriteOutcome>> {
    let mut planner = Planner::new(owner, current_version, Vec::new(), Vec::new(), want_events);
    let results = ops
        .iter()
        .map(|op| planner.apply(op))
        .collect::<Result<Vec<_>>>()?;
    if results.iter().any(|r| r.status != OpStatus::Applied) {
        return Ok(None);
    }
    let mut plan = planner.finish();
    let rows = std::mem::take(&mut plan.rows);
    // A nested transaction is a savepoint.
    match conn.transaction(|conn| insert_records(conn, rows)) {
        Ok(()) => finish_write(conn, owner, current_version, plan, results, notify).map(Some),
        Err(Error::Database(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ))) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Writes what a planned batch adds besides its record rows, and queues its events.
fn finish_write(
    conn: &mut Conn,
    owner: &str,
    current_version: i64,
    plan: Plan,
    results: Vec<RawResult>,
    notify: Option<&NotifyTarget>,
) -> Result<WriteOutcome> {
    insert_keys(conn, plan.new_keys)?;
    for done in plan.materialized {
        if done.held {
            diesel::insert_into(idem::table)
                .values(done.row)
                .execute(conn)?;
            continue;
        }
        let updated = diesel::update(
            idem::table
                .filter(idem::owner.eq(owner))
                .filter(idem::idem_key.eq(&done.row.idem_key))
                .filter(idem::record_version.eq(done.version)),
        )
        .set((
            idem::result.eq(&done.row.result),
            idem::record_version.eq(None::<i64>),
        ))
        .execute(conn)?;
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
        diesel::update(seq::table.filter(seq::id.eq(1)))
            .set(seq::head_version.eq(plan.last_version))
            .execute(conn)?;
    }
    before_commit(conn, &plan.events, notify)?;
    Ok(WriteOutcome {
        results,
        events: plan.events,
    })
}
