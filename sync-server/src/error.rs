//! The crate's error type.

use std::path::PathBuf;

/// Errors of `sync-server`: configuration, start-up and storage failures.
///
/// Request-level problems (bad JSON, unknown token, limits) are not errors of this type: they are
/// answered to the client as JSON error responses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server configuration is invalid; the message says which setting and what to write.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A tokens file could not be read.
    #[error("cannot read tokens file {path}")]
    TokensFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The JWT secret file could not be read.
    #[error("cannot read JWT secret file {path}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The database URL does not name a supported database.
    #[error(
        "unsupported database URL {0:?}: use sqlite://PATH (or a plain file path) or postgres://..."
    )]
    UnsupportedDatabase(String),

    /// Connecting to the database failed.
    #[error("cannot connect to the database")]
    Connect(#[source] diesel::ConnectionError),

    /// The connection pool could not hand out a connection.
    #[error("database connection pool failed")]
    Pool(#[source] diesel::r2d2::PoolError),

    /// Running the embedded schema migrations failed.
    #[error("database migration failed: {0}")]
    Migration(String),

    /// A database statement failed.
    #[error("database error")]
    Database(#[from] diesel::result::Error),

    /// Stored data could not be decoded (a corrupt or foreign database).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),

    /// Binding or serving the listener failed.
    #[error("server I/O error")]
    Io(#[from] std::io::Error),

    /// A background task panicked or was cancelled unexpectedly.
    #[error("background task failed: {0}")]
    Task(String),
}

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
