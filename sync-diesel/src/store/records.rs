//! Reading and writing model rows.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use sync_core::protocol::Checksum;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sync_core::store::StoreError;
use sync_core::store::{JsonObject, RecordMeta, StoredRecord};
use sync_schema::{FieldSpec, ModelSchema};

use crate::ddl::{ident, Backend, META_COLUMNS};
use crate::sql::{Db, Sql};
use crate::value::{json_to_param, raw_to_id, raw_to_json, raw_to_time, time_param, Param, Raw};

/// `"f1", "f2", ..., "_version", ...` for a SELECT, computed once per model.
pub(crate) fn select_list(schema: &'static ModelSchema) -> &'static str {
    static CACHE: OnceLock<Mutex<HashMap<usize, &'static str>>> = OnceLock::new();
    let key = std::ptr::from_ref(schema) as usize;
    let mut cache = CACHE
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    cache.entry(key).or_insert_with(|| {
        let mut cols: Vec<String> = schema.fields.iter().map(|f| ident(f.column)).collect();
        cols.extend(META_COLUMNS.iter().map(|c| ident(c)));
        // Schemas are statics, so this is computed once per model and never freed.
        Box::leak(cols.join(", ").into_boxed_str())
    })
}

fn corrupt(schema: &ModelSchema, id: &str, field: &str, reason: String) -> StoreError {
    StoreError::CorruptRow {
        model: schema.model_type,
        id: id.to_owned(),
        field: field.to_owned(),
        reason,
    }
}

/// Decodes a row selected with [`select_list`].
pub(crate) fn decode_record(
    schema: &'static ModelSchema,
    raws: Vec<Raw>,
) -> Result<StoredRecord, StoreError> {
    let n = schema.fields.len();
    let id_field = schema.id();
    let id = raws
        .get(schema.id_field)
        .cloned()
        .and_then(raw_to_id)
        .ok_or_else(|| corrupt(schema, "?", id_field.wire_name, "id is not text".into()))?;
    let mut raws = raws.into_iter();
    let mut data = JsonObject::new();
    for field in schema.fields {
        let raw = raws.next().unwrap_or(Raw::Null);
        let value = raw_to_json(field, raw)
            .map_err(|reason| corrupt(schema, &id, field.wire_name, reason))?;
        data.insert(field.wire_name.to_owned(), value);
    }
    let mut meta_raw: Vec<Raw> = raws.collect();
    meta_raw.resize(META_COLUMNS.len(), Raw::Null);
    let mut it = meta_raw.into_iter();
    let mut next = || it.next().unwrap_or(Raw::Null);
    let bad = |col: &str, reason: String| corrupt(schema, &id, col, reason);
    let version = next()
        .as_i64()
        .ok_or_else(|| bad("_version", "not an integer".into()))?;
    let created_at = raw_to_time(next())
        .map_err(|e| bad("_created_at", e))?
        .ok_or_else(|| bad("_created_at", "NULL".into()))?;
    let updated_at = raw_to_time(next())
        .map_err(|e| bad("_updated_at", e))?
        .ok_or_else(|| bad("_updated_at", "NULL".into()))?;
    let synced = next()
        .as_bool()
        .ok_or_else(|| bad("_synced", "not a boolean".into()))?;
    let deleted = next()
        .as_bool()
        .ok_or_else(|| bad("_deleted", "not a boolean".into()))?;
    let user_id = next().into_text();
    let sync_error = next().into_text();
    let sync_attempts = next()
        .as_i64()
        .and_then(|a| i32::try_from(a).ok())
        .ok_or_else(|| bad("_sync_attempts", "not an i32".into()))?;
    debug_assert_eq!(data.len(), n);
    Ok(StoredRecord {
        id,
        data,
        meta: RecordMeta {
            version,
            created_at,
            updated_at,
            synced,
            deleted,
            user_id,
            sync_error,
            sync_attempts,
        },
    })
}

/// The id as the parameter its column takes.
pub(crate) fn id_param(
    schema: &'static ModelSchema,
    id: &str,
    backend: Backend,
) -> Result<Param, StoreError> {
    json_to_param(schema.id(), &Value::String(id.to_owned()), backend).map_err(|reason| {
        StoreError::InvalidValue {
            model: schema.model_type,
            field: schema.id().wire_name.to_owned(),
            reason,
        }
    })
}

fn invalid(schema: &'static ModelSchema, field: &FieldSpec, reason: String) -> StoreError {
    StoreError::InvalidValue {
        model: schema.model_type,
        field: field.wire_name.to_owned(),
        reason,
    }
}

/// Parameters of every field (in schema order) from a record's JSON. The id
/// is taken from `id`; a JSON id that differs is an error. A missing field
/// is null if it is an `Option`, else an error.
pub(crate) fn full_params(
    schema: &'static ModelSchema,
    id: &str,
    data: &JsonObject,
    backend: Backend,
) -> Result<Vec<Param>, StoreError> {
    schema
        .fields
        .iter()
        .map(|field| {
            if field.id {
                if let Some(given) = data.get(field.wire_name) {
                    if given.as_str() != Some(id) {
                        return Err(invalid(
                            schema,
                            field,
                            format!("the data's id {given} differs from the record id {id:?}"),
                        ));
                    }
                }
                return id_param(schema, id, backend);
            }
            match data.get(field.wire_name) {
                Some(value) => json_to_param(field, value, backend)
                    .map_err(|reason| invalid(schema, field, reason)),
                None if field.nullable => json_to_param(field, &Value::Null, backend)
                    .map_err(|reason| invalid(schema, field, reason)),
                None => Err(invalid(schema, field, "missing from the record".into())),
            }
        })
        .collect()
}

/// Parameters of the fields present in `data` (the id excluded).
pub(crate) fn partial_params(
    schema: &'static ModelSchema,
    data: &JsonObject,
    backend: Backend,
) -> Result<Vec<(&'static FieldSpec, Param)>, StoreError> {
    schema
        .fields
        .iter()
        .filter(|f| !f.id)
        .filter_map(|field| data.get(field.wire_name).map(|v| (field, v)))
        .map(|(field, value)| {
            json_to_param(field, value, backend)
                .map(|p| (field, p))
                .map_err(|reason| invalid(schema, field, reason))
        })
        .collect()
}

/// Bookkeeping of a new row.
#[derive(Debug, Clone)]
pub(crate) struct NewMeta {
    pub(crate) version: i64,
    pub(crate) now: DateTime<Utc>,
    pub(crate) synced: bool,
    pub(crate) deleted: bool,
    pub(crate) user_id: Option<String>,
}

/// Counts `(id, version, deleted)` into (`sign` 1) or out of (`sign` -1) the checksum of
/// what the store knows of the remote, when `db` is a write transaction. Rows the remote has
/// not versioned (version 0) are not in it.
pub(crate) fn note_known(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
    version: i64,
    deleted: bool,
    sign: i64,
) {
    if version <= 0 {
        return;
    }
    if let Some(deltas) = db.checksums() {
        let key = super::logic::id_key(schema, id);
        deltas.add(
            schema.model_type,
            sign,
            Checksum::of_record(&key, version, deleted, sign),
        );
    }
}

/// The id in the params of a row (at the id field's place), as text.
fn id_of_params(schema: &'static ModelSchema, params: &[Param]) -> Option<String> {
    let at = schema.fields.iter().position(|f| f.id)?;
    match params.get(at)? {
        Param::Text(Some(text)) => Some(text.clone()),
        Param::Uuid(Some(uuid)) => Some(uuid.to_string()),
        Param::I64(Some(n)) => Some(n.to_string()),
        Param::I32(Some(n)) => Some(n.to_string()),
        Param::I16(Some(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// Inserts a row; with `skip_existing`, an existing id is left alone and 0 is returned.
pub(crate) fn insert_row(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    params: Vec<Param>,
    meta: &NewMeta,
    skip_existing: bool,
) -> Result<usize, StoreError> {
    let backend = db.backend();
    let known = if meta.version > 0 && db.checksums().is_some() {
        id_of_params(schema, &params)
    } else {
        None
    };
    let mut sql = Sql::new(format!(
        "INSERT INTO {} ({}) VALUES (",
        ident(schema.table),
        select_list(schema)
    ));
    sql.bind_list(params.into_iter().chain(meta_params(meta, backend)));
    sql.push(")");
    if skip_existing {
        sql.push(" ON CONFLICT (")
            .push(&ident(schema.id().column))
            .push(") DO NOTHING");
    }
    let inserted = db.execute(sql)?;
    if let (Some(id), 1) = (known, inserted) {
        note_known(db, schema, &id, meta.version, meta.deleted, 1);
    }
    Ok(inserted)
}

/// The bookkeeping columns of a new row, in [`select_list`] order after the fields.
fn meta_params(meta: &NewMeta, backend: Backend) -> [Param; META_COLUMNS.len()] {
    let now = time_param(backend, Some(meta.now));
    [
        Param::I64(Some(meta.version)),
        now.clone(),
        now,
        Param::Bool(Some(meta.synced)),
        Param::Bool(Some(meta.deleted)),
        Param::Text(meta.user_id.clone()),
        Param::Text(None),
        Param::I32(Some(0)),
    ]
}

/// Inserts rows (each its field params and bookkeeping) with multi-row INSERTs: a page of
/// pulled records costs a few statements instead of one per record.
pub(crate) fn insert_rows(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    rows: Vec<(Vec<Param>, NewMeta)>,
) -> Result<(), StoreError> {
    const MAX_ROWS: usize = 100;
    // Far below SQLite's (32,766) and Postgres' (65,535) parameter limits.
    const MAX_PARAMS: usize = 30_000;
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let per_row = first.0.len() + META_COLUMNS.len();
    let chunk = (MAX_PARAMS / per_row).clamp(1, MAX_ROWS);
    let backend = db.backend();
    let head = format!(
        "INSERT INTO {} ({}) VALUES ",
        ident(schema.table),
        select_list(schema)
    );
    if db.checksums().is_some() {
        for (params, meta) in &rows {
            if meta.version > 0 {
                if let Some(id) = id_of_params(schema, params) {
                    note_known(db, schema, &id, meta.version, meta.deleted, 1);
                }
            }
        }
    }
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut sql = Sql::new(head.clone());
        for (n, (params, meta)) in rows.by_ref().take(chunk).enumerate() {
            sql.push(if n == 0 { "(" } else { ", (" });
            sql.bind_list(params.into_iter().chain(meta_params(&meta, backend)));
            sql.push(")");
        }
        db.execute(sql)?;
    }
    Ok(())
}

/// Bookkeeping columns to change on an existing row (`None` = leave as is).
#[derive(Debug, Clone, Default)]
pub(crate) struct MetaSet {
    pub(crate) version: Option<i64>,
    pub(crate) updated_at: Option<DateTime<Utc>>,
    pub(crate) synced: Option<bool>,
    pub(crate) deleted: Option<bool>,
    pub(crate) user_id: Option<String>,
    pub(crate) sync_error: Option<Option<String>>,
    pub(crate) sync_attempts: Option<i32>,
}

/// Updates fields and bookkeeping of row `id`; returns the rows changed.
pub(crate) fn update_row(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
    fields: Vec<(&'static FieldSpec, Param)>,
    meta: &MetaSet,
) -> Result<usize, StoreError> {
    let backend = db.backend();
    let mut sets: Vec<(String, Param)> = fields
        .into_iter()
        .filter(|(f, _)| !f.id)
        .map(|(f, p)| (ident(f.column), p))
        .collect();
    if let Some(v) = meta.version {
        sets.push(("\"_version\"".into(), Param::I64(Some(v))));
    }
    if let Some(t) = meta.updated_at {
        sets.push(("\"_updated_at\"".into(), time_param(backend, Some(t))));
    }
    if let Some(b) = meta.synced {
        sets.push(("\"_synced\"".into(), Param::Bool(Some(b))));
    }
    if let Some(b) = meta.deleted {
        sets.push(("\"_deleted\"".into(), Param::Bool(Some(b))));
    }
    if let Some(u) = &meta.user_id {
        sets.push(("\"_user_id\"".into(), Param::text(u.clone())));
    }
    if let Some(e) = &meta.sync_error {
        sets.push(("\"_sync_error\"".into(), Param::Text(e.clone())));
    }
    if let Some(a) = meta.sync_attempts {
        sets.push(("\"_sync_attempts\"".into(), Param::I32(Some(a))));
    }
    if sets.is_empty() {
        return Ok(0);
    }
    // A change of version or deletion changes what the store knows of the remote.
    let before = if (meta.version.is_some() || meta.deleted.is_some()) && db.checksums().is_some() {
        load_meta(db, schema, id)?
    } else {
        None
    };
    if let Some((version, deleted)) = before {
        note_known(db, schema, id, version, deleted, -1);
        note_known(
            db,
            schema,
            id,
            meta.version.unwrap_or(version),
            meta.deleted.unwrap_or(deleted),
            1,
        );
    }
    let mut sql = Sql::new(format!("UPDATE {} SET ", ident(schema.table)));
    for (i, (col, param)) in sets.into_iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push(&col).push(" = ").bind(param);
    }
    sql.push(" WHERE ")
        .push(&ident(schema.id().column))
        .push(" = ")
        .bind(id_param(schema, id, backend)?);
    db.execute(sql)
}

/// Every field of `params` paired with its spec (for [`update_row`]).
pub(crate) fn with_fields(
    schema: &'static ModelSchema,
    params: Vec<Param>,
) -> Vec<(&'static FieldSpec, Param)> {
    schema.fields.iter().zip(params).collect()
}

pub(crate) fn delete_row(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
) -> Result<usize, StoreError> {
    let backend = db.backend();
    if db.checksums().is_some() {
        if let Some((version, deleted)) = load_meta(db, schema, id)? {
            note_known(db, schema, id, version, deleted, -1);
        }
    }
    let mut sql = Sql::new(format!(
        "DELETE FROM {} WHERE {} = ",
        ident(schema.table),
        ident(schema.id().column)
    ));
    sql.bind(id_param(schema, id, backend)?);
    db.execute(sql)
}

/// The whole row, tombstones included.
pub(crate) fn load_row(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
) -> Result<Option<StoredRecord>, StoreError> {
    let backend = db.backend();
    let mut sql = Sql::new(format!(
        "SELECT {} FROM {} WHERE {} = ",
        select_list(schema),
        ident(schema.table),
        ident(schema.id().column)
    ));
    sql.bind(id_param(schema, id, backend)?);
    db.load(sql)?
        .into_iter()
        .next()
        .map(|raws| decode_record(schema, raws))
        .transpose()
}

/// `(version, deleted)` of a row, without decoding its fields (so a corrupt
/// row can still be deleted or overwritten).
pub(crate) fn load_meta(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
) -> Result<Option<(i64, bool)>, StoreError> {
    let backend = db.backend();
    let mut sql = Sql::new(format!(
        "SELECT \"_version\", \"_deleted\" FROM {} WHERE {} = ",
        ident(schema.table),
        ident(schema.id().column)
    ));
    sql.bind(id_param(schema, id, backend)?);
    let Some(row) = db.load(sql)?.into_iter().next() else {
        return Ok(None);
    };
    let mut it = row.into_iter();
    let version = it.next().and_then(|r| r.as_i64()).unwrap_or(0);
    let deleted = it.next().and_then(|r| r.as_bool()).unwrap_or(false);
    Ok(Some((version, deleted)))
}

/// Wire names of every field.
pub(crate) fn all_fields(schema: &ModelSchema) -> Vec<String> {
    schema
        .fields
        .iter()
        .map(|f| f.wire_name.to_owned())
        .collect()
}

/// `_synced` of a row (`false` when there is no row).
pub(crate) fn load_synced(
    db: &mut dyn Db,
    schema: &'static ModelSchema,
    id: &str,
) -> Result<bool, StoreError> {
    let backend = db.backend();
    let mut sql = Sql::new(format!(
        "SELECT \"_synced\" FROM {} WHERE {} = ",
        ident(schema.table),
        ident(schema.id().column)
    ));
    sql.bind(id_param(schema, id, backend)?);
    Ok(db
        .load(sql)?
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next())
        .and_then(|v| v.as_bool())
        .unwrap_or(false))
}
