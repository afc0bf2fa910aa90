//! The Diesel local store of offline-sync-kit.
//!
//! [`DieselStore`] implements [`sync_core::store::LocalStore`] on SQLite (bundled
//! libsqlite3, WAL) and, with the `postgres` feature, on Postgres: records
//! and their outbox operations are written in one transaction, edits to the
//! same record coalesce into one pending operation, pulled pages commit with
//! their cursor, and queries run in SQL.
//!
//! [`MigrationGenerator`] writes standard Diesel migration folders for the
//! models (and only the difference on later runs), so an application can
//! ship migrations instead of relying on auto-migration.
//!
//! # Storage
//!
//! | field type | SQLite column | Postgres column |
//! | --- | --- | --- |
//! | `String` | `TEXT` | `TEXT COLLATE "C"` |
//! | `bool` | `BOOLEAN` (0/1) | `BOOLEAN` |
//! | `i16` / `i32` / `i64` | `SMALLINT` / `INTEGER` / `BIGINT` | same |
//! | `f32` / `f64` | `FLOAT` / `DOUBLE` | `REAL` / `DOUBLE PRECISION` |
//! | `DateTime<Utc>` | `TEXT`, `2024-05-01T12:00:00.000000000Z` | `TIMESTAMPTZ` (microseconds) |
//! | `NaiveDateTime` | `TEXT`, `2024-05-01T12:00:00.000000000` | `TIMESTAMP` (microseconds) |
//! | `uuid::Uuid` | `TEXT` (lower-case, hyphenated) | `UUID` |
//! | `Vec<u8>` | `BLOB` | `BYTEA` |
//! | `#[sync(json)]` | `TEXT` (JSON) | `TEXT COLLATE "C"` (JSON) |
//!
//! SQLite timestamps are fixed-width text so that text order is time order;
//! values read back are exactly what serde writes for the field's Rust type.
//! Bookkeeping times (`_created_at`, `_updated_at`, outbox times) are kept to
//! the millisecond. Text compares by code point on both backends; `contains`,
//! `starts_with` and `ends_with` are case-sensitive.
//!
//! # Encryption (feature `encryption`)
//!
//! With the feature, SQLite is SQLCipher (linking the system OpenSSL) and a
//! store can be encrypted: `SqliteOptions::key` /
//! `DieselStore::open_sqlite_encrypted` open or create an encrypted file,
//! `enable_encryption`, `rekey` and `disable_encryption` re-write it (to a
//! new file, fsynced, renamed over the old one: a crash leaves the old or
//! the new file whole). Everything of the store is inside the encrypted file
//! (model tables, outbox, cursors, metadata); the WAL is encrypted the same
//! way and temporary tables stay in memory. Every wrong key or damaged file
//! is its own error naming the file ([`Error::WrongKey`],
//! [`Error::KeyRequired`], [`Error::NotEncrypted`], [`Error::Damaged`]); the
//! file is not changed. An encrypted file is checked page by page when it
//! opens, which reads it once.
//!
//! Cargo unifies features, so in a build with `encryption` every SQLite user
//! (sync-server's SQLite store too) runs on SQLCipher; without a key it
//! reads and writes plain SQLite files.
//!
//! # Outbox semantics (beyond the `LocalStore` docs)
//!
//! - At most one `pending` op that was never sent per record, enforced by the
//!   database: `_sync_outbox_record`, a unique index on (model type, record id,
//!   0 for such an op and the seq for any other), which also serves every
//!   lookup of a record's ops (bookkeeping migration 7).
//!   A record's ops form a queue: an in-flight or failed op is never changed by
//!   an edit; the edit goes into a pending op after it. When such an op comes
//!   back to pending (`reschedule_op`, `requeue_inflight`, `retry_failed`), the
//!   newer pending op is folded into it by the same rules.
//! - `ready_ops` and `next_retry_at` only offer the oldest op of each record:
//!   later ops wait until it is acknowledged (and rebased) or discarded, so a
//!   failed op holds back its own record, never others.
//! - An op whose content changes (coalescing, rebasing) gets a new
//!   idempotency key: the old key may have reached the remote with the old
//!   content, and replaying it would return that old result. Keys are unique
//!   by construction (a random 122-bit prefix per process and a counter), not
//!   by an index: no query looks an op up by its key.
//! - Seqs are never handed out twice, also after the ops that held them are
//!   gone: on SQLite every insert takes the seq after the largest handed out
//!   (the larger of the largest present and `_sync_outbox_counts.last_seq`,
//!   which deletes raise), enforced by the insert trigger, so the counts row
//!   needs no write on an insert; on Postgres `seq` is a sequence.
//! - A create that may have reached the remote (it was in flight once) is not
//!   dropped by a delete; the delete is sent.
//! - A deleted record is a tombstone row (`_deleted`) while an op needs it;
//!   `get`/`query` hide it unless `include_deleted`. No op exists without its
//!   row, and every unsynced row has exactly one pending op after a restart.
//! - When a record's row goes because the remote deleted it (a pulled or
//!   realtime tombstone, a conflict settled for a tombstone, this device's
//!   acknowledged delete), `_sync_tombstones` keeps the version of that
//!   delete: a copy of the record that is not newer is stale and never brings
//!   it back.
//! - `fail_op`, `reschedule_op`, `retry_failed` and `discard_op` receive no
//!   schema; the store finds the model table through the models it has seen
//!   (`prepare_model` or any call that passes the schema). `discard_op` of an
//!   op of a model never seen in this process is an error.

#![warn(missing_docs)]

mod accounts;
mod ddl;
mod error;
mod migrate;
mod sql;
mod store;
mod value;

pub use crate::accounts::SqliteAccountStores;
pub use crate::ddl::Backend;
pub use crate::error::{Error, Result};
pub use crate::migrate::{GeneratedMigration, MigrationGenerator, SNAPSHOT_FILE};
#[cfg(feature = "postgres")]
pub use crate::store::PostgresOptions;
#[cfg(feature = "encryption")]
pub use crate::store::StoreKey;
pub use crate::store::{CheckpointStats, DieselStore, SqliteOptions, BOOKKEEPING_SCHEMA_VERSION};
