//! Storage of records, idempotency keys and the version sequence, through Diesel on SQLite and
//! Postgres.
//!
//! The statements are written once (`ops.rs`) and compiled against each backend's concrete
//! connection type; the two backend modules add what differs: how a writing transaction takes
//! the version lock, how filters read JSON, and (Postgres) the NOTIFY that reaches other
//! instances.
//!
//! All database work is blocking and runs on tokio's blocking pool.

pub(crate) mod postgres;
pub(crate) mod schema;
mod sqlite;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::{PgConnection, SqliteConnection};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::events::ChangeEvent;
use crate::protocol::{
    EventKind, OpKind, OpStatus, Record, DELETED_KEY, ID_KEY, UPDATED_AT_KEY, VERSION_KEY,
};

const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations");

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DatabaseUrl {
    /// A SQLite file.
    Sqlite(String),
    /// A Postgres connection URL.
    Postgres(String),
}

impl DatabaseUrl {
    pub(crate) fn parse(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() || path.contains("://") {
            return Err(Error::UnsupportedDatabase(url.to_owned()));
        }
        if path == ":memory:" {
            return Err(Error::Config(
                "an in-memory SQLite database would be private to each pooled connection; \
                 use a file (e.g. in a temporary directory)"
                    .into(),
            ));
        }
        Ok(Self::Sqlite(path.to_owned()))
    }
}

/// One row of `sync_records`.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = schema::sync_records)]
pub(crate) struct RecordRow {
    pub(crate) owner: String,
    pub(crate) collection: String,
    pub(crate) id: String,
    /// The data object as JSON text, without the server-managed keys.
    pub(crate) data: String,
    pub(crate) version: i64,
    pub(crate) updated_at: String,
    pub(crate) deleted: bool,
}

impl RecordRow {
    /// The record as the wire shows it.
    pub(crate) fn to_record(&self) -> Result<Record> {
        let mut record: Record = serde_json::from_str(&self.data).map_err(|err| {
            Error::Corrupt(format!(
                "record {}/{} has invalid data: {err}",
                self.collection, self.id
            ))
        })?;
        add_managed_keys(
            &mut record,
            &self.id,
            self.version,
            &self.updated_at,
            self.deleted,
        );
        Ok(record)
    }

    /// The record as wire JSON text.
    pub(crate) fn to_json_text(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.data.len() + 96);
        write_record_json(
            &mut out,
            &self.id,
            &self.data,
            self.version,
            &self.updated_at,
            self.deleted,
        )?;
        Ok(out)
    }
}

/// The columns a pull needs.
#[derive(Debug, Clone, PartialEq, Queryable)]
pub(crate) struct PulledRow {
    pub(crate) id: String,
    pub(crate) data: String,
    pub(crate) version: i64,
    pub(crate) updated_at: String,
    pub(crate) deleted: bool,
}

impl PulledRow {
    /// Appends the record as wire JSON to `out`.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) -> Result<()> {
        write_record_json(
            out,
            &self.id,
            &self.data,
            self.version,
            &self.updated_at,
            self.deleted,
        )
    }
}

/// Writes a record as wire JSON without parsing the stored data (pulls are hot): the managed
/// keys first, then the members of the stored object.
fn write_record_json(
    out: &mut Vec<u8>,
    id: &str,
    data: &str,
    version: i64,
    updated_at: &str,
    deleted: bool,
) -> Result<()> {
    use std::io::Write as _;
    let data = data.trim();
    let Some(inner) = data.strip_prefix('{').and_then(|d| d.strip_suffix('}')) else {
        return Err(Error::Corrupt(format!(
            "record {id:?} data is not a JSON object"
        )));
    };
    let corrupt = |e: &dyn std::fmt::Display| Error::Corrupt(e.to_string());
    out.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut *out, id).map_err(|e| corrupt(&e))?;
    write!(out, ",\"version\":{version},\"updated_at\":").map_err(|e| corrupt(&e))?;
    serde_json::to_writer(&mut *out, updated_at).map_err(|e| corrupt(&e))?;
    if deleted {
        out.extend_from_slice(b",\"deleted\":true");
    }
    if !inner.trim().is_empty() {
        out.push(b',');
        out.extend_from_slice(inner.as_bytes());
    }
    out.push(b'}');
    Ok(())
}

fn add_managed_keys(record: &mut Record, id: &str, version: i64, updated_at: &str, deleted: bool) {
    record.insert(ID_KEY.into(), Value::String(id.to_owned()));
    record.insert(VERSION_KEY.into(), Value::from(version));
    record.insert(UPDATED_AT_KEY.into(), Value::String(updated_at.to_owned()));
    if deleted {
        record.insert(DELETED_KEY.into(), Value::Bool(true));
    }
}

/// One row of `sync_idempotency`.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = schema::sync_idempotency)]
pub(crate) struct IdemRow {
    pub(crate) owner: String,
    pub(crate) idem_key: String,
    pub(crate) collection: String,
    pub(crate) op: String,
    pub(crate) record_id: String,
    /// The [`RawResult`] returned when the key was first applied, as JSON.
    pub(crate) result: String,
    pub(crate) created_at: String,
}

/// A validated write, ready for the database.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WriteOp {
    pub(crate) key: Option<String>,
    pub(crate) collection: String,
    pub(crate) kind: OpKind,
    pub(crate) id: String,
    /// The id was generated by the server (a create without id); a replay will carry none.
    pub(crate) id_generated: bool,
    pub(crate) base_version: Option<i64>,
    /// Data without the server-managed keys (empty for deletes).
    pub(crate) data: Map<String, Value>,
    /// `data` as JSON text for creates and replaces, serialised before the write lock is taken.
    pub(crate) data_text: Option<String>,
}

/// The result of one op with the record kept as JSON text, so results are stored, replayed and
/// sent without rebuilding JSON trees. Serialises exactly like
/// [`OpResult`](crate::protocol::OpResult).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RawResult {
    pub(crate) status: OpStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) record: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) code: Option<String>,
}

impl RawResult {
    /// A rejection with a machine-readable `code` and a message for people.
    pub(crate) fn rejected(code: &str, message: String) -> Self {
        Self {
            status: OpStatus::Rejected,
            version: None,
            record: None,
            error: Some(message),
            code: Some(code.to_owned()),
        }
    }
}

fn raw_record(text: Vec<u8>) -> Result<Box<RawValue>> {
    let text = String::from_utf8(text).map_err(|err| Error::Corrupt(err.to_string()))?;
    RawValue::from_string(text).map_err(|err| Error::Corrupt(err.to_string()))
}

fn corrupt_data(row: &RecordRow, err: &serde_json::Error) -> Error {
    Error::Corrupt(format!(
        "record {}/{} has invalid data: {err}",
        row.collection, row.id
    ))
}

/// An equality filter of a pull: top-level `field` equals `value` (compared as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) field: String,
    pub(crate) value: String,
}

/// What a committed write produced.
#[derive(Debug)]
pub(crate) struct WriteOutcome {
    /// One result per op, in order.
    pub(crate) results: Vec<RawResult>,
    /// Change events of the applied ops, in version order; publish only after commit.
    pub(crate) events: Vec<ChangeEvent>,
}

/// Applies ops in memory on top of the rows loaded inside the writing transaction.
///
/// Validation happens here, before anything is written, so a rejected or conflicting op
/// leaves no trace and the ops around it are unaffected.
struct Planner {
    owner: String,
    version: i64,
    now: String,
    records: HashMap<(String, String), RecordRow>,
    dirty: Vec<(String, String)>,
    dirty_set: HashSet<(String, String)>,
    keys: HashMap<String, IdemRow>,
    new_keys: Vec<IdemRow>,
    events: Vec<ChangeEvent>,
    want_events: bool,
}

fn rejected(code: &str, message: String) -> RawResult {
    RawResult::rejected(code, message)
}

impl Planner {
    fn new(
        owner: &str,
        version: i64,
        loaded: Vec<RecordRow>,
        keys: Vec<IdemRow>,
        want_events: bool,
    ) -> Self {
        Self {
            owner: owner.to_owned(),
            version,
            now: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            records: loaded
                .into_iter()
                .map(|row| ((row.collection.clone(), row.id.clone()), row))
                .collect(),
            dirty: Vec::new(),
            dirty_set: HashSet::new(),
            keys: keys
                .into_iter()
                .map(|row| (row.idem_key.clone(), row))
                .collect(),
            new_keys: Vec::new(),
            events: Vec::new(),
            want_events,
        }
    }

    fn apply(&mut self, op: &WriteOp) -> Result<RawResult> {
        if let Some(key) = &op.key {
            if let Some(stored) = self.keys.get(key) {
                let same = stored.collection == op.collection
                    && stored.op == op.kind.as_str()
                    && (op.id_generated || stored.record_id == op.id);
                if !same {
                    return Ok(rejected(
                        "idempotency_key_reused",
                        format!(
                            "idempotency key {key:?} was already used for a different operation \
                             ({} {} {}); use a new key for a new operation",
                            stored.op, stored.collection, stored.record_id
                        ),
                    ));
                }
                return serde_json::from_str(&stored.result).map_err(|err| {
                    Error::Corrupt(format!("stored result of idempotency key {key:?}: {err}"))
                });
            }
        }

        let slot = (op.collection.clone(), op.id.clone());
        let current = self.records.get(&slot);
        let (data_text, deleted, event) = match op.kind {
            OpKind::Create | OpKind::Replace => {
                if op.kind == OpKind::Create {
                    if let Some(cur) = current {
                        if !cur.deleted {
                            return conflict(
                                cur,
                                format!("record {:?} already exists in {:?}", op.id, op.collection),
                            );
                        }
                        if let Some(base) = op.base_version {
                            if base != cur.version {
                                return conflict(cur, version_message(base, cur.version));
                            }
                        }
                    }
                } else {
                    let Some(cur) = current else {
                        return Ok(not_found(op));
                    };
                    if let Some(base) = op.base_version {
                        if base != cur.version {
                            return conflict(cur, version_message(base, cur.version));
                        }
                    }
                    if cur.deleted {
                        return Ok(not_found(op));
                    }
                }
                let text = match &op.data_text {
                    Some(text) => text.clone(),
                    None => serde_json::to_string(&op.data)
                        .map_err(|err| Error::Corrupt(err.to_string()))?,
                };
                let kind = if op.kind == OpKind::Create {
                    EventKind::Created
                } else {
                    EventKind::Updated
                };
                (text, false, kind)
            }
            OpKind::Update | OpKind::Delete => {
                let Some(cur) = current else {
                    return Ok(not_found(op));
                };
                if let Some(base) = op.base_version {
                    if base != cur.version {
                        return conflict(cur, version_message(base, cur.version));
                    }
                }
                if cur.deleted {
                    return Ok(not_found(op));
                }
                if op.kind == OpKind::Update {
                    let mut merged: Map<String, Value> =
                        serde_json::from_str(&cur.data).map_err(|err| corrupt_data(cur, &err))?;
                    for (k, v) in &op.data {
                        merged.insert(k.clone(), v.clone());
                    }
                    let text = serde_json::to_string(&merged)
                        .map_err(|err| Error::Corrupt(err.to_string()))?;
                    (text, false, EventKind::Updated)
                } else {
                    // A tombstone keeps its last data so that filtered pulls and
                    // subscriptions still match it.
                    (cur.data.clone(), true, EventKind::Deleted)
                }
            }
        };

        self.version += 1;
        let row = RecordRow {
            owner: self.owner.clone(),
            collection: op.collection.clone(),
            id: op.id.clone(),
            data: data_text,
            version: self.version,
            updated_at: self.now.clone(),
            deleted,
        };
        let record = raw_record(row.to_json_text()?)?;
        if self.want_events {
            let data: Record = serde_json::from_str(record.get())
                .map_err(|err| Error::Corrupt(err.to_string()))?;
            self.events.push(ChangeEvent::new(
                &self.owner,
                event,
                &op.collection,
                &op.id,
                self.version,
                data,
            ));
        }
        let result = RawResult {
            status: OpStatus::Applied,
            version: Some(self.version),
            record: Some(record),
            error: None,
            code: None,
        };
        if self.dirty_set.insert(slot.clone()) {
            self.dirty.push(slot.clone());
        }
        self.records.insert(slot, row);
        if let Some(key) = &op.key {
            let stored = IdemRow {
                owner: self.owner.clone(),
                idem_key: key.clone(),
                collection: op.collection.clone(),
                op: op.kind.as_str().to_owned(),
                record_id: op.id.clone(),
                result: serde_json::to_string(&result)
                    .map_err(|err| Error::Corrupt(err.to_string()))?,
                created_at: self.now.clone(),
            };
            self.keys.insert(key.clone(), stored.clone());
            self.new_keys.push(stored);
        }
        Ok(result)
    }

    /// Rows to upsert, keys to insert, events, and the last version used.
    fn finish(mut self) -> (Vec<RecordRow>, Vec<IdemRow>, Vec<ChangeEvent>, i64) {
        let rows = self
            .dirty
            .iter()
            .filter_map(|slot| self.records.remove(slot))
            .collect();
        (rows, self.new_keys, self.events, self.version)
    }
}

fn version_message(base: i64, current: i64) -> String {
    format!(
        "version conflict: the change is based on version {base} but the record is at version \
         {current}; merge with the current record and retry with If-Match/base_version {current}"
    )
}

fn conflict(current: &RecordRow, message: String) -> Result<RawResult> {
    Ok(RawResult {
        status: OpStatus::Conflict,
        version: Some(current.version),
        record: Some(raw_record(current.to_json_text()?)?),
        error: Some(message),
        code: Some("conflict".into()),
    })
}

fn not_found(op: &WriteOp) -> RawResult {
    rejected(
        "not_found",
        format!("no record {:?} in {:?}", op.id, op.collection),
    )
}

type SqlitePool = Pool<ConnectionManager<SqliteConnection>>;
type PgPool = Pool<ConnectionManager<PgConnection>>;

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

/// Settings of the Postgres NOTIFY that carries events to other instances.
#[derive(Debug, Clone)]
pub(crate) struct NotifyTarget {
    /// The channel (derived from the schema, so separate schemas do not hear each other).
    pub(crate) channel: String,
    /// This instance's id, so it can skip its own notifications.
    pub(crate) instance: String,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    backend: Backend,
    /// SQLite has one writer at a time anyway; queueing writers here instead of in SQLite's
    /// busy handler (which sleeps) keeps write latency low. `BEGIN IMMEDIATE` still guards
    /// against other processes.
    write_lock: Arc<Mutex<()>>,
    notify: Option<NotifyTarget>,
    url: DatabaseUrl,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Pg(_) => "postgres",
        };
        f.debug_struct("Store").field("backend", &backend).finish()
    }
}

async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|err| Error::Task(err.to_string()))?
}

impl Store {
    /// Connects, runs the embedded migrations and returns the store.
    pub(crate) async fn open(url: DatabaseUrl, pool_size: u32) -> Result<Self> {
        let url2 = url.clone();
        blocking(move || {
            let (backend, notify) = match &url2 {
                DatabaseUrl::Sqlite(path) => {
                    (Backend::Sqlite(sqlite::open(path, pool_size)?), None)
                }
                DatabaseUrl::Postgres(url) => {
                    let (pool, channel) = postgres::open(url, pool_size)?;
                    let notify = NotifyTarget {
                        channel,
                        instance: uuid::Uuid::new_v4().simple().to_string(),
                    };
                    (Backend::Pg(pool), Some(notify))
                }
            };
            Ok(Store {
                backend,
                write_lock: Arc::new(Mutex::new(())),
                notify,
                url: url2,
            })
        })
        .await
    }

    /// The Postgres NOTIFY target, when on Postgres.
    pub(crate) fn notify_target(&self) -> Option<&NotifyTarget> {
        self.notify.as_ref()
    }

    /// The database URL.
    pub(crate) fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// One record of `owner`, tombstones included.
    pub(crate) async fn get(
        &self,
        owner: &str,
        collection: &str,
        id: &str,
    ) -> Result<Option<RecordRow>> {
        let backend = self.backend.clone();
        let (owner, collection, id) = (owner.to_owned(), collection.to_owned(), id.to_owned());
        blocking(move || match backend {
            Backend::Sqlite(pool) => sqlite::get(
                &mut *pool.get().map_err(Error::Pool)?,
                &owner,
                &collection,
                &id,
            ),
            Backend::Pg(pool) => postgres::get(
                &mut *pool.get().map_err(Error::Pool)?,
                &owner,
                &collection,
                &id,
            ),
        })
        .await
    }

    /// Up to `limit` records of `owner`'s collection with a version above `since`, in version
    /// order, tombstones included, skipping the first `offset` of them.
    pub(crate) async fn pull(
        &self,
        owner: &str,
        collection: &str,
        since: i64,
        limit: i64,
        offset: i64,
        filters: Vec<Filter>,
    ) -> Result<Vec<PulledRow>> {
        let backend = self.backend.clone();
        let (owner, collection) = (owner.to_owned(), collection.to_owned());
        blocking(move || match backend {
            Backend::Sqlite(pool) => sqlite::pull(
                &mut *pool.get().map_err(Error::Pool)?,
                &owner,
                &collection,
                since,
                limit,
                offset,
                &filters,
            ),
            Backend::Pg(pool) => postgres::pull(
                &mut *pool.get().map_err(Error::Pool)?,
                &owner,
                &collection,
                since,
                limit,
                offset,
                &filters,
            ),
        })
        .await
    }

    /// Applies `ops` for `owner` in one transaction under the version lock. Each op succeeds or
    /// fails on its own; a database error fails the whole call and applies nothing.
    pub(crate) async fn write(
        &self,
        owner: &str,
        ops: Vec<WriteOp>,
        want_events: bool,
    ) -> Result<WriteOutcome> {
        let backend = self.backend.clone();
        let owner = owner.to_owned();
        let lock = self.write_lock.clone();
        let notify = self.notify.clone();
        blocking(move || match backend {
            Backend::Sqlite(pool) => {
                let mut conn = pool.get().map_err(Error::Pool)?;
                let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
                sqlite::write(&mut conn, &owner, &ops, want_events, None)
            }
            Backend::Pg(pool) => postgres::write(
                &mut *pool.get().map_err(Error::Pool)?,
                &owner,
                &ops,
                want_events,
                notify.as_ref(),
            ),
        })
        .await
    }
}

/// Pool settings shared by both backends.
fn pool_builder<M: diesel::r2d2::ManageConnection>(size: u32) -> diesel::r2d2::Builder<M> {
    Pool::builder()
        .max_size(size.max(1))
        .connection_timeout(Duration::from_secs(30))
}

/// Loads the records of the ops' slots, in chunks that stay under bind-parameter limits.
fn ids_by_collection(ops: &[WriteOp]) -> HashMap<&str, Vec<&str>> {
    let mut by: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut seen = HashSet::new();
    for op in ops {
        if seen.insert((op.collection.as_str(), op.id.as_str())) {
            by.entry(op.collection.as_str())
                .or_default()
                .push(op.id.as_str());
        }
    }
    by
}

/// The SQLite JSON path of a top-level key.
fn sqlite_json_path(field: &str) -> String {
    format!("$.\"{field}\"")
}
