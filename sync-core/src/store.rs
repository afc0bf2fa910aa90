//! The local store contract the sync engine drives.
//!
//! The trait is synchronous and object-safe: every store this project ships
//! (SQLite and Postgres through Diesel) does blocking I/O, so the engine calls
//! it from `tokio::task::spawn_blocking` and keeps it as `Arc<dyn LocalStore>`.
//! Records cross the boundary untyped, as JSON objects keyed by wire name and
//! described by the model's [`ModelSchema`]; the engine converts them to and
//! from the typed model with serde.
//!
//! Every method that changes both a record and the outbox does so in ONE
//! transaction. That is the whole point of this trait: a crash can never leave
//! a local write without its queued operation, or the reverse.
//!
//! This module holds everything an implementation needs, and only here: the trait, its
//! error, the records, outbox ops and conflicts it reads and writes, and the untyped form of
//! a query. The manager hands some of them to applications too
//! ([`RecordState`], [`OutboxOp`], [`QuarantinedRecord`], [`Resolution`] for a custom
//! conflict resolver).

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sync_schema::ModelSchema;

/// The untyped form of a query ([`StoreQuery`]'s filter and sort keys), which a store
/// translates to SQL; applications build it through the typed [`Query`](crate::Query).
pub use crate::query::{CompareOp, Filter, OrderBy};

/// A JSON object keyed by wire name.
pub type JsonObject = Map<String, Value>;

/// Errors a store reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file exists but is not a database this store can open.
    #[error("{path} is not a SQLite database (or is corrupt); move it away or point the store at another file")]
    NotADatabase {
        /// The path opened.
        path: String,
    },
    /// The store was written by a newer bookkeeping schema than this build knows.
    #[error("store at {path} was written by a newer schema version {found}; this build knows {known}: upgrade the application")]
    NewerSchema {
        /// The path or URL opened.
        path: String,
        /// Version found in the store.
        found: i64,
        /// Highest version this build knows.
        known: i64,
    },
    /// The directory for the database is missing or not writable.
    #[error("cannot open store at {path}: {reason}")]
    Unavailable {
        /// The path or URL.
        path: String,
        /// What went wrong, and what to do.
        reason: String,
    },
    /// A stored row does not convert back into the model.
    #[error("stored {model} `{id}`: field `{field}` cannot be read: {reason}")]
    CorruptRow {
        /// Model type.
        model: &'static str,
        /// Record id.
        id: String,
        /// Wire name of the field.
        field: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A value given to the store does not fit the field's column type.
    #[error("{model}: value for field `{field}` does not fit its column: {reason}")]
    InvalidValue {
        /// Model type.
        model: &'static str,
        /// Wire name of the field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The model's table is missing and auto-migration is off.
    #[error("table `{table}` for model {model} does not exist; run your migrations or enable auto_migrate")]
    MissingTable {
        /// Model type.
        model: &'static str,
        /// Table name.
        table: &'static str,
    },
    /// An outbox operation that the caller named does not exist (or is in the wrong state).
    #[error("outbox operation {seq} not found{detail}")]
    UnknownOp {
        /// Its sequence number.
        seq: i64,
        /// More context, starting with a separator, or empty.
        detail: String,
    },
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(String),
}

/// `Result` of store operations.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// Kind of a queued operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// The record does not exist remotely yet.
    Create,
    /// Some fields changed (`changed_fields`).
    Update,
    /// The record is to be deleted remotely.
    Delete,
}

impl OpKind {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Update => "update",
            OpKind::Delete => "delete",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<OpKind> {
        match text {
            "create" => Some(OpKind::Create),
            "update" => Some(OpKind::Update),
            "delete" => Some(OpKind::Delete),
            _ => None,
        }
    }
}

/// State of a queued operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpState {
    /// Waiting to be sent (when `next_attempt_at` is due).
    Pending,
    /// Being sent now. Never modified by a local edit; reset to pending on open.
    Inflight,
    /// Refused permanently by the remote; kept until retried or discarded.
    Failed,
}

impl OpState {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Pending => "pending",
            OpState::Inflight => "inflight",
            OpState::Failed => "failed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<OpState> {
        match text {
            "pending" => Some(OpState::Pending),
            "inflight" => Some(OpState::Inflight),
            "failed" => Some(OpState::Failed),
            _ => None,
        }
    }
}

/// One entry of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxOp {
    /// Order of creation; also the op's identity.
    pub seq: i64,
    /// The model's `MODEL_TYPE`.
    pub model_type: String,
    /// The record's id.
    pub record_id: String,
    /// Owner, if the application set one.
    pub user_id: Option<String>,
    /// What to do remotely.
    pub op: OpKind,
    /// Wire names of the changed fields (updates); empty for create and delete.
    pub changed_fields: Vec<String>,
    /// Server version the change is based on (0 = never acknowledged).
    pub base_version: i64,
    /// Values of `changed_fields` before the first coalesced edit (for three-way merges).
    pub base_values: JsonObject,
    /// Unique key the remote uses to apply the op at most once.
    pub idempotency_key: String,
    /// Higher is sent first.
    pub priority: i32,
    /// Failed attempts so far.
    pub attempts: i32,
    /// Not sent before this time.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Last error, for people.
    pub last_error: Option<String>,
    /// State.
    pub state: OpState,
    /// When the op was queued.
    pub created_at: DateTime<Utc>,
    /// The op may have reached the remote (it was handed to it at least once). From then on
    /// its content, idempotency key and base version are frozen until an answer settles it:
    /// later edits of the record queue a new op behind it.
    pub sent: bool,
}

/// Bookkeeping of a stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordMeta {
    /// Server version last seen (0 = never acknowledged).
    pub version: i64,
    /// Local creation time.
    pub created_at: DateTime<Utc>,
    /// Local last-write time.
    pub updated_at: DateTime<Utc>,
    /// No local change is waiting to be sent.
    pub synced: bool,
    /// Deleted locally; the remote delete is queued.
    pub deleted: bool,
    /// Owner.
    pub user_id: Option<String>,
    /// Last permanent sync error.
    pub sync_error: Option<String>,
    /// Failed sync attempts of the current change.
    pub sync_attempts: i32,
}

/// A record as stored: the model's fields and the bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// The record's id.
    pub id: String,
    /// Fields by wire name (every field of the schema).
    pub data: JsonObject,
    /// Bookkeeping.
    pub meta: RecordMeta,
}

/// A query in the untyped form stores translate to SQL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreQuery {
    /// Filter, if any.
    pub filter: Option<Filter>,
    /// Sort keys; ties and unsorted queries are ordered by id.
    pub order: Vec<OrderBy>,
    /// At most this many rows.
    pub limit: Option<u64>,
    /// Skip this many rows.
    pub offset: Option<u64>,
    /// Include locally deleted records (tombstones awaiting their remote delete).
    pub include_deleted: bool,
}

/// A local save: the whole record after the edit.
#[derive(Debug, Clone)]
pub struct LocalWrite<'a> {
    /// The model.
    pub schema: &'static ModelSchema,
    /// Record id.
    pub id: &'a str,
    /// Every field by wire name.
    pub data: &'a JsonObject,
    /// Owner recorded on the row and the op.
    pub user_id: Option<&'a str>,
    /// Priority of the queued op.
    pub priority: i32,
    /// Queue an outbox op. `false` writes the row as synced with `version`
    /// (used after the remote accepted a write synchronously).
    pub enqueue: bool,
    /// Server version to record when `enqueue` is false.
    pub version: Option<i64>,
}

/// What a save did.
#[derive(Debug, Clone, PartialEq)]
pub struct SaveOutcome {
    /// The record did not exist (or was a tombstone) before.
    pub created: bool,
    /// Wire names of the fields that changed (every field for a create).
    pub changed_fields: Vec<String>,
    /// The op that now carries the change, after coalescing (`None` when
    /// nothing changed or `enqueue` was false).
    pub op_seq: Option<i64>,
}

/// An op marked in flight by [`LocalStore::claim_ops`], with its record as stored at that
/// moment: exactly what the push sends.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedOp {
    /// The op as marked.
    pub op: OutboxOp,
    /// Its record (tombstones included), `None` if the row is gone.
    pub record: Option<StoredRecord>,
}

/// One acknowledgement for [`LocalStore::ack_ops`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    /// The op the remote accepted.
    pub seq: i64,
    /// The server version after it.
    pub version: i64,
    /// The record as the server has it now, when it sent one.
    pub data: Option<JsonObject>,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteOutcome {
    /// A record existed.
    pub existed: bool,
    /// The op that now carries the delete (`None` if a never-sent create was
    /// simply dropped together with the row, or the record did not exist).
    pub op_seq: Option<i64>,
}

/// A record received from the remote (pull page, push response or realtime event).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteRecord {
    /// Record id.
    pub id: String,
    /// Server version.
    pub version: i64,
    /// Tombstone: the record was deleted remotely.
    pub deleted: bool,
    /// Fields by wire name (may be partial for tombstones).
    pub data: JsonObject,
    /// Server's update time, if sent.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A remote record kept aside because it does not fit its model (or could not be read): the
/// pull moves past it, and [`SyncManager::retry_quarantined`](crate::SyncManager::retry_quarantined)
/// tries it again (after a model change it may fit).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QuarantinedRecord {
    /// The record id, or a hash of `raw` when it has no usable id; unique per model.
    pub key: String,
    /// The record id, if it had one.
    pub id: Option<String>,
    /// The record as the remote sent it.
    pub raw: Value,
    /// Why it was refused.
    pub error: String,
    /// When it was (last) kept aside.
    pub quarantined_at: DateTime<Utc>,
}

impl QuarantinedRecord {
    /// A record refused now; its key is its id, or a stable hash of `raw` without one.
    pub fn new(id: Option<String>, raw: Value, error: impl Into<String>) -> Self {
        let key = match &id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => format!("#{:016x}", fnv1a(raw.to_string().as_bytes())),
        };
        QuarantinedRecord {
            key,
            id,
            raw,
            error: error.into(),
            quarantined_at: Utc::now(),
        }
    }
}

/// FNV-1a, 64 bits: a stable key for a record without an id (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A remote change that was not applied because the record has a local op.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingConflict {
    /// The remote record.
    pub remote: RemoteRecord,
    /// The local record (`None` if it was deleted locally and the row is gone).
    pub local: Option<StoredRecord>,
    /// The local op(s) for the record, oldest first.
    pub ops: Vec<OutboxOp>,
}

/// What applying remote records did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteApplied {
    /// Ids inserted.
    pub created: Vec<String>,
    /// Ids updated.
    pub updated: Vec<String>,
    /// Ids deleted by tombstones.
    pub deleted: Vec<String>,
    /// Records skipped because the local version is already as new.
    pub stale: Vec<String>,
    /// Records with a local op: left untouched, for conflict resolution.
    pub conflicts: Vec<PendingConflict>,
}

/// How a conflict was settled, written by [`LocalStore::resolve_conflict`].
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Take the remote record; drop the local ops.
    TakeRemote,
    /// Keep the local data; rebase the pending op on the remote version so
    /// the next push overwrites the server.
    KeepLocal,
    /// Write `data` locally and queue what differs from the remote record as
    /// an update based on the remote version.
    Merged(JsonObject),
}

/// Sync state of one record, for applications.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordState {
    /// Bookkeeping (`None` if the row is gone, e.g. a deleted record whose delete is queued).
    pub meta: Option<RecordMeta>,
    /// Ops waiting, in flight or failed for the record.
    pub ops: Vec<OutboxOp>,
    /// Why the last remote copy of the record could not be decrypted
    /// (`#[sync(encrypted)]` fields); its ciphertext is kept until a key opens it.
    /// Stores leave it `None`; the manager fills it in.
    pub decryption_error: Option<String>,
}

/// Outbox counts for the status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Pending (due or not) and in-flight ops.
    pub pending: u64,
    /// Failed ops.
    pub failed: u64,
    /// Remote records kept aside (every model).
    pub quarantined: u64,
}

/// The local store the engine drives. See the module docs.
///
/// Every required method has a caller in the engine; the provided ones are conveniences built
/// on them. [`metadata`](Self::metadata) and [`set_metadata`](Self::set_metadata) are the
/// store's key-value bookkeeping: field encryption keeps the remote copies it could not open
/// there, and per-account sync metadata is planned to use them too.
pub trait LocalStore: Send + Sync + fmt::Debug + 'static {
    // --- records: the application's reads and writes -------------------------------------

    /// Makes sure the model's table exists: creates it from the schema when
    /// `auto_migrate` is true, else checks it and reports
    /// [`StoreError::MissingTable`].
    fn prepare_model(&self, schema: &'static ModelSchema, auto_migrate: bool) -> StoreResult<()>;

    /// One record, unless missing or locally deleted.
    fn get(&self, schema: &'static ModelSchema, id: &str) -> StoreResult<Option<StoredRecord>>;

    /// Records matching `query`, run in SQL.
    fn query(
        &self,
        schema: &'static ModelSchema,
        query: &StoreQuery,
    ) -> StoreResult<Vec<StoredRecord>>;

    /// Number of records matching the filter of `query` (limit and offset ignored).
    fn count(&self, schema: &'static ModelSchema, query: &StoreQuery) -> StoreResult<u64>;

    /// Writes a record and (if `enqueue`) its outbox op, coalescing with a
    /// pending op of the same record, in one transaction.
    fn save(&self, write: &LocalWrite<'_>) -> StoreResult<SaveOutcome>;

    /// Writes many records, each with its op, in one transaction.
    fn save_batch(&self, writes: &[LocalWrite<'_>]) -> StoreResult<Vec<SaveOutcome>>;

    /// Deletes a record locally: a tombstone row plus a delete op of `priority` (or, for a
    /// record whose create was never sent, removes row and op), in one transaction; a delete
    /// folded into a pending op keeps the higher priority of the two.
    /// With `enqueue` false the row is removed without queueing anything.
    fn delete(
        &self,
        schema: &'static ModelSchema,
        id: &str,
        user_id: Option<&str>,
        priority: i32,
        enqueue: bool,
    ) -> StoreResult<DeleteOutcome>;

    /// Sync state of one record.
    fn record_state(&self, schema: &'static ModelSchema, id: &str) -> StoreResult<RecordState>;

    // --- outbox: choosing, claiming and settling ops ----------------------------------------

    /// Pending ops due at `now`, by priority (highest first) then seq, at most `limit`.
    fn ready_ops(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<OutboxOp>>;

    /// Earliest `next_attempt_at` of a pending op that is not due at `now`.
    fn next_retry_at(&self, now: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>>;

    /// Marks the pending ops among `seqs` (all of model `schema`) in flight and returns them
    /// with their records, read in the same transaction: a push builds its request from
    /// exactly what it marked, never from an older read. Ops that are not pending (or belong
    /// to another model) are left alone and not returned.
    ///
    /// An op counts as possibly sent (so that, for instance, a later delete no longer cancels
    /// its create locally) from the moment the push reports back on it
    /// ([`reschedule_op`](Self::reschedule_op), [`fail_op`](Self::fail_op)) or a crash leaves it
    /// in flight ([`requeue_inflight`](Self::requeue_inflight)); a claimed op that was never
    /// sent goes back with [`release_inflight`](Self::release_inflight).
    fn claim_ops(&self, schema: &'static ModelSchema, seqs: &[i64]) -> StoreResult<Vec<ClaimedOp>>;

    /// Puts ops that [`claim_ops`](Self::claim_ops) marked but that were never sent back
    /// to pending, as if they had not been marked: no attempt is counted, they do not count as
    /// sent, and a change queued for the record meanwhile is folded into them. Seqs that are not
    /// in flight are left alone. The engine claims the next batch while the current one is on
    /// the wire and releases it when the push stops early.
    fn release_inflight(&self, seqs: &[i64]) -> StoreResult<()>;

    /// The remote accepted these ops, all of model `schema`: in ONE transaction, for each in
    /// order, removes the op, records its `version` on the row, marks the row synced when no
    /// other op is left (writing the remote's `data` when given), rebases a newer pending op
    /// on `version`, and removes the row of an acknowledged delete.
    fn ack_ops(&self, schema: &'static ModelSchema, acks: &[Ack]) -> StoreResult<()>;

    /// [`ack_ops`](Self::ack_ops) for one op.
    fn ack_op(
        &self,
        schema: &'static ModelSchema,
        seq: i64,
        version: i64,
        data: Option<&JsonObject>,
    ) -> StoreResult<()> {
        self.ack_ops(
            schema,
            &[Ack {
                seq,
                version,
                data: data.cloned(),
            }],
        )
    }

    /// The remote refused op `seq` permanently: state failed, error kept on the op and the row.
    fn fail_op(&self, seq: i64, error: &str) -> StoreResult<()>;

    /// A transient failure: back to pending, attempts + 1, not before `next_attempt_at`.
    fn reschedule_op(
        &self,
        seq: i64,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> StoreResult<()>;

    /// Puts every in-flight op back to pending, counted as possibly sent (after a crash).
    fn requeue_inflight(&self) -> StoreResult<u64>;

    /// Failed ops, oldest first.
    fn failed_ops(&self) -> StoreResult<Vec<OutboxOp>>;

    /// Failed ops back to pending, due now (`None`: all of them). Returns how many.
    fn retry_failed(&self, seq: Option<i64>) -> StoreResult<u64>;

    /// Drops op `seq` (any state but in flight) at the application's request;
    /// the local row keeps its data and is marked synced if no op is left.
    fn discard_op(&self, seq: i64) -> StoreResult<()>;

    // --- pull / apply: remote records and the pull cursor ----------------------------------

    /// Applies remote records and, when `cursor` is given, stores it as the
    /// model's pull cursor — all in one transaction. Records with a local op
    /// are not touched and are returned as conflicts; stale versions are skipped.
    fn apply_remote(
        &self,
        schema: &'static ModelSchema,
        user_id: Option<&str>,
        records: &[RemoteRecord],
        cursor: Option<&str>,
    ) -> StoreResult<RemoteApplied>;

    /// The model's pull cursor.
    fn cursor(
        &self,
        schema: &'static ModelSchema,
        user_id: Option<&str>,
    ) -> StoreResult<Option<String>>;

    /// Forgets the model's pull cursor (a full pull follows).
    fn reset_cursor(&self, schema: &'static ModelSchema, user_id: Option<&str>) -> StoreResult<()>;

    // --- conflicts ------------------------------------------------------------------------

    /// Settles a conflict on record `remote.id` in one transaction (see [`Resolution`]).
    fn resolve_conflict(
        &self,
        schema: &'static ModelSchema,
        remote: &RemoteRecord,
        resolution: &Resolution,
    ) -> StoreResult<()>;

    // --- quarantine: remote records that do not fit their model ----------------------------

    /// Keeps remote records of the model aside (replacing an earlier entry with the same key).
    fn quarantine(
        &self,
        schema: &'static ModelSchema,
        records: &[QuarantinedRecord],
    ) -> StoreResult<()>;

    /// The model's quarantined records, oldest first.
    fn quarantined(&self, schema: &'static ModelSchema) -> StoreResult<Vec<QuarantinedRecord>>;

    /// Forgets quarantined records of the model by key (applied, or superseded by a record
    /// that fits); returns how many there were.
    fn release_quarantined(
        &self,
        schema: &'static ModelSchema,
        keys: &[String],
    ) -> StoreResult<u64>;

    // --- bookkeeping ------------------------------------------------------------------------

    /// Outbox counts.
    fn counts(&self) -> StoreResult<OutboxCounts>;

    /// A value of `_sync_metadata`.
    fn metadata(&self, user_id: Option<&str>, key: &str) -> StoreResult<Option<String>>;

    /// Sets a value of `_sync_metadata`.
    fn set_metadata(&self, user_id: Option<&str>, key: &str, value: &str) -> StoreResult<()>;

    /// Binds the store to the user whose data it holds, in one transaction: a store that
    /// belongs to nobody yet is recorded as `user`'s (when `user` is `Some`); a store that
    /// belongs to someone else is left as it is and that owner returned, so that one user's
    /// rows and queued ops never go out with another user's credentials. A store from before
    /// owners were recorded belongs to the users its ops, cursors and metadata name.
    fn claim_owner(&self, user: Option<&str>) -> StoreResult<Option<String>>;

    /// What the store knows of the remote's records of `schema` (see [`KnownVersions`]), for
    /// checksums and `verify`.
    fn known_versions(&self, schema: &'static ModelSchema) -> StoreResult<KnownVersions>;

    /// Outbox ops per model type: (model type, pending or in flight, failed).
    fn op_counts_by_model(&self) -> StoreResult<Vec<(String, u64, u64)>>;

    /// Forgets `ids` of `schema` in one transaction: their rows and remembered tombstones
    /// go, without an op, so that the next pull takes the remote's copy whatever its version
    /// (a repair). Ids with outbox ops are left alone. Returns the ids forgotten.
    fn forget_records(&self, schema: &'static ModelSchema, ids: &[String]) -> StoreResult<u64>;

    /// How many records the store knows the remote versioned for `schema` (rows and
    /// remembered tombstones) and their checksum, kept write by write (equal to
    /// [`KnownVersions::checksum`] of [`known_versions`](Self::known_versions), without the
    /// scan). The default scans.
    fn known_checksum(
        &self,
        schema: &'static ModelSchema,
    ) -> StoreResult<(u64, crate::protocol::Checksum)> {
        let known = self.known_versions(schema)?;
        Ok((
            u64::try_from(known.known.len()).unwrap_or(u64::MAX),
            known.checksum(),
        ))
    }

    /// Gives record `from` the id `to` that the remote assigned to it: the row (with its id
    /// field) and every queued op of the record, in one transaction, so that the ops queued
    /// behind its create go to `to`. A row already stored under `to` (the remote's copy,
    /// pulled before the re-key) is replaced by the re-keyed one, which carries the local
    /// changes. Returns whether there was a row `from`.
    ///
    /// Needed for backends that assign ids
    /// ([`RestBackend::server_ids`](crate::RestBackend::server_ids)); a store without it
    /// refuses, and the create stays queued.
    fn rekey_record(
        &self,
        schema: &'static ModelSchema,
        from: &str,
        to: &str,
    ) -> StoreResult<bool> {
        let _ = (from, to);
        Err(StoreError::Database(format!(
            "this store cannot re-key records, so `{}` cannot be used with a backend that assigns ids",
            schema.model_type
        )))
    }
}

/// What a store knows of the remote's records of one model: `(id, version, deleted)` of every
/// row the remote has versioned and of every remembered tombstone, sorted; and the ids with
/// outbox ops, whose local state is ahead of what the remote has (sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KnownVersions {
    /// `(id, version, deleted)`, sorted.
    pub known: Vec<(String, i64, bool)>,
    /// Ids with outbox ops, sorted.
    pub with_ops: Vec<String>,
}

impl KnownVersions {
    /// `known` and `with_ops` (each sorted here).
    pub fn new(mut known: Vec<(String, i64, bool)>, mut with_ops: Vec<String>) -> Self {
        known.sort();
        with_ops.sort();
        KnownVersions { known, with_ops }
    }

    /// The collection checksum over [`known`](Self::known) (see `sync_protocol::metadata`).
    pub fn checksum(&self) -> crate::protocol::Checksum {
        self.known
            .iter()
            .fold(crate::protocol::Checksum::default(), |acc, (id, v, d)| {
                acc.plus(crate::protocol::Checksum::of_record(id, *v, *d, 1))
            })
    }
}

#[allow(dead_code)]
fn _object_safe(_: &dyn LocalStore) {}
