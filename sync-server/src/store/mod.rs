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
use std::sync::atomic::AtomicI32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::{PgConnection, SqliteConnection};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::events::RawEvent;
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
    /// The idempotency key of the op that wrote this version, whose result is rebuilt from
    /// this row until it changes (see [`IdemRow::record_version`]).
    pub(crate) idem_key: Option<String>,
    /// The kind of that op ([`OpKind::as_str`]). Set when the key lives on this row only;
    /// `None` on rows written before keys moved onto records, whose keys have a
    /// `sync_idempotency` row of their own.
    pub(crate) idem_op: Option<String>,
}

impl RecordRow {
    /// The idempotency key this row holds (without a `sync_idempotency` row of its own), as
    /// such a row would read, with its result to be rebuilt from this row.
    fn held_key(&self) -> Option<IdemRow> {
        Some(IdemRow {
            owner: self.owner.clone(),
            idem_key: self.idem_key.clone()?,
            collection: self.collection.clone(),
            op: self.idem_op.clone()?,
            record_id: self.id.clone(),
            result: String::new(),
            created_at: self.updated_at.clone(),
            record_version: Some(self.version),
        })
    }
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

    /// The record as wire JSON text, as a `String`.
    pub(crate) fn to_json_string(&self) -> Result<String> {
        String::from_utf8(self.to_json_text()?).map_err(|err| Error::Corrupt(err.to_string()))
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
    /// The [`RawResult`] returned when the key was first applied, as JSON; empty while
    /// `record_version` is set.
    pub(crate) result: String,
    pub(crate) created_at: String,
    /// Set while the record is still at the version this key's op wrote: the result is then
    /// the applied result of that row, rebuilt from it rather than stored twice. The writer
    /// that next changes the row stores the full result and clears this.
    pub(crate) record_version: Option<i64>,
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
    /// The keys an update merges into the record, without the server-managed keys (empty for
    /// the other kinds).
    pub(crate) data: Map<String, Value>,
    /// The data object as JSON text for creates and replaces, without the server-managed keys;
    /// built before the write lock is taken.
    pub(crate) data_text: Option<String>,
}

/// The result of one op with the record kept as JSON text, so results are stored, replayed and
/// sent without rebuilding JSON trees. [`RawResult::write_json`] writes it exactly like
/// [`OpResult`](crate::protocol::OpResult) serialises.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawResult {
    pub(crate) status: OpStatus,
    pub(crate) version: Option<i64>,
    /// The record as JSON text: written by this server, or taken verbatim from a stored result.
    pub(crate) record: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) code: Option<String>,
}

/// The shape of a stored result, for reading it back.
#[derive(Deserialize)]
struct StoredResult<'a> {
    status: OpStatus,
    #[serde(default)]
    version: Option<i64>,
    #[serde(default, borrow)]
    record: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    code: Option<String>,
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

    /// The result of an op that wrote `row`. A replay of its idempotency key rebuilds the same
    /// bytes from the same row, as long as the row is at that version.
    fn applied(row: &RecordRow) -> Result<Self> {
        Ok(Self {
            status: OpStatus::Applied,
            version: Some(row.version),
            record: Some(row.to_json_string()?),
            error: None,
            code: None,
        })
    }

    /// Reads a result written by [`RawResult::write_json`] (or, before it, by serde).
    fn parse_stored(text: &str) -> serde_json::Result<Self> {
        let stored: StoredResult<'_> = serde_json::from_str(text)?;
        Ok(Self {
            status: stored.status,
            version: stored.version,
            record: stored.record.map(|r| r.get().to_owned()),
            error: stored.error,
            code: stored.code,
        })
    }

    /// Appends the result as JSON: `{"status", "version"?, "record"?, "error"?, "code"?}`, the
    /// order and omissions of the serde derive that stored results were first written with.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) -> Result<()> {
        let corrupt = |e: serde_json::Error| Error::Corrupt(e.to_string());
        out.extend_from_slice(b"{\"status\":");
        serde_json::to_writer(&mut *out, &self.status).map_err(corrupt)?;
        if let Some(version) = self.version {
            out.extend_from_slice(b",\"version\":");
            out.extend_from_slice(version.to_string().as_bytes());
        }
        if let Some(record) = &self.record {
            out.extend_from_slice(b",\"record\":");
            out.extend_from_slice(record.as_bytes());
        }
        if let Some(error) = &self.error {
            out.extend_from_slice(b",\"error\":");
            serde_json::to_writer(&mut *out, error).map_err(corrupt)?;
        }
        if let Some(code) = &self.code {
            out.extend_from_slice(b",\"code\":");
            serde_json::to_writer(&mut *out, code).map_err(corrupt)?;
        }
        out.push(b'}');
        Ok(())
    }

    fn to_json_string(&self) -> Result<String> {
        let mut out = Vec::with_capacity(self.record.as_ref().map_or(0, String::len) + 64);
        self.write_json(&mut out)?;
        String::from_utf8(out).map_err(|err| Error::Corrupt(err.to_string()))
    }
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
    pub(crate) events: Vec<RawEvent>,
}

/// A stored idempotency key whose result must now be stored in full, because the record row
/// it was rebuilt from is about to change.
#[derive(Debug)]
pub(crate) struct Materialized {
    /// The key's row with its full result.
    pub(crate) row: IdemRow,
    /// The version the result was rebuilt from.
    pub(crate) version: i64,
    /// The key lived on the record row only (the row names its op): its row is inserted.
    /// Otherwise it was stored before keys moved onto records, and its lazy row, which names
    /// `version`, is updated.
    pub(crate) held: bool,
}

/// What a planned batch writes.
pub(crate) struct Plan {
    /// Rows to upsert.
    rows: Vec<RecordRow>,
    /// Keys to insert.
    new_keys: Vec<IdemRow>,
    /// Stored keys whose full result to store.
    materialized: Vec<Materialized>,
    events: Vec<RawEvent>,
    /// The last version used.
    last_version: i64,
}

/// An idempotency key known to the planner.
struct KeyEntry {
    row: IdemRow,
    /// Made by this batch rather than loaded.
    new: bool,
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
    keys: HashMap<String, KeyEntry>,
    new_keys: Vec<String>,
    materialized: Vec<Materialized>,
    events: Vec<RawEvent>,
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
                .map(|row| (row.idem_key.clone(), KeyEntry { row, new: false }))
                .collect(),
            new_keys: Vec::new(),
            materialized: Vec::new(),
            events: Vec::new(),
            want_events,
        }
    }

    fn apply(&mut self, op: &WriteOp) -> Result<RawResult> {
        if let Some(key) = &op.key {
            if let Some(KeyEntry { row: stored, .. }) = self.keys.get(key) {
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
                return stored_result(stored, &self.records);
            }
        }

        let slot = (op.collection.clone(), op.id.clone());
        let current = self.records.get(&slot);
        let (data_text, deleted, event) = match op.kind {
            OpKind::Create | OpKind::Replace => {
                if op.kind == OpKind::Create {
                    // A create over a tombstone re-creates the record (a new version replaces
                    // the tombstone), whatever version the client last saw.
                    if let Some(cur) = current.filter(|cur| !cur.deleted) {
                        return conflict(
                            cur,
                            format!("record {:?} already exists in {:?}", op.id, op.collection),
                        );
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
                    if op.kind == OpKind::Delete {
                        // Nothing to delete: the delete has reached its goal.
                        return Ok(already_gone(None));
                    }
                    return Ok(not_found(op));
                };
                if cur.deleted && op.kind == OpKind::Delete {
                    return Ok(already_gone(Some(cur)));
                }
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
        // The row is about to change: a key whose result is rebuilt from it needs that result
        // stored first.
        let superseded = match current {
            Some(
                cur @ RecordRow {
                    idem_key: Some(_), ..
                },
            ) => Some((cur.clone(), RawResult::applied(cur)?.to_json_string()?)),
            _ => None,
        };
        if let Some((cur, result)) = superseded {
            self.materialize(&cur, result);
        }

        self.version += 1;
        let row = RecordRow {
            owner: self.owner.clone(),
            collection: op.collection.clone(),
            id: op.id.clone(),
            data: data_text,
            version: self.version,
            updated_at: self.now.clone(),
            deleted,
            idem_key: op.key.clone(),
            idem_op: op.key.as_ref().map(|_| op.kind.as_str().to_owned()),
        };
        let result = RawResult::applied(&row)?;
        if self.want_events {
            self.events.push(RawEvent {
                owner: self.owner.clone(),
                kind: event,
                collection: op.collection.clone(),
                id: op.id.clone(),
                version: self.version,
                record: result.record.clone().unwrap_or_default(),
            });
        }
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
                result: String::new(),
                created_at: self.now.clone(),
                record_version: Some(self.version),
            };
            self.keys.insert(
                key.clone(),
                KeyEntry {
                    row: stored,
                    new: true,
                },
            );
            self.new_keys.push(key.clone());
        }
        Ok(result)
    }

    /// Stores `result` as the full result of the key `cur` holds, which was rebuilt from
    /// `cur` until now.
    fn materialize(&mut self, cur: &RecordRow, result: String) {
        let Some(key) = cur.idem_key.clone() else {
            return;
        };
        let row = match self.keys.get_mut(&key) {
            Some(entry) => {
                if entry.row.record_version != Some(cur.version) {
                    return;
                }
                entry.row.record_version = None;
                entry.row.result = result;
                if entry.new {
                    // Inserted with the batch's keys, now with its full result.
                    return;
                }
                entry.row.clone()
            }
            // A key of an earlier batch that this one does not mention.
            None => IdemRow {
                owner: cur.owner.clone(),
                idem_key: key,
                collection: cur.collection.clone(),
                // Rows from before keys moved onto records name no op; their keys have a
                // lazy `sync_idempotency` row, which is updated and keeps its own op.
                op: cur.idem_op.clone().unwrap_or_default(),
                record_id: cur.id.clone(),
                result,
                created_at: cur.updated_at.clone(),
                record_version: None,
            },
        };
        self.materialized.push(Materialized {
            row,
            version: cur.version,
            held: cur.idem_op.is_some(),
        });
    }

    fn finish(mut self) -> Plan {
        let rows = self
            .dirty
            .iter()
            .filter_map(|slot| self.records.remove(slot))
            .collect();
        // A new key whose record row still holds it needs no row of its own; one whose row
        // this batch changed again is stored with its full result.
        let new_keys = self
            .new_keys
            .iter()
            .filter_map(|key| self.keys.remove(key).map(|entry| entry.row))
            .filter(|row| row.record_version.is_none())
            .collect();
        Plan {
            rows,
            new_keys,
            materialized: self.materialized,
            events: self.events,
            last_version: self.version,
        }
    }
}

/// The result a stored key returns: its full stored result, or the applied result rebuilt from
/// its record, which is still at the version the key's op wrote.
fn stored_result(
    stored: &IdemRow,
    records: &HashMap<(String, String), RecordRow>,
) -> Result<RawResult> {
    let Some(version) = stored.record_version else {
        return RawResult::parse_stored(&stored.result).map_err(|err| {
            Error::Corrupt(format!(
                "stored result of idempotency key {:?}: {err}",
                stored.idem_key
            ))
        });
    };
    let slot = (stored.collection.clone(), stored.record_id.clone());
    match records.get(&slot) {
        Some(row) if row.version == version => RawResult::applied(row),
        _ => Err(Error::Corrupt(format!(
            "idempotency key {:?} refers to version {version} of record {}/{}, which is gone",
            stored.idem_key, stored.collection, stored.record_id
        ))),
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
        record: Some(current.to_json_string()?),
        error: Some(message),
        code: Some("conflict".into()),
    })
}

/// A delete of a record that is absent or already a tombstone: applied, changing nothing (the
/// tombstone's version, or 0 when there never was a record).
fn already_gone(tombstone: Option<&RecordRow>) -> RawResult {
    RawResult {
        status: OpStatus::Applied,
        version: Some(tombstone.map_or(0, |t| t.version)),
        record: None,
        error: None,
        code: None,
    }
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
    /// The backend pid of this instance's listening session (0 while it has none). A writer
    /// sends a NOTIFY only when some other instance's listening session exists.
    pub(crate) listener_pid: Arc<AtomicI32>,
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
                        listener_pid: Arc::new(AtomicI32::new(0)),
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

/// The SQLite JSON path of a top-level key.
fn sqlite_json_path(field: &str) -> String {
    format!("$.\"{field}\"")
}
