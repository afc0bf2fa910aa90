use std::path::PathBuf;

use sync_core::store::StoreError;

/// Errors of this crate that are not [`StoreError`]s: opening a store, and
/// generating migrations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening or using the store failed (not a database, newer schema, missing directory, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file or directory of the migration generator could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done (`"read"`, `"write"`, `"create directory"`, ...).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The schema snapshot beside the migrations does not parse.
    #[error("schema snapshot {} is unreadable ({reason}); restore it from version control or delete the migrations directory to start over", path.display())]
    Snapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A model change would drop data and was not explicitly allowed.
    #[error("model {model} (table `{table}`): field `{field}` {change}; this migration would lose data. Keep the field, or call `.allow_destructive(true)` on the generator to write it anyway")]
    Destructive {
        /// Model type.
        model: String,
        /// Table.
        table: String,
        /// Column name of the field.
        field: String,
        /// What changed, e.g. "was removed" or "changed type from INTEGER to TEXT".
        change: String,
    },
    /// The generator was configured inconsistently (no model, two models on one table, ...).
    #[error("migration generator: {0}")]
    Config(String),
    /// The key does not decrypt the store (a wrong key, or the key of another file).
    #[error("cannot decrypt the store at {path}: the key is wrong, or it is the key of another file; open it with the key it was encrypted with (the file was not changed)")]
    WrongKey {
        /// The file.
        path: String,
    },
    /// The store is encrypted and was opened without a key.
    #[error("the store at {path} is encrypted; open it with its key (`SqliteOptions::key` or `DieselStore::open_sqlite_encrypted`) (the file was not changed)")]
    KeyRequired {
        /// The file.
        path: String,
    },
    /// A key was given for a store that is not encrypted.
    #[error("the store at {path} is not encrypted, so no key opens it; open it without a key and call `enable_encryption` to encrypt it (the file was not changed)")]
    NotEncrypted {
        /// The file.
        path: String,
    },
    /// The encrypted file was cut short or altered outside the store.
    #[error("the encrypted store at {path} is damaged: {reason}; it was cut short or changed outside the store, restore it from a backup (the file was not changed)")]
    Damaged {
        /// The file.
        path: String,
        /// What the check found.
        reason: String,
    },
    /// An encryption operation cannot be done (already encrypted, a Postgres
    /// store, an empty passphrase, a failed re-write that left the store as it was, ...).
    #[error("encryption of the store at {path}: {reason}")]
    Encryption {
        /// The file (empty when no store is involved yet).
        path: String,
        /// What went wrong and what to do.
        reason: String,
    },
    /// Running embedded migrations failed.
    #[error("running migrations failed: {0}")]
    Migration(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
