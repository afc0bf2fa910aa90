//! offline-sync-kit: offline-first sync for Rust applications.
//!
//! Derive [`SyncModel`] on a plain struct and the framework knows how to
//! store it, diff it, send it as a delta and route it to any REST API.
//!
//! ```
//! use offline_sync_kit::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
//! #[sync(endpoint = "notes")]
//! struct Note {
//!     #[sync(id)]
//!     id: String,
//!     text: String,
//! }
//!
//! let before = Note { id: "n1".into(), text: "draft".into() };
//! let mut after = before.clone();
//! after.text = "final".into();
//! let delta = after.to_delta_json(after.changed_fields(&before));
//! assert_eq!(serde_json::Value::Object(delta), serde_json::json!({"text": "final"}));
//! ```

#![warn(missing_docs)]

pub use sync_core::*;
/// The error of opening a [`DieselStore`] (a missing directory, a newer schema, and with the
/// `encryption` feature a wrong or missing key or a damaged file: `WrongKey`, `KeyRequired`,
/// `NotEncrypted`, `Damaged`) and of the migration generator.
pub use sync_diesel::Error as DieselStoreError;
/// The key of an encrypted local database (feature `encryption`): a passphrase or a raw
/// 256-bit key, for [`SqliteOptions::key`] and [`DieselStore::open_sqlite_encrypted`].
#[cfg(feature = "encryption")]
pub use sync_diesel::StoreKey;
pub use sync_diesel::{
    Backend, DieselStore, GeneratedMigration, MigrationGenerator, SqliteAccountStores,
    SqliteOptions,
};

/// `#[derive(SyncModel)]`: implements the [`SyncModel`](trait@sync_core::SyncModel) trait for a struct.
///
/// See the crate README ("Derive attributes") for its attributes.
pub use sync_derive::SyncModel;

/// The derive and runtime names an application needs, for `use offline_sync_kit::prelude::*;`.
pub mod prelude {
    pub use sync_core::{
        Condition, ConflictStrategy, DeleteStrategy, Direction, FetchStrategy, FieldMask,
        ModelSchema, Query, RestMethod, RestRequest, RestRequests, RetryPolicy, SaveStrategy,
        SyncDirection, SyncEvent, SyncEventType, SyncManager, SyncModel, SyncOptions, SyncReport,
        SyncRun, SyncState, SyncStatus, WebSocketConfig, WriteOptions,
    };
    pub use sync_derive::SyncModel;
    pub use sync_diesel::DieselStore;
}

/// The README's examples run as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
