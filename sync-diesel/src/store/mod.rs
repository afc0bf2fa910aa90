//! [`DieselStore`]: the `LocalStore` on SQLite (and Postgres with feature `postgres`).

#[cfg(feature = "encryption")]
mod cipher;
#[cfg(feature = "encryption")]
pub use self::cipher::StoreKey;
mod checkpoint;
mod logic;

pub use checkpoint::CheckpointStats;
mod outbox;
mod query;
mod records;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use sync_core::store::StoreError;
use sync_core::store::{
    Ack, ClaimedOp, DeleteOutcome, JsonObject, KnownVersions, LocalStore, LocalWrite, OutboxCounts,
    OutboxOp, QuarantinedRecord, RecordState, RemoteApplied, RemoteRecord, Resolution, SaveOutcome,
    StoreQuery, StoreResult, StoredRecord,
};
use sync_schema::ModelSchema;

use crate::ddl::{self, Backend};
use crate::error::{Error, Result};
use crate::sql::ChecksumDeltas;
use crate::sql::{Db, Sql, SqliteWrite, TxError};
use crate::value::Param;
use sync_core::protocol::Checksum;

/// Highest bookkeeping schema version this build knows (`_sync_schema_version`).
pub const BOOKKEEPING_SCHEMA_VERSION: i64 = 7;

// The bookkeeping migrations share Diesel's `__diesel_schema_migrations`
// table with the application's own migrations. Their versions
// (`00000000000001`, ...) cannot collide with timestamp versions and sort
// before them, so `diesel migration revert` reverts the application's last
// migration, never the store's.
const SQLITE_BOOKKEEPING: EmbeddedMigrations =
    diesel_migrations::embed_migrations!("bookkeeping/sqlite");
#[cfg(feature = "postgres")]
const POSTGRES_BOOKKEEPING: EmbeddedMigrations =
    diesel_migrations::embed_migrations!("bookkeeping/postgres");

/// The local store of offline-sync-kit on Diesel: SQLite by default,
/// Postgres with the `postgres` feature.
///
/// Every model table carries the bookkeeping columns `_version`,
/// `_created_at`, `_updated_at`, `_synced`, `_deleted`, `_user_id`,
/// `_sync_error` and `_sync_attempts`; the outbox, pull cursors, metadata and
/// the versions of remotely deleted records live in `_sync_outbox`,
/// `_sync_state`, `_sync_metadata` and `_sync_tombstones`, created by
/// embedded migrations when the store opens. The outbox and quarantine counts
/// the status shows are kept in `_sync_outbox_counts` by triggers, in the
/// transaction of each change. Every change of a record and its
/// outbox entry happens in one transaction (`BEGIN IMMEDIATE` on SQLite).
///
/// SQLite uses one connection (one writer) behind a mutex, in WAL mode with
/// `synchronous=NORMAL`, a busy timeout and foreign keys on; a thread of the store's own
/// checkpoints the WAL with a second connection, off the commit path (see
/// [`DieselStore::checkpoint`]).
///
/// ```no_run
/// # async fn run() -> Result<(), sync_diesel::Error> {
/// use sync_diesel::DieselStore;
/// let store = DieselStore::open_sqlite("app.db").await?;
/// # let _ = store;
/// # Ok(()) }
/// ```
pub struct DieselStore {
    conn: Conn,
    location: String,
    models: RwLock<HashMap<&'static str, &'static ModelSchema>>,
    /// How the SQLite file was opened, to open it again after a re-write
    /// (`enable_encryption`, `rekey`, ...); `None` on Postgres.
    #[cfg_attr(not(feature = "encryption"), allow(dead_code))]
    sqlite: Option<SqliteFile>,
    /// Keep the checksum of what the store knows of the remote write by write (default);
    /// see [`DieselStore::without_checksums`].
    keep_checksums: std::sync::atomic::AtomicBool,
    /// SQLite: the thread that checkpoints the WAL off the commit path.
    checkpointer: Option<checkpoint::Checkpointer>,
}

/// The SQLite file behind a store and whether it is encrypted now.
#[cfg_attr(not(feature = "encryption"), allow(dead_code))]
struct SqliteFile {
    options: SqliteOptions,
    encrypted: std::sync::atomic::AtomicBool,
}

enum Conn {
    Sqlite(Mutex<SqliteConnection>),
    #[cfg(feature = "postgres")]
    Postgres(diesel::r2d2::Pool<diesel::r2d2::ConnectionManager<diesel::PgConnection>>),
}

impl fmt::Debug for DieselStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DieselStore")
            .field("backend", &self.backend())
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Options for opening a SQLite store; start with [`DieselStore::sqlite`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SqliteOptions {
    path: PathBuf,
    busy_timeout: Duration,
    #[cfg(feature = "encryption")]
    key: Option<StoreKey>,
}

impl SqliteOptions {
    /// Options for the database file at `path` (created if missing; its
    /// directory must exist).
    pub fn new(path: impl AsRef<Path>) -> SqliteOptions {
        SqliteOptions {
            path: path.as_ref().to_path_buf(),
            busy_timeout: Duration::from_secs(5),
            #[cfg(feature = "encryption")]
            key: None,
        }
    }

    /// Opens (or creates) the file encrypted with `key` (SQLCipher: AES-256
    /// pages with an HMAC each; the WAL is encrypted the same way). A wrong
    /// key is [`Error::WrongKey`], a plaintext file [`Error::NotEncrypted`], a
    /// truncated or altered file [`Error::Damaged`]; the file is left as it was.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), sync_diesel::Error> {
    /// use sync_diesel::{DieselStore, StoreKey};
    /// let store = DieselStore::sqlite("app.db")
    ///     .key(StoreKey::passphrase("correct horse battery staple"))
    ///     .open_blocking()?;
    /// assert!(store.is_encryption_enabled());
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "encryption")]
    pub fn key(mut self, key: StoreKey) -> SqliteOptions {
        self.key = Some(key);
        self
    }

    /// How long a statement waits for another process's lock before failing
    /// with "database is locked". Default 5 s.
    pub fn busy_timeout(mut self, timeout: Duration) -> SqliteOptions {
        self.busy_timeout = timeout;
        self
    }

    /// Opens the store on the calling thread (blocking I/O).
    pub fn open_blocking(self) -> Result<DieselStore> {
        open_sqlite(&self)
    }

    /// Opens the store on tokio's blocking pool.
    pub async fn open(self) -> Result<DieselStore> {
        tokio::task::spawn_blocking(move || open_sqlite(&self))
            .await
            .map_err(|e| Error::Store(StoreError::Database(format!("opening the store: {e}"))))?
    }
}

fn classify_sqlite(path: &str, message: String) -> StoreError {
    let lower = message.to_ascii_lowercase();
    if lower.contains("not a database") || lower.contains("file is encrypted") {
        StoreError::NotADatabase {
            path: path.to_owned(),
        }
    } else if lower.contains("readonly")
        || lower.contains("read-only")
        || lower.contains("unable to open")
        || lower.contains("permission")
    {
        StoreError::Unavailable {
            path: path.to_owned(),
            reason: format!(
                "{message}; check that the file and its directory exist and are writable"
            ),
        }
    } else {
        StoreError::Database(message)
    }
}

fn open_sqlite(options: &SqliteOptions) -> Result<DieselStore> {
    let path = &options.path;
    let shown = path.display().to_string();
    let unavailable = |reason: String| {
        Error::Store(StoreError::Unavailable {
            path: shown.clone(),
            reason,
        })
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(unavailable(format!(
            "directory {} does not exist; create it first",
            parent.display()
        )));
    }
    if path.is_dir() {
        return Err(unavailable("it is a directory; give a file path".into()));
    }
    if path.to_str().is_none() {
        return Err(unavailable("the path is not valid UTF-8".into()));
    }
    // A re-write killed before its rename leaves its new file beside the
    // store; the store itself is the old file, whole.
    #[cfg(feature = "encryption")]
    cipher::remove_rewrite_leftovers(path, &shown)?;
    let conn = connect_sqlite(options, true)?;
    let checkpointer = checkpoint::Checkpointer::start(options);
    Ok(DieselStore {
        conn: Conn::Sqlite(Mutex::new(conn)),
        location: shown,
        models: RwLock::new(HashMap::new()),
        sqlite: Some(SqliteFile {
            #[cfg(feature = "encryption")]
            encrypted: std::sync::atomic::AtomicBool::new(options.key.is_some()),
            #[cfg(not(feature = "encryption"))]
            encrypted: std::sync::atomic::AtomicBool::new(false),
            options: options.clone(),
        }),
        keep_checksums: std::sync::atomic::AtomicBool::new(true),
        checkpointer,
    })
}

/// Opens a connection on the store's file: the key (if any) and its check,
/// the pragmas, the bookkeeping migrations, and (`requeue`, at open) in-flight
/// ops back to pending. A re-open after a re-write does not requeue: a push
/// of this process may still be waiting for the answer to those ops.
fn connect_sqlite(options: &SqliteOptions, requeue: bool) -> Result<SqliteConnection> {
    let path = &options.path;
    let shown = path.display().to_string();
    let url = path.to_str().ok_or_else(|| {
        Error::Store(StoreError::Unavailable {
            path: shown.clone(),
            reason: "the path is not valid UTF-8".into(),
        })
    })?;
    #[cfg(feature = "encryption")]
    if let Some(key) = &options.key {
        // Before the file is created.
        key.check(&shown)?;
    }
    let mut conn = SqliteConnection::establish(url)
        .map_err(|e| Error::Store(classify_sqlite(&shown, e.to_string())))?;
    #[cfg(feature = "encryption")]
    cipher::unlock(&mut conn, path, options.key.as_ref())?;
    let classify = |e: StoreError| match e {
        StoreError::Database(message) => classify_sqlite(&shown, message),
        other => other,
    };
    // PRAGMAs first: journal_mode cannot change inside a transaction.
    let millis = options.busy_timeout.as_millis();
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {millis}; PRAGMA foreign_keys = ON;"
    ))
    .map_err(|e| Error::Store(classify_sqlite(&shown, e.to_string())))?;
    conn.load(Sql::new("PRAGMA journal_mode = WAL"))
        .map_err(classify)?;
    // The store's thread checkpoints (see `checkpoint`); the connection only as a backstop.
    conn.batch_execute(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = {};",
        checkpoint::BACKSTOP_PAGES
    ))
    .map_err(|e| Error::Store(classify_sqlite(&shown, e.to_string())))?;
    conn.immediate_transaction(|c| {
        let exists = c
            .load(Sql::new(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
                 AND name = '_sync_schema_version'",
            ))?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .and_then(|r| r.as_i64())
            .unwrap_or(0);
        if exists > 0 {
            check_version(c, &shown)?;
        }
        c.run_pending_migrations(SQLITE_BOOKKEEPING)
            .map_err(|e| TxError(StoreError::Database(format!("bookkeeping migrations: {e}"))))?;
        if requeue {
            logic::requeue_inflight(c)?;
        }
        Ok::<_, TxError>(())
    })
    .map_err(|e| Error::Store(classify(e.0)))?;
    Ok(conn)
}

fn check_version(db: &mut dyn Db, location: &str) -> StoreResult<()> {
    let found = db
        .load(Sql::new(
            "SELECT version FROM _sync_schema_version WHERE id = 1",
        ))?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .and_then(|r| r.as_i64())
        .unwrap_or(0);
    if found > BOOKKEEPING_SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: location.to_owned(),
            found,
            known: BOOKKEEPING_SCHEMA_VERSION,
        });
    }
    Ok(())
}

#[cfg(feature = "postgres")]
pub use self::pg::PostgresOptions;

#[cfg(feature = "postgres")]
mod pg {
    use std::time::Duration;

    use diesel::r2d2::{ConnectionManager, Pool};
    use diesel::{Connection, PgConnection};
    use diesel_migrations::MigrationHarness;
    use sync_core::store::StoreError;

    use super::{check_version, logic, Conn, DieselStore, POSTGRES_BOOKKEEPING};
    use crate::error::{Error, Result};
    use crate::sql::{Db, Sql, TxError};

    /// Options for opening a Postgres store; start with [`DieselStore::postgres`].
    #[derive(Debug, Clone)]
    #[must_use]
    pub struct PostgresOptions {
        url: String,
        pool_size: u32,
        connect_timeout: Duration,
    }

    impl PostgresOptions {
        /// Options for the database at `url` (`postgres://user@host/db`;
        /// `?options=-csearch_path%3Dname` selects a schema).
        pub fn new(url: impl Into<String>) -> PostgresOptions {
            PostgresOptions {
                url: url.into(),
                pool_size: 4,
                connect_timeout: Duration::from_secs(10),
            }
        }

        /// Most connections kept open. Default 4.
        pub fn pool_size(mut self, size: u32) -> PostgresOptions {
            self.pool_size = size.max(1);
            self
        }

        /// How long to wait for a connection. Default 10 s.
        pub fn connect_timeout(mut self, timeout: Duration) -> PostgresOptions {
            self.connect_timeout = timeout;
            self
        }

        /// Opens the store on the calling thread (blocking I/O).
        pub fn open_blocking(self) -> Result<DieselStore> {
            open_postgres(&self)
        }

        /// Opens the store on tokio's blocking pool.
        pub async fn open(self) -> Result<DieselStore> {
            tokio::task::spawn_blocking(move || open_postgres(&self))
                .await
                .map_err(|e| {
                    Error::Store(StoreError::Database(format!("opening the store: {e}")))
                })?
        }
    }

    /// The URL without its password, for messages.
    fn redact(url: &str) -> String {
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &url[scheme + 3..at];
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
            }
            _ => url.to_owned(),
        }
    }

    /// Serialises writers of one store schema, across processes too.
    pub(super) fn lock(db: &mut dyn Db) -> Result<(), StoreError> {
        db.load(Sql::new(
            "SELECT pg_advisory_xact_lock(7355608, hashtext(current_schema()))::text",
        ))?;
        Ok(())
    }

    fn open_postgres(options: &PostgresOptions) -> Result<DieselStore> {
        let shown = redact(&options.url);
        let unavailable = |reason: String| {
            Error::Store(StoreError::Unavailable {
                path: shown.clone(),
                reason,
            })
        };
        let pool = Pool::builder()
            .max_size(options.pool_size)
            .min_idle(Some(1))
            .connection_timeout(options.connect_timeout)
            .build(ConnectionManager::<PgConnection>::new(options.url.clone()))
            .map_err(|e| unavailable(format!("cannot connect: {e}")))?;
        let mut conn = pool
            .get()
            .map_err(|e| unavailable(format!("cannot connect: {e}")))?;
        let conn: &mut PgConnection = &mut conn;
        conn.transaction(|c: &mut PgConnection| {
            lock(c)?;
            let exists = c
                .load(Sql::new(
                    "SELECT COUNT(*) FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_name = '_sync_schema_version'",
                ))?
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
                .and_then(|r| r.as_i64())
                .unwrap_or(0);
            if exists > 0 {
                check_version(c, &shown)?;
            }
            c.run_pending_migrations(POSTGRES_BOOKKEEPING)
                .map_err(|e| {
                    TxError(StoreError::Database(format!("bookkeeping migrations: {e}")))
                })?;
            logic::requeue_inflight(c)?;
            Ok::<_, TxError>(())
        })
        .map_err(|e| Error::Store(e.0))?;
        Ok(DieselStore {
            conn: Conn::Postgres(pool),
            location: shown,
            models: std::sync::RwLock::new(std::collections::HashMap::new()),
            sqlite: None,
            keep_checksums: std::sync::atomic::AtomicBool::new(true),
            checkpointer: None,
        })
    }
}

impl DieselStore {
    /// Marks the pending ops among `seqs` in flight without reading them, and returns the seqs
    /// it marked. The engine claims ops with [`LocalStore::claim_ops`], which also reads them
    /// in the same transaction; this is for tests and tools that drive the outbox by hand.
    pub fn mark_inflight(&self, seqs: &[i64]) -> StoreResult<Vec<i64>> {
        self.write(|db| logic::mark_inflight(db, seqs))
    }

    /// Options for a SQLite store at `path`, to set e.g. the busy timeout.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), sync_diesel::Error> {
    /// use std::time::Duration;
    /// let store = sync_diesel::DieselStore::sqlite("app.db")
    ///     .busy_timeout(Duration::from_secs(2))
    ///     .open_blocking()?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub fn sqlite(path: impl AsRef<Path>) -> SqliteOptions {
        SqliteOptions::new(path)
    }

    /// Stops keeping the checksum of what the store knows of the remote write by write: a
    /// little less work per write that changes a version (a hash and, for updates, a read of
    /// the old version), and [`known_checksum`](LocalStore::known_checksum) (sync metadata,
    /// the one-request idle sync) scans the model instead. The kept sums are dropped, so a
    /// later opening that keeps them again counts each model afresh.
    pub fn without_checksums(self) -> Result<DieselStore> {
        self.keep_checksums
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.write(|db| {
            db.execute(crate::sql::Sql::new("DELETE FROM _sync_checksums"))?;
            Ok(())
        })?;
        Ok(self)
    }

    /// Folds the SQLite write-ahead log into the database file now (a passive checkpoint by
    /// the store's checkpoint thread, which otherwise runs a moment after writes), and says
    /// what the thread's checkpoints did so far. Commits are durable in the WAL either way;
    /// this is for callers that copy the database file, or want the WAL small. `None` on
    /// Postgres, or when the thread could not start (SQLite then checkpoints at commit).
    pub fn checkpoint(&self) -> Option<std::result::Result<checkpoint::CheckpointStats, String>> {
        self.checkpointer
            .as_ref()
            .map(checkpoint::Checkpointer::flush)
    }

    /// What the store's checkpoint thread did so far (`None` on Postgres).
    pub fn checkpoint_stats(&self) -> Option<checkpoint::CheckpointStats> {
        self.checkpointer
            .as_ref()
            .map(checkpoint::Checkpointer::stats)
    }

    /// Opens (creating if needed) the SQLite store at `path` with default options.
    pub async fn open_sqlite(path: impl AsRef<Path>) -> Result<DieselStore> {
        SqliteOptions::new(path).open().await
    }

    /// Blocking form of [`DieselStore::open_sqlite`].
    pub fn open_sqlite_blocking(path: impl AsRef<Path>) -> Result<DieselStore> {
        SqliteOptions::new(path).open_blocking()
    }

    /// Opens (creating if needed) the SQLite store at `path` encrypted with
    /// `key`; see [`SqliteOptions::key`].
    #[cfg(feature = "encryption")]
    pub async fn open_sqlite_encrypted(
        path: impl AsRef<Path>,
        key: StoreKey,
    ) -> Result<DieselStore> {
        SqliteOptions::new(path).key(key).open().await
    }

    /// Blocking form of [`DieselStore::open_sqlite_encrypted`].
    #[cfg(feature = "encryption")]
    pub fn open_sqlite_encrypted_blocking(
        path: impl AsRef<Path>,
        key: StoreKey,
    ) -> Result<DieselStore> {
        SqliteOptions::new(path).key(key).open_blocking()
    }

    /// Options for a Postgres store at `url`.
    #[cfg(feature = "postgres")]
    pub fn postgres(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions::new(url)
    }

    /// Opens the Postgres store at `url` with default options.
    #[cfg(feature = "postgres")]
    pub async fn open_postgres(url: impl Into<String>) -> Result<DieselStore> {
        PostgresOptions::new(url).open().await
    }

    /// Blocking form of [`DieselStore::open_postgres`].
    #[cfg(feature = "postgres")]
    pub fn open_postgres_blocking(url: impl Into<String>) -> Result<DieselStore> {
        PostgresOptions::new(url).open_blocking()
    }

    /// The database kind.
    pub fn backend(&self) -> Backend {
        match &self.conn {
            Conn::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// The file path, or the URL without its password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Runs the application's migrations (from `diesel_migrations::embed_migrations!`)
    /// on this store's database; returns the versions applied.
    pub fn run_migrations(&self, migrations: EmbeddedMigrations) -> Result<Vec<String>> {
        let run = |h: &mut dyn MigrationHarnessDyn| h.run(migrations);
        match &self.conn {
            Conn::Sqlite(m) => {
                let mut c = m.lock().unwrap_or_else(PoisonError::into_inner);
                run(&mut *c)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(pool) => {
                let mut c = pool
                    .get()
                    .map_err(|e| Error::Store(StoreError::Database(e.to_string())))?;
                let c: &mut diesel::PgConnection = &mut c;
                run(c)
            }
        }
    }

    /// The database's plan for `query` on `schema`'s table (`EXPLAIN QUERY
    /// PLAN` on SQLite, `EXPLAIN` on Postgres), one line per row, to check
    /// that a filter uses an index.
    pub fn explain(
        &self,
        schema: &'static ModelSchema,
        query: &StoreQuery,
    ) -> StoreResult<Vec<String>> {
        self.read(|db| {
            let backend = db.backend();
            let inner = logic::query_sql(schema, query, backend)?;
            let prefix = match backend {
                Backend::Sqlite => "EXPLAIN QUERY PLAN ",
                Backend::Postgres => "EXPLAIN ",
            };
            let mut sql = Sql::new(prefix);
            sql.append(inner);
            let rows = db.load(sql.uncached())?;
            Ok(rows
                .into_iter()
                .filter_map(|r| r.into_iter().last().and_then(|v| v.into_text()))
                .collect())
        })
    }

    fn register(&self, schema: &'static ModelSchema) {
        let known = self
            .models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(schema.model_type)
            .is_some_and(|s| std::ptr::eq(*s, schema));
        if !known {
            self.models
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(schema.model_type, schema);
        }
    }

    fn model(&self, model_type: &str) -> Option<&'static ModelSchema> {
        self.models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model_type)
            .copied()
    }

    /// Runs `f` in one write transaction.
    fn write<T>(&self, f: impl FnOnce(&mut dyn Db) -> StoreResult<T>) -> StoreResult<T> {
        let keep = self
            .keep_checksums
            .load(std::sync::atomic::Ordering::SeqCst);
        match &self.conn {
            Conn::Sqlite(m) => {
                let mut c = m.lock().unwrap_or_else(PoisonError::into_inner);
                let out = c
                    .immediate_transaction(|c| {
                        let mut tx = SqliteWrite {
                            conn: c,
                            next_seq: None,
                            checksums: keep.then(ChecksumDeltas::default),
                        };
                        let out = f(&mut tx).map_err(TxError)?;
                        if let Some(deltas) = tx.checksums.take() {
                            logic::add_checksums(&mut tx, deltas).map_err(TxError)?;
                        }
                        Ok(out)
                    })
                    .map_err(|e: TxError| e.0);
                drop(c);
                if let Some(checkpointer) = &self.checkpointer {
                    checkpointer.wrote();
                }
                out
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(pool) => {
                let mut c = pool
                    .get()
                    .map_err(|e| StoreError::Database(format!("no connection: {e}")))?;
                let c: &mut diesel::PgConnection = &mut c;
                c.transaction(|c: &mut diesel::PgConnection| {
                    pg::lock(c)?;
                    let mut tx = crate::sql::PgWrite {
                        conn: c,
                        checksums: keep.then(ChecksumDeltas::default),
                    };
                    let out = f(&mut tx).map_err(TxError)?;
                    if let Some(deltas) = tx.checksums.take() {
                        logic::add_checksums(&mut tx, deltas).map_err(TxError)?;
                    }
                    Ok(out)
                })
                .map_err(|e: TxError| e.0)
            }
        }
    }

    /// Runs a single-statement read `f` on a connection (see `read_tx` for several).
    fn read<T>(&self, f: impl FnOnce(&mut dyn Db) -> StoreResult<T>) -> StoreResult<T> {
        match &self.conn {
            Conn::Sqlite(m) => {
                let mut c = m.lock().unwrap_or_else(PoisonError::into_inner);
                f(&mut *c)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(pool) => {
                let mut c = pool
                    .get()
                    .map_err(|e| StoreError::Database(format!("no connection: {e}")))?;
                let c: &mut diesel::PgConnection = &mut c;
                f(c)
            }
        }
    }

    /// Runs a multi-statement read in one transaction, for a consistent view.
    fn read_tx<T>(&self, f: impl FnOnce(&mut dyn Db) -> StoreResult<T>) -> StoreResult<T> {
        match &self.conn {
            Conn::Sqlite(m) => {
                let mut c = m.lock().unwrap_or_else(PoisonError::into_inner);
                c.transaction(|c| f(c).map_err(TxError))
                    .map_err(|e: TxError| e.0)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(pool) => {
                let mut c = pool
                    .get()
                    .map_err(|e| StoreError::Database(format!("no connection: {e}")))?;
                let c: &mut diesel::PgConnection = &mut c;
                c.transaction(|c: &mut diesel::PgConnection| f(c).map_err(TxError))
                    .map_err(|e: TxError| e.0)
            }
        }
    }
}

/// Object-safe wrapper over Diesel's generic migration harness.
trait MigrationHarnessDyn {
    fn run(&mut self, migrations: EmbeddedMigrations) -> Result<Vec<String>>;
}

impl<C> MigrationHarnessDyn for C
where
    C: MigrationHarness<<C as Connection>::Backend> + Connection,
    EmbeddedMigrations: diesel::migration::MigrationSource<<C as Connection>::Backend>,
{
    fn run(&mut self, migrations: EmbeddedMigrations) -> Result<Vec<String>> {
        self.run_pending_migrations(migrations)
            .map(|versions| versions.into_iter().map(|v| v.to_string()).collect())
            .map_err(|e| Error::Migration(e.to_string()))
    }
}

fn table_columns(db: &mut dyn Db, table: &str) -> StoreResult<Vec<String>> {
    let sql = match db.backend() {
        Backend::Sqlite => {
            let mut sql = Sql::new("SELECT name FROM pragma_table_info(");
            sql.bind(Param::text(table)).push(")");
            sql
        }
        Backend::Postgres => {
            let mut sql = Sql::new(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = ",
            );
            sql.bind(Param::text(table));
            sql
        }
    };
    Ok(db
        .load(sql)?
        .into_iter()
        .filter_map(|r| r.into_iter().next().and_then(|v| v.into_text()))
        .collect())
}

impl LocalStore for DieselStore {
    fn prepare_model(&self, schema: &'static ModelSchema, auto_migrate: bool) -> StoreResult<()> {
        self.register(schema);
        self.write(|db| {
            let backend = db.backend();
            if auto_migrate {
                for statement in ddl::create_model_statements(schema, backend, true) {
                    db.execute(Sql::new(statement))?;
                }
            }
            let columns = table_columns(db, schema.table)?;
            if columns.is_empty() {
                return Err(StoreError::MissingTable {
                    model: schema.model_type,
                    table: schema.table,
                });
            }
            let wanted = schema
                .fields
                .iter()
                .map(|f| f.column)
                .chain(ddl::META_COLUMNS);
            for column in wanted {
                if !columns.iter().any(|c| c == column) {
                    return Err(StoreError::Database(format!(
                        "table `{}` of model {} has no column `{column}`; generate a migration \
                         for the model change (sync_diesel::MigrationGenerator) and run it",
                        schema.table, schema.model_type
                    )));
                }
            }
            Ok(())
        })
    }

    fn get(&self, schema: &'static ModelSchema, id: &str) -> StoreResult<Option<StoredRecord>> {
        self.read(|db| logic::get(db, schema, id))
    }

    fn query(
        &self,
        schema: &'static ModelSchema,
        query: &StoreQuery,
    ) -> StoreResult<Vec<StoredRecord>> {
        self.read(|db| logic::query(db, schema, query))
    }

    fn count(&self, schema: &'static ModelSchema, query: &StoreQuery) -> StoreResult<u64> {
        self.read(|db| logic::count(db, schema, query))
    }

    fn save(&self, write: &LocalWrite<'_>) -> StoreResult<SaveOutcome> {
        self.register(write.schema);
        let now = logic::now();
        self.write(|db| logic::save(db, write, now))
    }

    fn save_batch(&self, writes: &[LocalWrite<'_>]) -> StoreResult<Vec<SaveOutcome>> {
        for w in writes {
            self.register(w.schema);
        }
        let now = logic::now();
        self.write(|db| writes.iter().map(|w| logic::save(db, w, now)).collect())
    }

    fn delete(
        &self,
        schema: &'static ModelSchema,
        id: &str,
        user_id: Option<&str>,
        priority: i32,
        enqueue: bool,
    ) -> StoreResult<DeleteOutcome> {
        self.register(schema);
        let now = logic::now();
        self.write(|db| logic::delete(db, schema, id, user_id, priority, enqueue, now))
    }

    fn ready_ops(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<OutboxOp>> {
        self.read(|db| logic::ready_ops(db, now, limit))
    }

    fn next_retry_at(&self, now: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>> {
        self.read(|db| logic::next_retry_at(db, now))
    }

    fn claim_ops(&self, schema: &'static ModelSchema, seqs: &[i64]) -> StoreResult<Vec<ClaimedOp>> {
        self.register(schema);
        self.write(|db| logic::claim_ops(db, schema, seqs))
    }

    fn release_inflight(&self, seqs: &[i64]) -> StoreResult<()> {
        self.write(|db| logic::release_inflight(db, seqs, &|m| self.model(m)))
    }

    fn ack_op(
        &self,
        schema: &'static ModelSchema,
        seq: i64,
        version: i64,
        data: Option<&JsonObject>,
    ) -> StoreResult<()> {
        self.register(schema);
        let now = logic::now();
        self.write(|db| logic::ack_op(db, schema, seq, version, data, now))
    }

    fn ack_ops(&self, schema: &'static ModelSchema, acks: &[Ack]) -> StoreResult<()> {
        self.register(schema);
        let now = logic::now();
        self.write(|db| logic::ack_ops(db, schema, acks, now))
    }

    fn fail_op(&self, seq: i64, error: &str) -> StoreResult<()> {
        self.write(|db| logic::fail_op(db, seq, error, &|m| self.model(m)))
    }

    fn reschedule_op(
        &self,
        seq: i64,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> StoreResult<()> {
        self.write(|db| logic::reschedule_op(db, seq, next_attempt_at, error, &|m| self.model(m)))
    }

    fn requeue_inflight(&self) -> StoreResult<u64> {
        self.write(logic::requeue_inflight)
    }

    fn failed_ops(&self) -> StoreResult<Vec<OutboxOp>> {
        self.read(logic::failed_ops)
    }

    fn retry_failed(&self, seq: Option<i64>) -> StoreResult<u64> {
        self.write(|db| logic::retry_failed(db, seq, &|m| self.model(m)))
    }

    fn discard_op(&self, seq: i64) -> StoreResult<()> {
        self.write(|db| logic::discard_op(db, seq, &|m| self.model(m)))
    }

    fn apply_remote(
        &self,
        schema: &'static ModelSchema,
        user_id: Option<&str>,
        records: &[RemoteRecord],
        cursor: Option<&str>,
    ) -> StoreResult<RemoteApplied> {
        self.register(schema);
        let now = logic::now();
        self.write(|db| logic::apply_remote(db, schema, user_id, records, cursor, now))
    }

    fn resolve_conflict(
        &self,
        schema: &'static ModelSchema,
        remote: &RemoteRecord,
        resolution: &Resolution,
    ) -> StoreResult<()> {
        self.register(schema);
        let now = logic::now();
        self.write(|db| logic::resolve_conflict(db, schema, remote, resolution, now))
    }

    fn cursor(
        &self,
        schema: &'static ModelSchema,
        user_id: Option<&str>,
    ) -> StoreResult<Option<String>> {
        self.read(|db| logic::cursor(db, schema, user_id))
    }

    fn reset_cursor(&self, schema: &'static ModelSchema, user_id: Option<&str>) -> StoreResult<()> {
        self.write(|db| logic::reset_cursor(db, schema, user_id))
    }

    fn record_state(&self, schema: &'static ModelSchema, id: &str) -> StoreResult<RecordState> {
        self.read_tx(|db| logic::record_state(db, schema, id))
    }

    fn counts(&self) -> StoreResult<OutboxCounts> {
        self.read(logic::counts)
    }

    fn metadata(&self, user_id: Option<&str>, key: &str) -> StoreResult<Option<String>> {
        self.read(|db| logic::metadata(db, user_id, key))
    }

    fn set_metadata(&self, user_id: Option<&str>, key: &str, value: &str) -> StoreResult<()> {
        self.write(|db| logic::set_metadata(db, user_id, key, value))
    }

    fn claim_owner(&self, user: Option<&str>) -> StoreResult<Option<String>> {
        self.write(|db| logic::claim_owner(db, user))
    }

    fn known_versions(&self, schema: &'static ModelSchema) -> StoreResult<KnownVersions> {
        self.register(schema);
        self.read(|db| logic::known_versions(db, schema))
    }

    fn op_counts_by_model(&self) -> StoreResult<Vec<(String, u64, u64)>> {
        self.read(logic::op_counts_by_model)
    }

    fn forget_records(&self, schema: &'static ModelSchema, ids: &[String]) -> StoreResult<u64> {
        self.register(schema);
        self.write(|db| logic::forget_records(db, schema, ids))
    }

    fn known_checksum(&self, schema: &'static ModelSchema) -> StoreResult<(u64, Checksum)> {
        self.register(schema);
        if !self
            .keep_checksums
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            let known = self.read_tx(|db| logic::known_versions(db, schema))?;
            return Ok((
                u64::try_from(known.known.len()).unwrap_or(u64::MAX),
                known.checksum(),
            ));
        }
        // Counted already (every time but the first): one read, no write transaction.
        if let Some(kept) = self.read(|db| logic::kept_checksum(db, schema))? {
            return Ok(kept);
        }
        self.write(|db| logic::known_checksum(db, schema))
    }

    fn rekey_record(
        &self,
        schema: &'static ModelSchema,
        from: &str,
        to: &str,
    ) -> StoreResult<bool> {
        self.register(schema);
        self.write(|db| logic::rekey_record(db, schema, from, to))
    }

    fn quarantine(
        &self,
        schema: &'static ModelSchema,
        records: &[QuarantinedRecord],
    ) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.write(|db| logic::quarantine(db, schema, records))
    }

    fn quarantined(&self, schema: &'static ModelSchema) -> StoreResult<Vec<QuarantinedRecord>> {
        self.read(|db| logic::quarantined(db, schema))
    }

    fn release_quarantined(
        &self,
        schema: &'static ModelSchema,
        keys: &[String],
    ) -> StoreResult<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.write(|db| logic::release_quarantined(db, schema, keys))
    }
}
