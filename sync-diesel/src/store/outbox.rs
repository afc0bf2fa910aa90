//! Outbox rows and the coalescing rules of DESIGN.md.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sync_core::store::StoreError;
use sync_core::store::{JsonObject, OpKind, OpState, OutboxOp};

use crate::ddl::Backend;
use crate::sql::{Db, Sql, LARGEST_SEQ};
use crate::value::{raw_to_time, time_param, Param, Raw};

/// Columns of `_sync_outbox`, in the order [`OpRow::decode`] reads them.
pub(crate) const OP_COLUMNS: &str = "seq, model_type, record_id, user_id, op, changed_fields, \
     base_version, base_values, idempotency_key, priority, attempts, next_attempt_at, \
     last_error, state, created_at, sent";

/// One outbox row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OpRow {
    pub(crate) op: OutboxOp,
}

fn corrupt(seq: i64, what: &str) -> StoreError {
    StoreError::Database(format!("outbox operation {seq} is corrupt: {what}"))
}

impl OpRow {
    pub(crate) fn decode(raws: Vec<Raw>) -> Result<OpRow, StoreError> {
        let mut it = raws.into_iter();
        let mut next = || it.next().unwrap_or(Raw::Null);
        let seq = next().as_i64().ok_or_else(|| corrupt(0, "seq"))?;
        let text = |raw: Raw, what: &str| raw.into_text().ok_or_else(|| corrupt(seq, what));
        let model_type = text(next(), "model_type")?;
        let record_id = text(next(), "record_id")?;
        let user_id = next().into_text();
        let op_text = text(next(), "op")?;
        let op = OpKind::parse(&op_text).ok_or_else(|| corrupt(seq, "op"))?;
        let changed_fields: Vec<String> = serde_json::from_str(&text(next(), "changed_fields")?)
            .map_err(|e| corrupt(seq, &format!("changed_fields: {e}")))?;
        let base_version = next()
            .as_i64()
            .ok_or_else(|| corrupt(seq, "base_version"))?;
        let base_values: JsonObject = serde_json::from_str(&text(next(), "base_values")?)
            .map_err(|e| corrupt(seq, &format!("base_values: {e}")))?;
        let idempotency_key = text(next(), "idempotency_key")?;
        let priority = next()
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| corrupt(seq, "priority"))?;
        let attempts = next()
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| corrupt(seq, "attempts"))?;
        let next_attempt_at = raw_to_time(next()).map_err(|e| corrupt(seq, &e))?;
        let last_error = next().into_text();
        let state_text = text(next(), "state")?;
        let state = OpState::parse(&state_text).ok_or_else(|| corrupt(seq, "state"))?;
        let created_at = raw_to_time(next())
            .map_err(|e| corrupt(seq, &e))?
            .ok_or_else(|| corrupt(seq, "created_at"))?;
        let sent = next().as_bool().unwrap_or(true);
        Ok(OpRow {
            op: OutboxOp {
                seq,
                model_type,
                record_id,
                user_id,
                op,
                changed_fields,
                base_version,
                base_values,
                idempotency_key,
                priority,
                attempts,
                next_attempt_at,
                last_error,
                state,
                created_at,
                sent,
            },
        })
    }
}

/// A new idempotency key: a random prefix drawn once per process (a UUIDv4's 122 random bits,
/// as 32 hex digits) and a counter of the keys this process made, in hex. Unique as long as
/// the prefixes are, like a UUIDv4 per key, but the keys of one batch share their prefix, so a
/// compressed push body carries it once: a one-field update's op in a batch of 500 went from
/// 44 to about 28 bytes on the wire (issue 18; the record id is the other random part).
pub(crate) fn new_key() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{n:x}")
}

fn json_text<T: serde::Serialize>(value: &T) -> Param {
    // Serialising a Vec<String> or a Map<String, Value> cannot fail.
    Param::Text(Some(serde_json::to_string(value).unwrap_or_default()))
}

/// Inserts a new op; returns its seq.
pub(crate) fn insert_op(db: &mut dyn Db, op: &OutboxOp) -> Result<i64, StoreError> {
    let backend = db.backend();
    let columns = "model_type, record_id, user_id, op, changed_fields, base_version, \
         base_values, idempotency_key, priority, attempts, next_attempt_at, last_error, state, \
         created_at, sent";
    if let Some(seq) = db.next_seq()? {
        let mut sql = Sql::new(format!(
            "INSERT INTO _sync_outbox (seq, {columns}) VALUES ("
        ));
        sql.bind(Param::I64(Some(seq))).push(", ");
        sql.bind_list(op_params(op, backend)).push(")");
        db.execute(sql)?;
        return Ok(seq);
    }
    let rows = match backend {
        Backend::Sqlite => {
            // Outside a write transaction of ours: the seq after the largest ever handed out
            // (SQLite's own choice, one past the largest present, could be a deleted op's,
            // which the insert trigger refuses).
            let mut sql = Sql::new(format!(
                "INSERT INTO _sync_outbox (seq, {columns}) VALUES (\
                 (SELECT {LARGEST_SEQ} + 1 FROM _sync_outbox_counts WHERE id = 1), "
            ));
            sql.bind_list(op_params(op, backend)).push(")");
            db.execute(sql)?;
            db.load(Sql::new("SELECT last_insert_rowid()"))?
        }
        Backend::Postgres => {
            let mut sql = Sql::new(format!("INSERT INTO _sync_outbox ({columns}) VALUES ("));
            sql.bind_list(op_params(op, backend))
                .push(") RETURNING seq");
            db.load(sql)?
        }
    };
    rows.into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .and_then(|r| r.as_i64())
        .ok_or_else(|| StoreError::Database("inserting an outbox operation returned no seq".into()))
}

fn op_params(op: &OutboxOp, backend: Backend) -> Vec<Param> {
    vec![
        Param::text(op.model_type.clone()),
        Param::text(op.record_id.clone()),
        Param::Text(op.user_id.clone()),
        Param::text(op.op.as_str()),
        json_text(&op.changed_fields),
        Param::I64(Some(op.base_version)),
        json_text(&op.base_values),
        Param::text(op.idempotency_key.clone()),
        Param::I32(Some(op.priority)),
        Param::I32(Some(op.attempts)),
        time_param(backend, op.next_attempt_at),
        Param::Text(op.last_error.clone()),
        Param::text(op.state.as_str()),
        time_param(backend, Some(op.created_at)),
        Param::Bool(Some(op.sent)),
    ]
}

/// Rewrites every column of an existing op.
pub(crate) fn update_op(db: &mut dyn Db, row: &OpRow) -> Result<(), StoreError> {
    let backend = db.backend();
    let names = [
        "model_type",
        "record_id",
        "user_id",
        "op",
        "changed_fields",
        "base_version",
        "base_values",
        "idempotency_key",
        "priority",
        "attempts",
        "next_attempt_at",
        "last_error",
        "state",
        "created_at",
        "sent",
    ];
    let mut sql = Sql::new("UPDATE _sync_outbox SET ");
    for (i, (name, param)) in names.iter().zip(op_params(&row.op, backend)).enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push(name).push(" = ").bind(param);
    }
    sql.push(" WHERE seq = ").bind(Param::I64(Some(row.op.seq)));
    db.execute(sql)?;
    Ok(())
}

pub(crate) fn delete_op(db: &mut dyn Db, seq: i64) -> Result<(), StoreError> {
    let mut sql = Sql::new("DELETE FROM _sync_outbox WHERE seq = ");
    sql.bind(Param::I64(Some(seq)));
    db.execute(sql)?;
    Ok(())
}

/// Every op of a record, oldest first.
pub(crate) fn ops_of(
    db: &mut dyn Db,
    model_type: &str,
    record_id: &str,
) -> Result<Vec<OpRow>, StoreError> {
    let mut sql = Sql::new(format!(
        "SELECT {OP_COLUMNS} FROM _sync_outbox WHERE model_type = "
    ));
    sql.bind(Param::text(model_type))
        .push(" AND record_id = ")
        .bind(Param::text(record_id))
        .push(" ORDER BY seq");
    db.load(sql)?.into_iter().map(OpRow::decode).collect()
}

/// One op by seq.
pub(crate) fn op_by_seq(db: &mut dyn Db, seq: i64) -> Result<Option<OpRow>, StoreError> {
    let mut sql = Sql::new(format!(
        "SELECT {OP_COLUMNS} FROM _sync_outbox WHERE seq = "
    ));
    sql.bind(Param::I64(Some(seq)));
    db.load(sql)?
        .into_iter()
        .next()
        .map(OpRow::decode)
        .transpose()
}

/// A change about to be queued for a record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Edit {
    pub(crate) kind: OpKind,
    /// Fields the edit changed (every field when it recreates a deleted record).
    pub(crate) changed: Vec<String>,
    /// Values of `changed` before the edit.
    pub(crate) base_values: JsonObject,
}

impl Edit {
    pub(crate) fn delete() -> Edit {
        Edit {
            kind: OpKind::Delete,
            changed: Vec::new(),
            base_values: JsonObject::new(),
        }
    }
}

/// The result of folding a newer change into an older op of the same record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Coalesced {
    /// One op of this kind, fields and base values.
    Op {
        kind: OpKind,
        changed: Vec<String>,
        base_values: JsonObject,
    },
    /// A create that never reached the remote, then a delete: nothing to send.
    Vanish,
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = a.to_vec();
    for f in b {
        if !out.contains(f) {
            out.push(f.clone());
        }
    }
    out
}

/// Base values of both, the older (first pre-edit) value winning.
fn first_values(older: &JsonObject, newer: &JsonObject) -> JsonObject {
    let mut out = older.clone();
    for (k, v) in newer {
        if !out.contains_key(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// DESIGN.md's rules: create+update = create with the latest data;
/// update+update = union of fields, first base values; create+delete = both
/// vanish (unless the create may have reached the remote, then a delete);
/// update+delete = delete; delete+save = an update of every field.
pub(crate) fn coalesce(
    older_kind: OpKind,
    older_sent: bool,
    older_changed: &[String],
    older_base: &JsonObject,
    newer: &Edit,
    all_fields: &[String],
) -> Coalesced {
    use OpKind::{Create, Delete, Update};
    let base_values = first_values(older_base, &newer.base_values);
    match (older_kind, newer.kind) {
        (Create, Create | Update) => Coalesced::Op {
            kind: Create,
            changed: Vec::new(),
            base_values: JsonObject::new(),
        },
        (Create, Delete) if !older_sent => Coalesced::Vanish,
        (_, Delete) => Coalesced::Op {
            kind: Delete,
            changed: Vec::new(),
            base_values,
        },
        (Update, Update) => Coalesced::Op {
            kind: Update,
            changed: union(older_changed, &newer.changed),
            base_values,
        },
        // A save after a delete that may have reached the remote: re-create
        // the record (a 409 from a remote that still has it goes through
        // conflict resolution). Without the field list, the same.
        (Delete, Create | Update) if older_sent || all_fields.is_empty() => Coalesced::Op {
            kind: Create,
            changed: Vec::new(),
            base_values: JsonObject::new(),
        },
        // A save after a delete the remote never saw: the remote still has
        // the record, so the save rewrites every field of it.
        (Delete, Create | Update) => Coalesced::Op {
            kind: Update,
            changed: all_fields.to_vec(),
            base_values,
        },
        // Cannot follow each other (a create only follows a delete); keep
        // every field that either changed.
        (Update, Create) => Coalesced::Op {
            kind: Update,
            changed: union(older_changed, &newer.changed),
            base_values,
        },
    }
}

/// The values of `fields` in `data` (null where absent).
pub(crate) fn values_of(data: &JsonObject, fields: &[String]) -> JsonObject {
    fields
        .iter()
        .map(|f| (f.clone(), data.get(f).cloned().unwrap_or(Value::Null)))
        .collect()
}

/// A fresh pending op for a record.
#[allow(clippy::too_many_arguments)]
pub(crate) fn new_op(
    model_type: &str,
    record_id: &str,
    user_id: Option<&str>,
    kind: OpKind,
    changed: Vec<String>,
    base_values: JsonObject,
    base_version: i64,
    priority: i32,
    now: DateTime<Utc>,
) -> OutboxOp {
    let (changed, base_values) = match kind {
        OpKind::Create => (Vec::new(), JsonObject::new()),
        OpKind::Delete => (Vec::new(), base_values),
        OpKind::Update => (changed, base_values),
    };
    OutboxOp {
        seq: 0,
        model_type: model_type.to_owned(),
        record_id: record_id.to_owned(),
        user_id: user_id.map(str::to_owned),
        op: kind,
        changed_fields: changed,
        base_version,
        base_values,
        idempotency_key: new_key(),
        priority,
        attempts: 0,
        next_attempt_at: None,
        last_error: None,
        state: OpState::Pending,
        created_at: now,
        sent: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use OpKind::{Create, Delete, Update};

    fn obj(v: Value) -> JsonObject {
        match v {
            Value::Object(m) => m,
            _ => JsonObject::new(),
        }
    }

    fn s(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// (name, older kind, older sent, older changed, older base, newer edit, expected)
    type Case = (
        &'static str,
        OpKind,
        bool,
        Vec<String>,
        JsonObject,
        Edit,
        Coalesced,
    );

    #[test]
    fn coalescing_table() {
        let all = s(&["id", "title", "done"]);
        let upd = |f: &[&str], base: Value| Edit {
            kind: Update,
            changed: s(f),
            base_values: obj(base),
        };
        let recreate = Edit {
            kind: Create,
            changed: all.clone(),
            base_values: obj(json!({"id": "1", "title": "gone", "done": false})),
        };
        let none = JsonObject::new();
        let cases: Vec<Case> = vec![
            (
                "create+update = create",
                Create,
                false,
                vec![],
                none.clone(),
                upd(&["title"], json!({"title": "a"})),
                Coalesced::Op {
                    kind: Create,
                    changed: vec![],
                    base_values: none.clone(),
                },
            ),
            (
                "unsent create+delete vanish",
                Create,
                false,
                vec![],
                none.clone(),
                Edit::delete(),
                Coalesced::Vanish,
            ),
            (
                "sent create+delete = delete",
                Create,
                true,
                vec![],
                none.clone(),
                Edit::delete(),
                Coalesced::Op {
                    kind: Delete,
                    changed: vec![],
                    base_values: none.clone(),
                },
            ),
            (
                "update+update = union, first base",
                Update,
                false,
                s(&["title"]),
                obj(json!({"title": "orig"})),
                upd(&["title", "done"], json!({"title": "mid", "done": false})),
                Coalesced::Op {
                    kind: Update,
                    changed: s(&["title", "done"]),
                    base_values: obj(json!({"title": "orig", "done": false})),
                },
            ),
            (
                "update+delete = delete",
                Update,
                false,
                s(&["title"]),
                obj(json!({"title": "orig"})),
                Edit::delete(),
                Coalesced::Op {
                    kind: Delete,
                    changed: vec![],
                    base_values: obj(json!({"title": "orig"})),
                },
            ),
            (
                "unsent delete+save = full update",
                Delete,
                false,
                vec![],
                obj(json!({"title": "orig"})),
                recreate.clone(),
                Coalesced::Op {
                    kind: Update,
                    changed: all.clone(),
                    base_values: obj(json!({"id": "1", "title": "orig", "done": false})),
                },
            ),
            (
                "sent delete+save = create",
                Delete,
                true,
                vec![],
                obj(json!({"title": "orig"})),
                recreate,
                Coalesced::Op {
                    kind: Create,
                    changed: vec![],
                    base_values: none.clone(),
                },
            ),
        ];
        for (name, kind, sent, changed, base, edit, expected) in cases {
            assert_eq!(
                coalesce(kind, sent, &changed, &base, &edit, &all),
                expected,
                "{name}"
            );
        }
    }
}
