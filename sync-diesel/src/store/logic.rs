//! The store's operations, written once against [`Db`] for both backends.
//! Each function runs inside the transaction its caller opened.

use chrono::{DateTime, Utc};
use sync_core::store::Filter;
use sync_core::store::StoreError;
use sync_core::store::{
    Ack, ClaimedOp, DeleteOutcome, JsonObject, KnownVersions, LocalWrite, OpKind, OpState,
    OutboxCounts, OutboxOp, PendingConflict, QuarantinedRecord, RecordState, RemoteApplied,
    RemoteRecord, Resolution, SaveOutcome, StoreQuery, StoredRecord,
};
use sync_schema::ModelSchema;

use super::outbox::{
    coalesce, delete_op, insert_op, new_key, new_op, op_by_seq, ops_of, update_op, values_of,
    Coalesced, Edit, OpRow, OP_COLUMNS,
};
use super::query::{push_order_and_page, push_where};
use super::records::{
    all_fields, decode_record, delete_row, full_params, id_param, insert_row, insert_rows,
    load_meta, load_row, load_synced, partial_params, select_list, update_row, with_fields,
    MetaSet, NewMeta,
};
use crate::ddl::{ident, Backend};
use crate::sql::{Db, Sql, LARGEST_SEQ};
use crate::value::{json_to_param, raw_to_time, time_param, Param};

/// Local times are kept to the millisecond.
pub(crate) fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

fn unknown(seq: i64, detail: &str) -> StoreError {
    StoreError::UnknownOp {
        seq,
        detail: detail.to_owned(),
    }
}

/// Where the record's queued change goes: folded into its pending op (the
/// last op, if pending), else a new op after the in-flight or failed ones.
/// Returns the op's seq, or `None` when the change cancelled the pending op.
#[allow(clippy::too_many_arguments)]
fn queue_edit(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
    row_version: i64,
    ops: &[OpRow],
    edit: Edit,
    user_id: Option<&str>,
    priority: i32,
    now: DateTime<Utc>,
) -> Result<Option<i64>, StoreError> {
    // Only an op that certainly never left is changed by an edit: once an op may have reached
    // the remote, its content, key and base stay as sent until an answer settles it.
    if let Some(last) = ops
        .last()
        .filter(|o| o.op.state == OpState::Pending && !o.op.sent)
    {
        let all = all_fields(schema);
        return match coalesce(
            last.op.op,
            last.op.sent,
            &last.op.changed_fields,
            &last.op.base_values,
            &edit,
            &all,
        ) {
            Coalesced::Vanish => {
                delete_op(db, last.op.seq)?;
                Ok(None)
            }
            Coalesced::Op {
                kind,
                changed,
                base_values,
            } => {
                let mut row = last.clone();
                set_content(&mut row.op, kind, changed, base_values);
                row.op.priority = row.op.priority.max(priority);
                if let Some(u) = user_id {
                    row.op.user_id = Some(u.to_owned());
                }
                update_op(db, &row)?;
                Ok(Some(row.op.seq))
            }
        };
    }
    let op = new_op(
        schema.model_type,
        id,
        user_id,
        edit.kind,
        edit.changed,
        edit.base_values,
        row_version,
        priority,
        now,
    );
    insert_op(db, &op).map(Some)
}

/// Rewrites what an op carries. A changed op gets a new idempotency key: the
/// old key may have reached the remote with the old content, and a replay of
/// it would return that old result instead of applying the new content.
fn set_content(op: &mut OutboxOp, kind: OpKind, changed: Vec<String>, base: JsonObject) {
    op.op = kind;
    match kind {
        OpKind::Create => {
            op.changed_fields = Vec::new();
            op.base_values = JsonObject::new();
        }
        OpKind::Delete => {
            op.changed_fields = Vec::new();
            op.base_values = base;
        }
        OpKind::Update => {
            op.changed_fields = changed;
            op.base_values = base;
        }
    }
    op.idempotency_key = new_key();
}

pub(crate) fn save(
    db: &mut dyn Db,
    w: &LocalWrite<'_>,
    now: DateTime<Utc>,
) -> Result<SaveOutcome, StoreError> {
    let schema = w.schema;
    let backend = db.backend();
    let mut params = full_params(schema, w.id, w.data, backend)?;
    let user = w.user_id.map(str::to_owned);
    if w.enqueue {
        // The common case, a new record, costs one insert of the row and one of the op.
        let meta = NewMeta {
            version: 0,
            now,
            synced: false,
            deleted: false,
            user_id: user.clone(),
        };
        if insert_row(db, schema, params, &meta, true)? == 1 {
            let op = new_op(
                schema.model_type,
                w.id,
                w.user_id,
                OpKind::Create,
                Vec::new(),
                JsonObject::new(),
                0,
                w.priority,
                now,
            );
            let seq = insert_op(db, &op)?;
            return Ok(SaveOutcome {
                created: true,
                changed_fields: all_fields(schema),
                op_seq: Some(seq),
            });
        }
        // The record exists: the slow path needs the parameters again.
        params = full_params(schema, w.id, w.data, backend)?;
    }
    let Some(existing) = load_row(db, schema, w.id)? else {
        let meta = NewMeta {
            version: w.version.unwrap_or(0),
            now,
            synced: true,
            deleted: false,
            user_id: user,
        };
        insert_row(db, schema, params, &meta, false)?;
        return Ok(SaveOutcome {
            created: true,
            changed_fields: all_fields(schema),
            op_seq: None,
        });
    };
    let ops = ops_of(db, schema.model_type, w.id)?;
    let was_deleted = existing.meta.deleted;
    let changed: Vec<String> = if was_deleted {
        all_fields(schema)
    } else {
        let old = full_params(schema, w.id, &existing.data, backend)?;
        schema
            .fields
            .iter()
            .zip(params.iter().zip(old.iter()))
            .filter(|(_, (new, old))| new != old)
            .map(|(f, _)| f.wire_name.to_owned())
            .collect()
    };
    if !w.enqueue {
        let meta = MetaSet {
            version: w.version,
            updated_at: Some(now),
            synced: Some(ops.is_empty()),
            deleted: Some(false),
            user_id: user,
            sync_error: ops.is_empty().then_some(None),
            sync_attempts: ops.is_empty().then_some(0),
        };
        update_row(db, schema, w.id, with_fields(schema, params), &meta)?;
        return Ok(SaveOutcome {
            created: was_deleted,
            changed_fields: changed,
            op_seq: None,
        });
    }
    if changed.is_empty() {
        return Ok(SaveOutcome {
            created: false,
            changed_fields: changed,
            op_seq: None,
        });
    }
    let edit = Edit {
        kind: if was_deleted {
            OpKind::Create
        } else {
            OpKind::Update
        },
        base_values: values_of(&existing.data, &changed),
        changed: changed.clone(),
    };
    let seq = queue_edit(
        db,
        schema,
        w.id,
        existing.meta.version,
        &ops,
        edit,
        w.user_id,
        w.priority,
        now,
    )?;
    let meta = MetaSet {
        updated_at: Some(now),
        synced: Some(false),
        deleted: Some(false),
        user_id: user,
        ..MetaSet::default()
    };
    update_row(db, schema, w.id, with_fields(schema, params), &meta)?;
    Ok(SaveOutcome {
        created: was_deleted,
        changed_fields: changed,
        op_seq: seq,
    })
}

pub(crate) fn delete(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
    user_id: Option<&str>,
    priority: i32,
    enqueue: bool,
    now: DateTime<Utc>,
) -> Result<DeleteOutcome, StoreError> {
    let Some((version, deleted)) = load_meta(db, schema, id)? else {
        return Ok(DeleteOutcome {
            existed: false,
            op_seq: None,
        });
    };
    let ops = ops_of(db, schema.model_type, id)?;
    if !enqueue {
        let mut inflight = false;
        for op in &ops {
            if op.op.state == OpState::Inflight {
                inflight = true;
            } else {
                delete_op(db, op.op.seq)?;
            }
        }
        if inflight {
            // The in-flight op keeps its row until it is acknowledged.
            let meta = MetaSet {
                updated_at: Some(now),
                deleted: Some(true),
                ..MetaSet::default()
            };
            update_row(db, schema, id, Vec::new(), &meta)?;
        } else {
            delete_row(db, schema, id)?;
        }
        return Ok(DeleteOutcome {
            existed: !deleted,
            op_seq: None,
        });
    }
    if deleted {
        return Ok(DeleteOutcome {
            existed: false,
            op_seq: ops
                .last()
                .filter(|o| o.op.op == OpKind::Delete)
                .map(|o| o.op.seq),
        });
    }
    // A remote without versions acknowledges with version 0: `_synced` tells those apart.
    let synced = version > 0 || load_synced(db, schema, id)?;
    if ops.is_empty() && !synced {
        // Never acknowledged by the remote and nothing queued: it only ever existed here.
        delete_row(db, schema, id)?;
        return Ok(DeleteOutcome {
            existed: true,
            op_seq: None,
        });
    }
    let seq = queue_edit(
        db,
        schema,
        id,
        version,
        &ops,
        Edit::delete(),
        user_id,
        priority,
        now,
    )?;
    if seq.is_none() && ops.len() == 1 {
        delete_row(db, schema, id)?;
    } else {
        let meta = MetaSet {
            updated_at: Some(now),
            synced: Some(false),
            deleted: Some(true),
            user_id: user_id.map(str::to_owned),
            ..MetaSet::default()
        };
        update_row(db, schema, id, Vec::new(), &meta)?;
    }
    Ok(DeleteOutcome {
        existed: true,
        op_seq: seq,
    })
}

pub(crate) fn get(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
) -> Result<Option<StoredRecord>, StoreError> {
    Ok(load_row(db, schema, id)?.filter(|r| !r.meta.deleted))
}

/// The SELECT of a query (also used for EXPLAIN).
pub(crate) fn query_sql(
    schema: &'static ModelSchema,
    query: &StoreQuery,
    backend: Backend,
) -> Result<Sql, StoreError> {
    let mut sql = Sql::new(format!(
        "SELECT {} FROM {}",
        select_list(schema),
        ident(schema.table)
    ));
    push_where(&mut sql, schema, query, backend)?;
    push_order_and_page(&mut sql, schema, query, backend);
    Ok(sql.uncached())
}

pub(crate) fn query(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    query: &StoreQuery,
) -> Result<Vec<StoredRecord>, StoreError> {
    let sql = query_sql(schema, query, db.backend())?;
    db.load(sql)?
        .into_iter()
        .map(|raws| decode_record(schema, raws))
        .collect()
}

pub(crate) fn count(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    query: &StoreQuery,
) -> Result<u64, StoreError> {
    let backend = db.backend();
    let mut sql = Sql::new(format!("SELECT COUNT(*) FROM {}", ident(schema.table)));
    push_where(&mut sql, schema, query, backend)?;
    let n = db
        .load(sql.uncached())?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .and_then(|r| r.as_i64())
        .unwrap_or(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Ops that are the oldest op of their record (later ones wait for it).
const FIRST_OF_RECORD: &str = " AND NOT EXISTS (SELECT 1 FROM _sync_outbox p \
     WHERE p.model_type = o.model_type AND p.record_id = o.record_id AND p.seq < o.seq)";

/// The condition of the partial index `_sync_outbox_ready` (bookkeeping migration 7): every op
/// but the pending ones of priority 0, so that a save at the default priority writes no page
/// of it. A query meant to read through the index repeats it word for word (SQLite uses a
/// partial index only for a WHERE clause that visibly implies the index's).
const READY_INDEXED: &str = "(o.state <> 'pending' OR o.priority <> 0)";

pub(crate) fn ready_ops(
    db: &mut dyn Db,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<OutboxOp>, StoreError> {
    let backend = db.backend();
    let cols = OP_COLUMNS
        .split(", ")
        .map(|c| format!("o.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    // By priority, highest first, then seq: the priorities above 0 from the index, then those
    // of priority 0 in seq order from the table (the rowid or primary key order), then the
    // priorities below 0 from the index.
    let parts = [
        format!(" AND {READY_INDEXED} AND o.priority > 0 ORDER BY o.priority DESC, o.seq ASC"),
        " AND o.priority = 0 ORDER BY o.seq ASC".to_owned(),
        format!(" AND {READY_INDEXED} AND o.priority < 0 ORDER BY o.priority DESC, o.seq ASC"),
    ];
    let mut out = Vec::new();
    for part in parts {
        let Some(left) = limit.checked_sub(out.len()).filter(|left| *left > 0) else {
            break;
        };
        let mut sql = Sql::new(format!(
            "SELECT {cols} FROM _sync_outbox o WHERE o.state = 'pending' \
             AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= "
        ));
        sql.bind(time_param(backend, Some(now)))
            .push(")")
            .push(FIRST_OF_RECORD)
            .push(&part)
            .push(" LIMIT ")
            .bind(Param::I64(Some(i64::try_from(left).unwrap_or(i64::MAX))));
        for row in db.load(sql)? {
            out.push(OpRow::decode(row)?.op);
        }
    }
    Ok(out)
}

pub(crate) fn next_retry_at(
    db: &mut dyn Db,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let backend = db.backend();
    let mut sql = Sql::new(
        "SELECT MIN(o.next_attempt_at) FROM _sync_outbox o WHERE o.state = 'pending' \
         AND o.next_attempt_at > ",
    );
    sql.bind(time_param(backend, Some(now)))
        .push(FIRST_OF_RECORD);
    let raw = db
        .load(sql)?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next());
    match raw {
        None => Ok(None),
        Some(raw) => raw_to_time(raw).map_err(StoreError::Database),
    }
}

pub(crate) fn mark_inflight(db: &mut dyn Db, seqs: &[i64]) -> Result<Vec<i64>, StoreError> {
    // Two statements per chunk of seqs instead of one per op: which are pending, then mark
    // those (the caller's write transaction keeps the pair atomic).
    let mut pending = std::collections::HashSet::with_capacity(seqs.len());
    for chunk in seqs.chunks(IN_CHUNK) {
        // Filtered on the state here, not in SQL: a `state = ...` condition lets the planner
        // walk the state index over every pending op instead of looking the seqs up.
        let mut sql = Sql::new("SELECT seq, state FROM _sync_outbox WHERE seq IN (");
        sql.bind_list(chunk.iter().map(|&seq| Param::I64(Some(seq))));
        sql.push(")");
        let found: Vec<i64> = db
            .load(sql)?
            .into_iter()
            .filter_map(|row| {
                let mut it = row.into_iter();
                let seq = it.next().and_then(|v| v.as_i64())?;
                let state = it.next().and_then(|v| v.into_text())?;
                (state == OpState::Pending.as_str()).then_some(seq)
            })
            .collect();
        if found.is_empty() {
            continue;
        }
        let mut sql = Sql::new("UPDATE _sync_outbox SET state = 'inflight' WHERE seq IN (");
        sql.bind_list(found.iter().map(|&seq| Param::I64(Some(seq))));
        sql.push(")");
        db.execute(sql)?;
        pending.extend(found);
    }
    // In the caller's order, each seq once.
    let mut marked = Vec::with_capacity(pending.len());
    for &seq in seqs {
        if pending.remove(&seq) {
            marked.push(seq);
        }
    }
    Ok(marked)
}

/// The ops among `seqs` that exist, by seq.
fn ops_by_seqs(
    db: &mut dyn Db,
    seqs: &[i64],
) -> Result<std::collections::HashMap<i64, OpRow>, StoreError> {
    let mut ops = std::collections::HashMap::with_capacity(seqs.len());
    for chunk in seqs.chunks(IN_CHUNK) {
        let mut sql = Sql::new(format!(
            "SELECT {OP_COLUMNS} FROM _sync_outbox WHERE seq IN ("
        ));
        sql.bind_list(chunk.iter().map(|&seq| Param::I64(Some(seq))));
        sql.push(")");
        for row in db.load(sql)? {
            let op = OpRow::decode(row)?;
            ops.insert(op.op.seq, op);
        }
    }
    Ok(ops)
}

pub(crate) fn claim_ops(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    seqs: &[i64],
) -> Result<Vec<ClaimedOp>, StoreError> {
    use std::collections::HashMap;
    // Only this model's pending ops, read once: the same transaction marks them.
    let mut ops = ops_by_seqs(db, seqs)?;
    ops.retain(|_, o| o.op.model_type == schema.model_type && o.op.state == OpState::Pending);
    let mut seen = std::collections::HashSet::with_capacity(ops.len());
    let marked: Vec<i64> = seqs
        .iter()
        .copied()
        .filter(|s| ops.contains_key(s) && seen.insert(*s))
        .collect();
    for chunk in marked.chunks(IN_CHUNK) {
        let mut sql = Sql::new("UPDATE _sync_outbox SET state = 'inflight' WHERE seq IN (");
        sql.bind_list(chunk.iter().map(|&seq| Param::I64(Some(seq))));
        sql.push(")");
        db.execute(sql)?;
    }
    let ids: Vec<serde_json::Value> = marked
        .iter()
        .filter_map(|seq| ops.get(seq))
        .map(|o| serde_json::Value::String(o.op.record_id.clone()))
        .collect();
    let mut rows: HashMap<String, StoredRecord> = HashMap::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let q = StoreQuery {
            filter: Some(Filter::InList {
                field: schema.id(),
                values: chunk.to_vec(),
            }),
            include_deleted: true,
            ..StoreQuery::default()
        };
        for record in query(db, schema, &q)? {
            rows.insert(record.id.clone(), record);
        }
    }
    Ok(marked
        .into_iter()
        .filter_map(|seq| ops.remove(&seq))
        .map(|mut row| {
            row.op.state = OpState::Inflight;
            let record = rows.get(&row.op.record_id).cloned();
            ClaimedOp { op: row.op, record }
        })
        .collect())
}

/// Looks up a model's schema by its model type.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<&'static ModelSchema>;

pub(crate) fn ack_op(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    seq: i64,
    version: i64,
    data: Option<&JsonObject>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let _ = now;
    let op = op_by_seq(db, seq)?.ok_or_else(|| unknown(seq, ""))?;
    check_ackable(schema, &op)?;
    let id = op.op.record_id.as_str();
    delete_op(db, seq)?;
    let rest = ops_of(db, schema.model_type, id)?;
    let Some((_, deleted)) = load_meta(db, schema, id)? else {
        return Ok(());
    };
    if rest.is_empty() {
        if op.op.op == OpKind::Delete || deleted {
            remove_deleted(db, schema, id, version)?;
            return Ok(());
        }
        let fields = match data {
            Some(d) => partial_params(schema, d, db.backend())?,
            None => Vec::new(),
        };
        update_row(db, schema, id, fields, &synced_meta(version))?;
        return supersede_tombstones(db, schema, &[(id, version)]);
    }
    rebase_behind(db, schema, id, version, rest)?;
    supersede_tombstones(db, schema, &[(id, version)])
}

/// Forgets the remembered tombstones of records that now have a row at a newer version (a
/// record re-created over its tombstone and acknowledged): the row's version guards against
/// stale copies from then on, and the store knows one version per record.
fn supersede_tombstones(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    rows: &[(&str, i64)],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = rows.iter().map(|(id, _)| id_key(schema, id)).collect();
    let tombstones = tombstones_of(db, schema.model_type, &keys)?;
    if tombstones.is_empty() {
        return Ok(());
    }
    for ((id, version), key) in rows.iter().zip(&keys) {
        if tombstones.get(key).is_some_and(|t| t < version) {
            forget_tombstone(db, schema, id)?;
        }
    }
    Ok(())
}

/// [`ack_op`] for a chunk of one model's ops in a few statements per chunk instead of five
/// per op: the ops, the ops left behind them and the rows' bookkeeping are read with one
/// query each, and rows with nothing left to send are marked synced with one UPDATE. The
/// effect is that of calling [`ack_op`] for each in order.
pub(crate) fn ack_ops(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    acks: &[Ack],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    use std::collections::{HashMap, HashSet};
    let seqs: Vec<i64> = acks.iter().map(|a| a.seq).collect();
    let ops = ops_by_seqs(db, &seqs)?;
    let mut ids = Vec::with_capacity(acks.len());
    let mut unique = HashSet::with_capacity(acks.len());
    for ack in acks {
        let op = ops.get(&ack.seq).ok_or_else(|| unknown(ack.seq, ""))?;
        check_ackable(schema, op)?;
        if !unique.insert(op.op.record_id.as_str()) {
            // A record acknowledged twice: the one-by-one path keeps the exact order.
            for ack in acks {
                ack_op(db, schema, ack.seq, ack.version, ack.data.as_ref(), now)?;
            }
            return Ok(());
        }
        ids.push(op.op.record_id.clone());
    }
    for chunk in seqs.chunks(IN_CHUNK) {
        let mut sql = Sql::new("DELETE FROM _sync_outbox WHERE seq IN (");
        sql.bind_list(chunk.iter().map(|&seq| Param::I64(Some(seq))));
        sql.push(")");
        db.execute(sql)?;
    }
    let mut rest: HashMap<String, Vec<OpRow>> = HashMap::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let mut sql = Sql::new(format!(
            "SELECT {OP_COLUMNS} FROM _sync_outbox WHERE model_type = "
        ));
        sql.bind(Param::text(schema.model_type))
            .push(" AND record_id IN (");
        sql.bind_list(chunk.iter().map(|id| Param::text(id.as_str())));
        sql.push(") ORDER BY seq");
        for row in db.load(sql)? {
            let op = OpRow::decode(row)?;
            rest.entry(op.op.record_id.clone()).or_default().push(op);
        }
    }
    let keys: Vec<String> = ids.iter().map(|id| id_key(schema, id)).collect();
    let metas = metas_of(db, schema, &keys)?;
    // Rows with nothing left to send and no data to write: (id, version).
    let mut settled: Vec<(&str, i64)> = Vec::new();
    // Rows that now have the acknowledged version.
    let mut versioned: Vec<(&str, i64)> = Vec::new();
    for ((ack, id), key) in acks.iter().zip(&ids).zip(&keys) {
        let Some(&(old_version, deleted)) = metas.get(key) else {
            continue;
        };
        let op = &ops[&ack.seq];
        if !(op.op.op == OpKind::Delete || deleted) {
            versioned.push((id, ack.version));
        }
        match rest.remove(id) {
            None if op.op.op == OpKind::Delete || deleted => {
                remove_deleted(db, schema, id, ack.version)?;
            }
            None => match &ack.data {
                Some(data) => {
                    let fields = partial_params(schema, data, db.backend())?;
                    update_row(db, schema, id, fields, &synced_meta(ack.version))?;
                }
                None => {
                    // `mark_synced` changes versions in bulk: count them here.
                    super::records::note_known(db, schema, id, old_version, deleted, -1);
                    super::records::note_known(db, schema, id, ack.version, deleted, 1);
                    settled.push((id, ack.version));
                }
            },
            Some(behind) => {
                rebase_behind(db, schema, id, ack.version, behind)?;
            }
        }
    }
    mark_synced(db, schema, &settled)?;
    supersede_tombstones(db, schema, &versioned)
}

/// An op may be acknowledged: it exists (checked by the caller), belongs to `schema`'s model
/// and has not failed.
fn check_ackable(schema: &'static ModelSchema, op: &OpRow) -> Result<(), StoreError> {
    if op.op.model_type != schema.model_type {
        return Err(unknown(
            op.op.seq,
            &format!(
                ": it belongs to model {}, not {}",
                op.op.model_type, schema.model_type
            ),
        ));
    }
    if op.op.state == OpState::Failed {
        return Err(unknown(
            op.op.seq,
            ": it has failed; retry it before acknowledging",
        ));
    }
    Ok(())
}

/// Bookkeeping of a row the remote now has exactly at `version`.
fn synced_meta(version: i64) -> MetaSet {
    MetaSet {
        version: Some(version),
        synced: Some(true),
        sync_error: Some(None),
        sync_attempts: Some(0),
        ..MetaSet::default()
    }
}

/// The row's version moves to `version` and the ops still queued for it are based on it.
fn rebase_behind(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
    version: i64,
    behind: Vec<OpRow>,
) -> Result<(), StoreError> {
    let meta = MetaSet {
        version: Some(version),
        ..MetaSet::default()
    };
    update_row(db, schema, id, Vec::new(), &meta)?;
    for mut next in behind {
        if next.op.state != OpState::Inflight && next.op.base_version != version {
            next.op.base_version = version;
            next.op.idempotency_key = new_key();
            update_op(db, &next)?;
        }
    }
    Ok(())
}

/// [`synced_meta`] on many rows, one UPDATE per chunk: the ids and versions come in as a
/// VALUES list joined on the primary key (a CASE over the ids would compare every row with
/// every id).
fn mark_synced(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    rows: &[(&str, i64)],
) -> Result<(), StoreError> {
    let backend = db.backend();
    let table = ident(schema.table);
    for chunk in rows.chunks(IN_CHUNK) {
        let mut sql = Sql::new(format!(
            "UPDATE {table} SET \"_version\" = v.column2, \"_synced\" = "
        ));
        sql.bind(Param::Bool(Some(true)))
            .push(", \"_sync_error\" = NULL, \"_sync_attempts\" = ")
            .bind(Param::I32(Some(0)))
            .push(" FROM (VALUES ");
        for (n, (row, version)) in chunk.iter().enumerate() {
            sql.push(if n == 0 { "(" } else { ", (" })
                .bind(id_param(schema, row, backend)?)
                .push(", ")
                .bind(Param::I64(Some(*version)))
                .push(")");
        }
        sql.push(&format!(
            ") AS v WHERE {table}.{} = v.column1",
            ident(schema.id().column)
        ));
        db.execute(sql)?;
    }
    Ok(())
}

pub(crate) fn fail_op(
    db: &mut dyn Db,
    seq: i64,
    error: &str,
    lookup: Lookup<'_>,
) -> Result<(), StoreError> {
    let mut op = op_by_seq(db, seq)?.ok_or_else(|| unknown(seq, ""))?;
    op.op.state = OpState::Failed;
    // The remote refused it, or it could not be sent: either way it stays counted as sent,
    // so that no later local edit assumes the remote never saw it.
    op.op.sent = true;
    op.op.attempts = op.op.attempts.saturating_add(1);
    op.op.last_error = Some(error.to_owned());
    update_op(db, &op)?;
    if let Some(schema) = lookup(&op.op.model_type) {
        let meta = MetaSet {
            sync_error: Some(Some(error.to_owned())),
            sync_attempts: Some(op.op.attempts),
            ..MetaSet::default()
        };
        update_row(db, schema, &op.op.record_id, Vec::new(), &meta)?;
    }
    Ok(())
}

/// Makes `op` (already changed by the caller) pending again, folding a newer
/// pending op of the same record into it so the record keeps one pending op.
fn make_pending(db: &mut dyn Db, op: OpRow) -> Result<(), StoreError> {
    // A sent op folds the same whatever the model's fields are.
    make_pending_with(db, op, &[]).map(|_| ())
}

/// [`make_pending`] with the model's wire field names, which folding an unsent op may need.
/// Returns `true` when the fold cancelled both ops (an unsent create, then a delete).
fn make_pending_with(db: &mut dyn Db, mut op: OpRow, all: &[String]) -> Result<bool, StoreError> {
    op.op.state = OpState::Pending;
    if op.op.sent {
        // Possibly applied remotely: frozen, a newer pending op stays behind it.
        update_op(db, &op)?;
        return Ok(false);
    }
    let others = ops_of(db, &op.op.model_type, &op.op.record_id)?;
    if let Some(newer) = others
        .iter()
        .find(|o| o.op.seq != op.op.seq && o.op.state == OpState::Pending && !o.op.sent)
    {
        let (older, younger) = if newer.op.seq > op.op.seq {
            (op.clone(), newer.clone())
        } else {
            (newer.clone(), op.clone())
        };
        let edit = Edit {
            kind: younger.op.op,
            changed: younger.op.changed_fields.clone(),
            base_values: younger.op.base_values.clone(),
        };
        let merged = coalesce(
            older.op.op,
            older.op.sent,
            &older.op.changed_fields,
            &older.op.base_values,
            &edit,
            all,
        );
        delete_op(db, younger.op.seq)?;
        let mut keep = op;
        keep.op.seq = older.op.seq;
        keep.op.base_version = older.op.base_version;
        keep.op.created_at = older.op.created_at;
        keep.op.sent = older.op.sent || younger.op.sent;
        keep.op.priority = older.op.priority.max(younger.op.priority);
        match merged {
            Coalesced::Op {
                kind,
                changed,
                base_values,
            } => set_content(&mut keep.op, kind, changed, base_values),
            Coalesced::Vanish => {
                delete_op(db, older.op.seq)?;
                return Ok(true);
            }
        }
        update_op(db, &keep)?;
        return Ok(false);
    }
    update_op(db, &op)?;
    Ok(false)
}

pub(crate) fn reschedule_op(
    db: &mut dyn Db,
    seq: i64,
    next_attempt_at: DateTime<Utc>,
    error: &str,
    lookup: Lookup<'_>,
) -> Result<(), StoreError> {
    let mut op = op_by_seq(db, seq)?.ok_or_else(|| unknown(seq, ""))?;
    if op.op.state == OpState::Failed {
        return Err(unknown(seq, ": it has failed; use retry_failed"));
    }
    op.op.attempts = op.op.attempts.saturating_add(1);
    op.op.next_attempt_at = Some(next_attempt_at);
    op.op.last_error = Some(error.to_owned());
    // It went out (a transient failure or a conflict): the remote may have applied it.
    op.op.sent = true;
    let attempts = op.op.attempts;
    let (model_type, record_id) = (op.op.model_type.clone(), op.op.record_id.clone());
    make_pending(db, op)?;
    if let Some(schema) = lookup(&model_type) {
        let meta = MetaSet {
            sync_attempts: Some(attempts),
            ..MetaSet::default()
        };
        update_row(db, schema, &record_id, Vec::new(), &meta)?;
    }
    Ok(())
}

/// Every op in `state` (in flight or failed: the ones `_sync_outbox_ready` holds), by seq.
fn ops_in_state(db: &mut dyn Db, state: OpState) -> Result<Vec<OpRow>, StoreError> {
    let mut sql = Sql::new(format!("SELECT {OP_COLUMNS} FROM _sync_outbox o WHERE "));
    if state != OpState::Pending {
        sql.push(READY_INDEXED).push(" AND ");
    }
    sql.push("o.state = ")
        .bind(Param::text(state.as_str()))
        .push(" ORDER BY o.seq");
    db.load(sql)?.into_iter().map(OpRow::decode).collect()
}

pub(crate) fn requeue_inflight(db: &mut dyn Db) -> Result<u64, StoreError> {
    let ops = ops_in_state(db, OpState::Inflight)?;
    let n = ops.len() as u64;
    for op in ops {
        // Another requeue in this loop may have merged it already.
        if let Some(mut current) = op_by_seq(db, op.op.seq)? {
            if current.op.state == OpState::Inflight {
                // It may have reached the remote before the crash.
                current.op.sent = true;
                make_pending(db, current)?;
            }
        }
    }
    Ok(n)
}

pub(crate) fn release_inflight(
    db: &mut dyn Db,
    seqs: &[i64],
    lookup: Lookup<'_>,
) -> Result<(), StoreError> {
    for &seq in seqs {
        let Some(op) = op_by_seq(db, seq)? else {
            continue;
        };
        if op.op.state != OpState::Inflight {
            continue;
        }
        let schema = lookup(&op.op.model_type);
        let all = schema.map(all_fields).unwrap_or_default();
        let (model_type, record_id) = (op.op.model_type.clone(), op.op.record_id.clone());
        // An unsent create folded with a delete queued meanwhile: neither ever reaches the
        // remote, and the local tombstone goes too, as when the delete had come first.
        if make_pending_with(db, op, &all)? && ops_of(db, &model_type, &record_id)?.is_empty() {
            if let Some(schema) = schema {
                delete_row(db, schema, &record_id)?;
            }
        }
    }
    Ok(())
}

pub(crate) fn failed_ops(db: &mut dyn Db) -> Result<Vec<OutboxOp>, StoreError> {
    Ok(ops_in_state(db, OpState::Failed)?
        .into_iter()
        .map(|o| o.op)
        .collect())
}

pub(crate) fn retry_failed(
    db: &mut dyn Db,
    seq: Option<i64>,
    lookup: Lookup<'_>,
) -> Result<u64, StoreError> {
    let ops = match seq {
        Some(seq) => {
            let op = op_by_seq(db, seq)?.ok_or_else(|| unknown(seq, ""))?;
            if op.op.state == OpState::Failed {
                vec![op]
            } else {
                Vec::new()
            }
        }
        None => ops_in_state(db, OpState::Failed)?,
    };
    let n = ops.len() as u64;
    for mut op in ops {
        op.op.attempts = 0;
        op.op.next_attempt_at = None;
        let (model_type, record_id) = (op.op.model_type.clone(), op.op.record_id.clone());
        make_pending(db, op)?;
        if let Some(schema) = lookup(&model_type) {
            let meta = MetaSet {
                sync_error: Some(None),
                sync_attempts: Some(0),
                ..MetaSet::default()
            };
            update_row(db, schema, &record_id, Vec::new(), &meta)?;
        }
    }
    Ok(n)
}

pub(crate) fn discard_op(db: &mut dyn Db, seq: i64, lookup: Lookup<'_>) -> Result<(), StoreError> {
    let op = op_by_seq(db, seq)?.ok_or_else(|| unknown(seq, ""))?;
    if op.op.state == OpState::Inflight {
        return Err(unknown(seq, ": it is in flight; wait for its result"));
    }
    let schema = lookup(&op.op.model_type).ok_or_else(|| {
        StoreError::Database(format!(
            "outbox operation {seq} is for model {}, which this store has not prepared; \
             call prepare_model for it first",
            op.op.model_type
        ))
    })?;
    let id = op.op.record_id.clone();
    delete_op(db, seq)?;
    let mut rest = ops_of(db, schema.model_type, &id)?;
    if op.op.op == OpKind::Create {
        // The remote never got the record: what follows must create it, and a
        // delete that follows has nothing to delete.
        if let Some(next) = rest.iter_mut().find(|o| o.op.seq > seq) {
            match next.op.op {
                OpKind::Update if next.op.state != OpState::Inflight => {
                    set_content(&mut next.op, OpKind::Create, Vec::new(), JsonObject::new());
                    update_op(db, next)?;
                }
                OpKind::Delete if next.op.state != OpState::Inflight => {
                    delete_op(db, next.op.seq)?;
                    let gone = next.op.seq;
                    rest.retain(|o| o.op.seq != gone);
                }
                _ => {}
            }
        }
    }
    if rest.is_empty() {
        let Some((_, deleted)) = load_meta(db, schema, &id)? else {
            return Ok(());
        };
        if deleted && op.op.op != OpKind::Delete {
            delete_row(db, schema, &id)?;
            return Ok(());
        }
        // Discarding a delete keeps the record: the remote still has it.
        let meta = MetaSet {
            synced: Some(true),
            deleted: Some(false),
            sync_error: Some(None),
            sync_attempts: Some(0),
            ..MetaSet::default()
        };
        update_row(db, schema, &id, Vec::new(), &meta)?;
    }
    Ok(())
}

pub(crate) fn apply_remote(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    user_id: Option<&str>,
    records: &[RemoteRecord],
    cursor: Option<&str>,
    now: DateTime<Utc>,
) -> Result<RemoteApplied, StoreError> {
    let backend = db.backend();
    let mut out = RemoteApplied::default();
    // One query each for the page's ops and bookkeeping, instead of two per record.
    let keys: Vec<String> = records.iter().map(|r| id_key(schema, &r.id)).collect();
    let with_ops = ids_with_ops(db, schema.model_type, &keys)?;
    let mut metas = metas_of(db, schema, &keys)?;
    // Versions at which the remote deleted these records, as far as this store knows: a copy
    // (or tombstone) not newer than that is stale, also for a row created here since.
    let mut tombstones = tombstones_of(db, schema.model_type, &keys)?;
    // New rows wait here and go in with multi-row INSERTs; anything that reads or changes an
    // existing row (or one created earlier in this page) writes them first.
    let mut inserts: Vec<(Vec<Param>, NewMeta)> = Vec::new();
    for (remote, key) in records.iter().zip(&keys) {
        let id = remote.id.as_str();
        if with_ops.contains(key) || metas.contains_key(key) {
            insert_rows(db, schema, std::mem::take(&mut inserts))?;
        }
        if with_ops.contains(key) {
            // A version the row already has (or an older one: an echo of our own write, a
            // catch-up page overlapping acknowledged writes, the tombstone a local create was
            // made over) changes nothing remotely, so it is no conflict: the local edit stays
            // queued as it is.
            let known = metas
                .get(key)
                .map(|&(version, _)| version)
                .max(tombstones.get(key).copied());
            if let Some(version) = known {
                if remote.version > 0 && remote.version <= version {
                    out.stale.push(remote.id.clone());
                    continue;
                }
            }
            let ops = ops_of(db, schema.model_type, id)?;
            let local = load_row(db, schema, id)?;
            out.conflicts.push(PendingConflict {
                remote: remote.clone(),
                local,
                ops: ops.into_iter().map(|o| o.op).collect(),
            });
            continue;
        }
        let meta = metas.get(key).copied();
        // Version 0 is a remote without versions: the record is stale only if nothing changed.
        let tombstone = tombstones.get(key).copied();
        let stale = match meta {
            Some((version, _)) if remote.version > 0 => remote.version <= version,
            Some(_) if !remote.deleted => {
                load_row(db, schema, id)?.is_some_and(|row| row.data == remote.data)
            }
            None => tombstone.is_some_and(|t| remote.version > 0 && remote.version <= t),
            _ => false,
        };
        // A page may carry a record twice; later copies see what earlier ones did.
        if !stale {
            if remote.deleted {
                metas.remove(key);
                if remote.version > 0 {
                    tombstones.insert(key.clone(), remote.version);
                }
            } else {
                metas.insert(key.clone(), (remote.version, false));
            }
        }
        match meta {
            Some(_) if stale => out.stale.push(remote.id.clone()),
            Some(_) if remote.deleted => {
                remove_deleted(db, schema, id, remote.version)?;
                out.deleted.push(remote.id.clone());
            }
            None if stale => out.stale.push(remote.id.clone()),
            None if remote.deleted => {
                remember_tombstone(db, schema, id, remote.version)?;
                out.stale.push(remote.id.clone());
            }
            None => {
                if tombstone.is_some() {
                    forget_tombstone(db, schema, id)?;
                }
                let params = full_params(schema, id, &remote.data, backend)?;
                let meta = NewMeta {
                    version: remote.version,
                    now,
                    synced: true,
                    deleted: false,
                    user_id: user_id.map(str::to_owned),
                };
                inserts.push((params, meta));
                out.created.push(remote.id.clone());
            }
            Some(_) => {
                let fields = partial_params(schema, &remote.data, backend)?;
                let meta = MetaSet {
                    version: Some(remote.version),
                    updated_at: Some(now),
                    synced: Some(true),
                    deleted: Some(false),
                    user_id: user_id.map(str::to_owned),
                    sync_error: Some(None),
                    sync_attempts: Some(0),
                };
                update_row(db, schema, id, fields, &meta)?;
                out.updated.push(remote.id.clone());
            }
        }
    }
    insert_rows(db, schema, inserts)?;
    if let Some(cursor) = cursor {
        set_cursor(db, schema, user_id, Some(cursor), now)?;
    }
    Ok(out)
}

/// [`LocalStore::rekey_record`](sync_core::store::LocalStore::rekey_record): the row (its id
/// column) and the record's queued ops move from `from` to `to`; a row already under `to`
/// (the remote's copy, pulled before the re-key) gives way to the re-keyed one.
pub(crate) fn rekey_record(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    from: &str,
    to: &str,
) -> Result<bool, StoreError> {
    let backend = db.backend();
    let existed = load_row(db, schema, from)?.is_some();
    if id_key(schema, from) == id_key(schema, to) {
        return Ok(existed);
    }
    if existed {
        delete_row(db, schema, to)?;
        if let Some((version, deleted)) = super::records::load_meta(db, schema, from)? {
            super::records::note_known(db, schema, from, version, deleted, -1);
            super::records::note_known(db, schema, to, version, deleted, 1);
        }
        let id_column = ident(schema.id().column);
        let mut sql = Sql::new(format!("UPDATE {} SET {id_column} = ", ident(schema.table)));
        sql.bind(id_param(schema, to, backend)?)
            .push(&format!(" WHERE {id_column} = "))
            .bind(id_param(schema, from, backend)?);
        db.execute(sql)?;
    }
    // The ops move even without a row: a delete queued behind the create goes to `to`.
    let mut sql = Sql::new("UPDATE _sync_outbox SET record_id = ");
    sql.bind(Param::text(id_key(schema, to)))
        .push(" WHERE model_type = ")
        .bind(Param::text(schema.model_type))
        .push(" AND record_id = ")
        .bind(Param::text(from));
    db.execute(sql)?;
    Ok(existed)
}

/// The id as the store writes it (UUIDs in their canonical form).
pub(crate) fn id_key(schema: &ModelSchema, id: &str) -> String {
    if schema.id().sql_type == sync_schema::SqlType::Uuid {
        if let Ok(uuid) = uuid::Uuid::parse_str(id) {
            return uuid.to_string();
        }
    }
    id.to_owned()
}

/// Ids in IN lists per statement, well under every backend's parameter limit.
const IN_CHUNK: usize = 500;

/// Which of `ids` have outbox ops.
fn ids_with_ops(
    db: &mut dyn Db,
    model_type: &str,
    ids: &[String],
) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut out = std::collections::HashSet::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let mut sql = Sql::new("SELECT DISTINCT record_id FROM _sync_outbox WHERE model_type = ");
        sql.bind(Param::text(model_type))
            .push(" AND record_id IN (");
        sql.bind_list(chunk.iter().map(|id| Param::text(id.as_str())));
        sql.push(")");
        for row in db.load(sql)? {
            if let Some(id) = row.into_iter().next().and_then(|v| v.into_text()) {
                out.insert(id);
            }
        }
    }
    Ok(out)
}

/// Removes the row of a record the remote deleted at `version`, and remembers that version
/// so that an older copy arriving later (a realtime event sent before the delete, an answer
/// computed earlier) is stale instead of bringing the record back.
fn remove_deleted(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
    version: i64,
) -> Result<(), StoreError> {
    delete_row(db, schema, id)?;
    remember_tombstone(db, schema, id, version)
}

/// Records that the remote deleted `id` at `version` (kept if a newer one is known; a remote
/// without versions has nothing to remember).
fn remember_tombstone(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
    version: i64,
) -> Result<(), StoreError> {
    if version <= 0 {
        return Ok(());
    }
    if db.checksums().is_some() {
        match tombstone_version(db, schema, id)? {
            Some(old) if old >= version => {}
            old => {
                if let Some(old) = old {
                    super::records::note_known(db, schema, id, old, true, -1);
                }
                super::records::note_known(db, schema, id, version, true, 1);
            }
        }
    }
    let mut sql =
        Sql::new("INSERT INTO _sync_tombstones (model_type, record_id, version) VALUES (");
    sql.bind_list([
        Param::text(schema.model_type),
        Param::text(id_key(schema, id)),
        Param::I64(Some(version)),
    ])
    .push(
        ") ON CONFLICT (model_type, record_id) DO UPDATE SET version = excluded.version \
         WHERE excluded.version > _sync_tombstones.version",
    );
    db.execute(sql)?;
    Ok(())
}

/// The remembered tombstone version of `id`, if any.
fn tombstone_version(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
) -> Result<Option<i64>, StoreError> {
    let mut sql = Sql::new("SELECT version FROM _sync_tombstones WHERE model_type = ");
    sql.bind(Param::text(schema.model_type))
        .push(" AND record_id = ")
        .bind(Param::text(id_key(schema, id)));
    Ok(db
        .load(sql)?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .and_then(|r| r.as_i64()))
}

fn forget_tombstone(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
) -> Result<(), StoreError> {
    if db.checksums().is_some() {
        if let Some(old) = tombstone_version(db, schema, id)? {
            super::records::note_known(db, schema, id, old, true, -1);
        }
    }
    let mut sql = Sql::new("DELETE FROM _sync_tombstones WHERE model_type = ");
    sql.bind(Param::text(schema.model_type))
        .push(" AND record_id = ")
        .bind(Param::text(id_key(schema, id)));
    db.execute(sql)?;
    Ok(())
}

/// Remembered tombstone versions of `ids` (id keys) that have one.
fn tombstones_of(
    db: &mut dyn Db,
    model_type: &str,
    ids: &[String],
) -> Result<std::collections::HashMap<String, i64>, StoreError> {
    let mut out = std::collections::HashMap::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let mut sql =
            Sql::new("SELECT record_id, version FROM _sync_tombstones WHERE model_type = ");
        sql.bind(Param::text(model_type))
            .push(" AND record_id IN (");
        sql.bind_list(chunk.iter().map(|id| Param::text(id.as_str())));
        sql.push(")");
        for row in db.load(sql)? {
            let mut it = row.into_iter();
            let Some(id) = it.next().and_then(|v| v.into_text()) else {
                continue;
            };
            let version = it.next().and_then(|r| r.as_i64()).unwrap_or(0);
            out.insert(id, version);
        }
    }
    Ok(out)
}

/// `(_version, _deleted)` of the rows among `ids` that exist.
fn metas_of(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    ids: &[String],
) -> Result<std::collections::HashMap<String, (i64, bool)>, StoreError> {
    let backend = db.backend();
    let mut out = std::collections::HashMap::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let mut sql = Sql::new(format!(
            "SELECT {id}, \"_version\", \"_deleted\" FROM {table} WHERE {id} IN (",
            id = ident(schema.id().column),
            table = ident(schema.table)
        ));
        let params = chunk
            .iter()
            .map(|id| id_param(schema, id, backend))
            .collect::<Result<Vec<_>, _>>()?;
        sql.bind_list(params);
        sql.push(")");
        for row in db.load(sql)? {
            let mut it = row.into_iter();
            let Some(id) = it.next().and_then(|v| v.into_text()) else {
                continue;
            };
            let version = it.next().and_then(|r| r.as_i64()).unwrap_or(0);
            let deleted = it.next().and_then(|r| r.as_bool()).unwrap_or(false);
            out.insert(id, (version, deleted));
        }
    }
    Ok(out)
}

fn set_cursor(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    user_id: Option<&str>,
    cursor: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let backend = db.backend();
    let mut sql =
        Sql::new("INSERT INTO _sync_state (user_id, model_type, cursor, last_pull_at) VALUES (");
    sql.bind_list([
        Param::text(user_id.unwrap_or("")),
        Param::text(schema.model_type),
        Param::Text(cursor.map(str::to_owned)),
        time_param(backend, Some(now)),
    ])
    .push(
        ") ON CONFLICT (user_id, model_type) DO UPDATE SET cursor = excluded.cursor, \
         last_pull_at = excluded.last_pull_at",
    );
    db.execute(sql)?;
    Ok(())
}

pub(crate) fn cursor(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    user_id: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let mut sql = Sql::new("SELECT cursor FROM _sync_state WHERE user_id = ");
    sql.bind(Param::text(user_id.unwrap_or("")))
        .push(" AND model_type = ")
        .bind(Param::text(schema.model_type));
    Ok(db
        .load(sql)?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .and_then(|r| r.into_text()))
}

pub(crate) fn reset_cursor(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    user_id: Option<&str>,
) -> Result<(), StoreError> {
    let mut sql = Sql::new("UPDATE _sync_state SET cursor = NULL WHERE user_id = ");
    sql.bind(Param::text(user_id.unwrap_or("")))
        .push(" AND model_type = ")
        .bind(Param::text(schema.model_type));
    db.execute(sql)?;
    Ok(())
}

/// Writes the remote record as the synced local row.
fn take_remote(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    remote: &RemoteRecord,
    exists: bool,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let backend = db.backend();
    if remote.deleted {
        remove_deleted(db, schema, &remote.id, remote.version)?;
    } else if exists {
        let fields = partial_params(schema, &remote.data, backend)?;
        let meta = MetaSet {
            version: Some(remote.version),
            updated_at: Some(now),
            synced: Some(true),
            deleted: Some(false),
            sync_error: Some(None),
            sync_attempts: Some(0),
            ..MetaSet::default()
        };
        update_row(db, schema, &remote.id, fields, &meta)?;
    } else {
        let params = full_params(schema, &remote.id, &remote.data, backend)?;
        let meta = NewMeta {
            version: remote.version,
            now,
            synced: true,
            deleted: false,
            user_id: None,
        };
        insert_row(db, schema, params, &meta, false)?;
    }
    Ok(())
}

pub(crate) fn resolve_conflict(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    remote: &RemoteRecord,
    resolution: &Resolution,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    resolve_conflict_rows(db, schema, remote, resolution, now)?;
    if remote.deleted {
        return Ok(());
    }
    // Whatever the resolution, the row is now at (or rebased on) the remote's version.
    supersede_tombstones(db, schema, &[(remote.id.as_str(), remote.version)])
}

fn resolve_conflict_rows(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    remote: &RemoteRecord,
    resolution: &Resolution,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let backend = db.backend();
    let id = remote.id.as_str();
    let ops = ops_of(db, schema.model_type, id)?;
    let row = load_meta(db, schema, id)?;
    match resolution {
        Resolution::TakeRemote => {
            for op in &ops {
                delete_op(db, op.op.seq)?;
            }
            take_remote(db, schema, remote, row.is_some(), now)
        }
        Resolution::KeepLocal => {
            let Some(first) = ops.first() else {
                // Nothing local to keep: the row is in sync with what it has.
                if row.is_some() {
                    let meta = MetaSet {
                        version: Some(remote.version),
                        ..MetaSet::default()
                    };
                    update_row(db, schema, id, Vec::new(), &meta)?;
                }
                return Ok(());
            };
            // Fold every local op into one: what the local side wants overall.
            let all = all_fields(schema);
            let mut kind = Some(first.op.op);
            let mut changed = first.op.changed_fields.clone();
            let mut base = first.op.base_values.clone();
            let mut sent = first.op.sent;
            for later in &ops[1..] {
                let edit = Edit {
                    kind: later.op.op,
                    changed: later.op.changed_fields.clone(),
                    base_values: later.op.base_values.clone(),
                };
                kind = match kind {
                    None => Some(later.op.op),
                    Some(k) => match coalesce(k, sent, &changed, &base, &edit, &all) {
                        Coalesced::Vanish => None,
                        Coalesced::Op {
                            kind,
                            changed: c,
                            base_values,
                        } => {
                            changed = c;
                            base = base_values;
                            Some(kind)
                        }
                    },
                };
                sent |= later.op.sent;
            }
            for op in &ops[1..] {
                delete_op(db, op.op.seq)?;
            }
            // Rebase on the remote: a create over an existing record is an
            // update of every field; anything but a delete over a remote
            // tombstone is a create.
            let target = match (kind, remote.deleted) {
                (Some(OpKind::Delete) | None, true) => None,
                (Some(OpKind::Delete) | None, false) => Some(OpKind::Delete),
                (Some(_), true) => Some(OpKind::Create),
                (Some(OpKind::Create), false) => {
                    changed = all;
                    Some(OpKind::Update)
                }
                (Some(k), false) => Some(k),
            };
            let Some(target) = target else {
                delete_op(db, first.op.seq)?;
                remove_deleted(db, schema, id, remote.version)?;
                return Ok(());
            };
            let mut op = first.clone();
            set_content(&mut op.op, target, changed, base);
            op.op.base_version = remote.version;
            op.op.state = OpState::Pending;
            op.op.attempts = 0;
            op.op.next_attempt_at = None;
            op.op.sent = false;
            update_op(db, &op)?;
            let meta = MetaSet {
                version: Some(remote.version),
                synced: Some(false),
                sync_error: Some(None),
                sync_attempts: Some(0),
                ..MetaSet::default()
            };
            update_row(db, schema, id, Vec::new(), &meta)?;
            Ok(())
        }
        Resolution::Merged(data) => {
            for op in &ops {
                delete_op(db, op.op.seq)?;
            }
            let params = full_params(schema, id, data, backend)?;
            let (kind, changed) = if remote.deleted {
                (Some(OpKind::Create), Vec::new())
            } else {
                let mut changed = Vec::new();
                for (field, param) in schema.fields.iter().zip(params.iter()) {
                    let same = match remote.data.get(field.wire_name) {
                        Some(v) => json_to_param(field, v, backend).is_ok_and(|p| &p == param),
                        None => field.id,
                    };
                    if !same {
                        changed.push(field.wire_name.to_owned());
                    }
                }
                if changed.is_empty() {
                    (None, changed)
                } else {
                    (Some(OpKind::Update), changed)
                }
            };
            let synced = kind.is_none();
            if row.is_some() {
                let meta = MetaSet {
                    version: Some(remote.version),
                    updated_at: Some(now),
                    synced: Some(synced),
                    deleted: Some(false),
                    sync_error: Some(None),
                    sync_attempts: Some(0),
                    ..MetaSet::default()
                };
                update_row(db, schema, id, with_fields(schema, params), &meta)?;
            } else {
                let meta = NewMeta {
                    version: remote.version,
                    now,
                    synced,
                    deleted: false,
                    user_id: None,
                };
                insert_row(db, schema, params, &meta, false)?;
            }
            if let Some(kind) = kind {
                let base = values_of(&remote.data, &changed);
                let op = new_op(
                    schema.model_type,
                    id,
                    ops.first().and_then(|o| o.op.user_id.as_deref()),
                    kind,
                    changed,
                    base,
                    remote.version,
                    ops.iter().map(|o| o.op.priority).max().unwrap_or(0),
                    now,
                );
                insert_op(db, &op)?;
            }
            Ok(())
        }
    }
}

pub(crate) fn record_state(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
) -> Result<RecordState, StoreError> {
    let meta = load_row(db, schema, id)?.map(|r| r.meta);
    let ops = ops_of(db, schema.model_type, id)?
        .into_iter()
        .map(|o| o.op)
        .collect();
    Ok(RecordState {
        meta,
        ops,
        decryption_error: None,
    })
}

/// The status counts, read from the row the bookkeeping triggers keep (migration 5): one row
/// read, whatever the length of the outbox (on SQLite, since migration 7, with the largest
/// seq, one descent of the outbox's b-tree).
pub(crate) fn counts(db: &mut dyn Db) -> Result<OutboxCounts, StoreError> {
    let sql = match db.backend() {
        // No write on an insert (bookkeeping migration 7): the ops present are the largest
        // seq handed out less the seqs that hold none.
        Backend::Sqlite => format!(
            "SELECT {LARGEST_SEQ} - gone - failed, failed, quarantined \
             FROM _sync_outbox_counts WHERE id = 1"
        ),
        Backend::Postgres => {
            "SELECT pending, failed, quarantined FROM _sync_outbox_counts WHERE id = 1".to_owned()
        }
    };
    let row = db
        .load(Sql::new(sql))?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Database("the outbox counts row is missing".into()))?;
    let mut it = row.into_iter();
    let mut count = |what: &str| {
        it.next()
            .and_then(|r| r.as_i64())
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| StoreError::Database(format!("the outbox count `{what}` is corrupt")))
    };
    Ok(OutboxCounts {
        pending: count("pending")?,
        failed: count("failed")?,
        quarantined: count("quarantined")?,
    })
}

pub(crate) fn metadata(
    db: &mut dyn Db,
    user_id: Option<&str>,
    key: &str,
) -> Result<Option<String>, StoreError> {
    let mut sql = Sql::new("SELECT value FROM _sync_metadata WHERE user_id = ");
    sql.bind(Param::text(user_id.unwrap_or("")))
        .push(" AND key = ")
        .bind(Param::text(key));
    Ok(db
        .load(sql)?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .and_then(|r| r.into_text()))
}

pub(crate) fn set_metadata(
    db: &mut dyn Db,
    user_id: Option<&str>,
    key: &str,
    value: &str,
) -> Result<(), StoreError> {
    let mut sql = Sql::new("INSERT INTO _sync_metadata (user_id, key, value) VALUES (");
    sql.bind_list([
        Param::text(user_id.unwrap_or("")),
        Param::text(key),
        Param::text(value),
    ])
    .push(") ON CONFLICT (user_id, key) DO UPDATE SET value = excluded.value");
    db.execute(sql)?;
    Ok(())
}

/// What this store knows of the remote's records of `schema`: (id, version, deleted) of every
/// row the remote has versioned (version above 0) and of every remembered tombstone, in id
/// order, and the ids that have outbox ops (whose local state is ahead of the remote's).
pub(crate) fn known_versions(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
) -> Result<KnownVersions, StoreError> {
    let mut known = Vec::new();
    let sql = Sql::new(format!(
        "SELECT {id}, \"_version\", \"_deleted\" FROM {table} WHERE \"_version\" > 0",
        id = ident(schema.id().column),
        table = ident(schema.table)
    ));
    for row in db.load(sql)? {
        let mut it = row.into_iter();
        let Some(id) = it.next().and_then(raw_id).map(|id| id_key(schema, &id)) else {
            continue;
        };
        let version = it.next().and_then(|r| r.as_i64()).unwrap_or(0);
        let deleted = it.next().and_then(|r| r.as_bool()).unwrap_or(false);
        known.push((id, version, deleted));
    }
    let mut sql = Sql::new("SELECT record_id, version FROM _sync_tombstones WHERE model_type = ");
    sql.bind(Param::text(schema.model_type));
    for row in db.load(sql)? {
        let mut it = row.into_iter();
        let Some(id) = it.next().and_then(|v| v.into_text()) else {
            continue;
        };
        let version = it.next().and_then(|r| r.as_i64()).unwrap_or(0);
        known.push((id, version, true));
    }
    known.sort();
    let mut sql = Sql::new("SELECT DISTINCT record_id FROM _sync_outbox WHERE model_type = ");
    sql.bind(Param::text(schema.model_type));
    let mut with_ops: Vec<String> = db
        .load(sql)?
        .into_iter()
        .filter_map(|row| row.into_iter().next().and_then(|v| v.into_text()))
        .collect();
    with_ops.sort();
    Ok(KnownVersions::new(known, with_ops))
}

/// Forgets the rows and remembered tombstones of `ids` that have no outbox ops (a repair:
/// the next pull takes the remote's copy whatever its version).
pub(crate) fn forget_records(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    ids: &[String],
) -> Result<u64, StoreError> {
    let keys: Vec<String> = ids.iter().map(|id| id_key(schema, id)).collect();
    let busy = ids_with_ops(db, schema.model_type, &keys)?;
    let mut forgotten = 0u64;
    for (id, key) in ids.iter().zip(&keys) {
        if busy.contains(key) {
            continue;
        }
        delete_row(db, schema, id)?;
        forget_tombstone(db, schema, id)?;
        forgotten = forgotten.saturating_add(1);
    }
    Ok(forgotten)
}

/// Adds a write transaction's checksum changes to `_sync_checksums` (models not counted yet
/// have no row there and are counted by a scan when first read).
pub(crate) fn add_checksums(
    db: &mut dyn Db,
    deltas: crate::sql::ChecksumDeltas,
) -> Result<(), StoreError> {
    for (model, (records, checksum)) in deltas.0 {
        if records == 0 && checksum == sync_core::protocol::Checksum::default() {
            continue;
        }
        let mut sql = Sql::new("UPDATE _sync_checksums SET records = records + ");
        sql.bind(Param::I64(Some(records)))
            .push(", checksum_lo = checksum_lo + ")
            .bind(Param::I64(Some(checksum.lo)))
            .push(", checksum_hi = checksum_hi + ")
            .bind(Param::I64(Some(checksum.hi)))
            .push(" WHERE model_type = ")
            .bind(Param::text(model));
        db.execute(sql)?;
    }
    Ok(())
}

/// The kept (records, checksum) of `schema`, if the model has been counted.
pub(crate) fn kept_checksum(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
) -> Result<Option<(u64, sync_core::protocol::Checksum)>, StoreError> {
    let mut sql = Sql::new(
        "SELECT records, checksum_lo, checksum_hi FROM _sync_checksums WHERE model_type = ",
    );
    sql.bind(Param::text(schema.model_type));
    Ok(db.load(sql)?.into_iter().next().map(|row| {
        let mut it = row.into_iter();
        let mut next = || it.next().and_then(|v| v.as_i64()).unwrap_or(0);
        let records = next();
        let checksum = sync_core::protocol::Checksum {
            lo: next(),
            hi: next(),
        };
        (u64::try_from(records).unwrap_or(0), checksum)
    }))
}

/// The kept (records, checksum) of what the store knows of the remote's `schema` records;
/// counted by a scan and kept from then on the first time (in a write transaction, so no
/// write comes between the scan and the row).
pub(crate) fn known_checksum(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
) -> Result<(u64, sync_core::protocol::Checksum), StoreError> {
    if let Some(kept) = kept_checksum(db, schema)? {
        return Ok(kept);
    }
    let known = known_versions(db, schema)?;
    let checksum = known.checksum();
    let records = i64::try_from(known.known.len()).unwrap_or(i64::MAX);
    let mut sql = Sql::new(
        "INSERT INTO _sync_checksums (model_type, records, checksum_lo, checksum_hi) VALUES (",
    );
    sql.bind_list([
        Param::text(schema.model_type),
        Param::I64(Some(records)),
        Param::I64(Some(checksum.lo)),
        Param::I64(Some(checksum.hi)),
    ])
    .push(")");
    db.execute(sql)?;
    Ok((u64::try_from(records).unwrap_or(0), checksum))
}

/// An id read back from a model table: text, a UUID, or an integer id in decimal.
fn raw_id(value: crate::value::Raw) -> Option<String> {
    match value {
        crate::value::Raw::Int(n) => Some(n.to_string()),
        other => other.into_text(),
    }
}

/// Ops per model and state class: (model type, pending or in flight, failed).
pub(crate) fn op_counts_by_model(db: &mut dyn Db) -> Result<Vec<(String, u64, u64)>, StoreError> {
    let rows = db.load(Sql::new(
        "SELECT model_type, SUM(CASE WHEN state = 'failed' THEN 0 ELSE 1 END), \
         SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) FROM _sync_outbox GROUP BY model_type",
    ))?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let mut it = row.into_iter();
            let model = it.next()?.into_text()?;
            let count = |v: Option<crate::value::Raw>| {
                v.and_then(|r| r.as_i64())
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0)
            };
            let pending = count(it.next());
            let failed = count(it.next());
            Some((model, pending, failed))
        })
        .collect())
}

/// The `_sync_metadata` key (under the empty user) naming the user a store belongs to.
const OWNER_KEY: &str = "store_owner";

/// Binds the store to `user` (see [`LocalStore::claim_owner`]): the recorded owner, else the
/// users named by rows of a store from before owners were recorded (ops, cursors, metadata).
///
/// [`LocalStore::claim_owner`]: sync_core::store::LocalStore::claim_owner
pub(crate) fn claim_owner(
    db: &mut dyn Db,
    user: Option<&str>,
) -> Result<Option<String>, StoreError> {
    if let Some(owner) = metadata(db, None, OWNER_KEY)? {
        return Ok((user != Some(owner.as_str())).then_some(owner));
    }
    let others = db.load(Sql::new(
        "SELECT user_id FROM _sync_outbox WHERE user_id IS NOT NULL AND user_id <> '' \
         UNION SELECT user_id FROM _sync_state WHERE user_id <> '' \
         UNION SELECT user_id FROM _sync_metadata WHERE user_id <> ''",
    ))?;
    let mut named: Vec<String> = others
        .into_iter()
        .filter_map(|row| row.into_iter().next().and_then(|v| v.into_text()))
        .collect();
    named.sort();
    if let Some(other) = named.into_iter().find(|n| Some(n.as_str()) != user) {
        return Ok(Some(other));
    }
    if let Some(user) = user {
        set_metadata(db, None, OWNER_KEY, user)?;
    }
    Ok(None)
}

pub(crate) fn quarantine(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    records: &[QuarantinedRecord],
) -> Result<(), StoreError> {
    for record in records {
        let mut sql = Sql::new(
            "INSERT INTO _sync_quarantine \
             (model_type, record_key, record_id, raw, error, quarantined_at) VALUES (",
        );
        sql.bind_list([
            Param::text(schema.model_type),
            Param::text(record.key.as_str()),
            Param::Text(record.id.clone()),
            Param::text(record.raw.to_string()),
            Param::text(record.error.as_str()),
            Param::text(record.quarantined_at.to_rfc3339()),
        ])
        .push(
            ") ON CONFLICT (model_type, record_key) DO UPDATE SET record_id = excluded.record_id, \
             raw = excluded.raw, error = excluded.error, quarantined_at = excluded.quarantined_at",
        );
        db.execute(sql)?;
    }
    Ok(())
}

pub(crate) fn quarantined(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
) -> Result<Vec<QuarantinedRecord>, StoreError> {
    let mut sql = Sql::new(
        "SELECT record_key, record_id, raw, error, quarantined_at FROM _sync_quarantine \
         WHERE model_type = ",
    );
    sql.bind(Param::text(schema.model_type))
        .push(" ORDER BY quarantined_at, record_key");
    let mut out = Vec::new();
    for row in db.load(sql)? {
        let mut it = row.into_iter();
        let mut text = || it.next().and_then(|v| v.into_text());
        let (Some(key), id, Some(raw), Some(error), Some(at)) =
            (text(), text(), text(), text(), text())
        else {
            continue;
        };
        // The raw text was written from a JSON value; a row that no longer reads is kept
        // visible as a string rather than dropped.
        let raw = serde_json::from_str(&raw).unwrap_or(serde_json::Value::String(raw));
        let quarantined_at = DateTime::parse_from_rfc3339(&at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut record = QuarantinedRecord::new(id, raw, error);
        record.key = key;
        record.quarantined_at = quarantined_at;
        out.push(record);
    }
    Ok(out)
}

pub(crate) fn release_quarantined(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    keys: &[String],
) -> Result<u64, StoreError> {
    let mut released = 0u64;
    for chunk in keys.chunks(IN_CHUNK) {
        let mut sql = Sql::new("DELETE FROM _sync_quarantine WHERE model_type = ");
        sql.bind(Param::text(schema.model_type))
            .push(" AND record_key IN (");
        sql.bind_list(chunk.iter().map(|key| Param::text(key.as_str())));
        sql.push(")");
        released = released.saturating_add(db.execute(sql)? as u64);
    }
    Ok(released)
}
