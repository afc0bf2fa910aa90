//! Storage of records, idempotency keys and the version sequence, through Diesel on SQLite and
//! Postgres (ARCHITECTURE.md, "sync-server").
//!
//! In data-flow order: [`url`] picks the backend, [`Store`] (here) runs every call on tokio's
//! blocking pool, [`rows`] are what is read and how it becomes wire JSON, [`planner`] decides a
//! batch in memory, [`write`] loads and writes it in one transaction, and the backend modules
//! (`sqlite`, `postgres`) hold the statements that differ: how a writing transaction takes the
//! version lock, how filters read JSON, how rows are bound and inserted, and (Postgres) the
//! NOTIFY that reaches other instances.

pub(crate) mod meta;
mod planner;
pub(crate) mod postgres;
mod rows;
pub(crate) mod schema;
mod sqlite;
mod url;
mod write;

use std::sync::atomic::AtomicI32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use diesel::r2d2::{ConnectionManager, Pool};
use diesel::{PgConnection, SqliteConnection};

use crate::error::{Error, Result};

pub(crate) use self::planner::WriteSettings;
pub(crate) use self::rows::{Filter, IdemRow, Page, PageQuery, RawResult, RecordRow, WriteOp};
pub(crate) use self::url::DatabaseUrl;
pub(crate) use self::write::WriteOutcome;

const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations");

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

    /// Runs `f` on a pooled connection of either backend, on the blocking pool.
    async fn with_conn<T: Send + 'static>(
        &self,
        sqlite: impl FnOnce(&mut diesel::SqliteConnection) -> Result<T> + Send + 'static,
        pg: impl FnOnce(&mut diesel::PgConnection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let backend = self.backend.clone();
        blocking(move || match backend {
            Backend::Sqlite(pool) => sqlite(&mut *pool.get().map_err(Error::Pool)?),
            Backend::Pg(pool) => pg(&mut *pool.get().map_err(Error::Pool)?),
        })
        .await
    }

    /// `owner`'s devices (most recently seen first) and collections (counts and checksums).
    pub(crate) async fn sync_metadata(
        &self,
        owner: &str,
    ) -> Result<(
        Vec<crate::protocol::DeviceInfo>,
        Vec<(String, crate::protocol::CollectionSummary)>,
    )> {
        let (o1, o2) = (owner.to_owned(), owner.to_owned());
        self.with_conn(
            move |c| {
                Ok((
                    meta::sqlite::devices(c, &o1)?,
                    meta::sqlite::collections(c, &o1)?,
                ))
            },
            move |c| {
                Ok((
                    meta::postgres::devices(c, &o2)?,
                    meta::postgres::collections(c, &o2)?,
                ))
            },
        )
        .await
    }

    /// Records a request of `device` of `owner` (a finished sync if `synced`).
    pub(crate) async fn touch_device(&self, owner: &str, device: &str, synced: bool) -> Result<()> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let (o1, d1, n1) = (owner.to_owned(), device.to_owned(), now.clone());
        let (o2, d2, n2) = (owner.to_owned(), device.to_owned(), now);
        let lock = Arc::clone(&self.write_lock);
        self.with_conn(
            // SQLite has one writer: queue behind the other writers of this process, as
            // `write` does, rather than meet them in SQLite's busy handler.
            move |c| {
                let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
                meta::sqlite::touch_device(c, &o1, &d1, &n1, synced)
            },
            move |c| meta::postgres::touch_device(c, &o2, &d2, &n2, synced),
        )
        .await
    }

    /// Forgets `device` of `owner`; true if it was known.
    pub(crate) async fn forget_device(&self, owner: &str, device: &str) -> Result<bool> {
        let (o1, d1) = (owner.to_owned(), device.to_owned());
        let (o2, d2) = (o1.clone(), d1.clone());
        let lock = Arc::clone(&self.write_lock);
        self.with_conn(
            move |c| {
                let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
                meta::sqlite::forget_device(c, &o1, &d1)
            },
            move |c| meta::postgres::forget_device(c, &o2, &d2),
        )
        .await
    }

    /// Up to `limit` records of `owner`'s `collection` after the id `after`, by id.
    pub(crate) async fn digest_page(
        &self,
        owner: &str,
        collection: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<crate::protocol::DigestEntry>> {
        let (o1, c1, a1) = (owner.to_owned(), collection.to_owned(), after.to_owned());
        let (o2, c2, a2) = (o1.clone(), c1.clone(), a1.clone());
        self.with_conn(
            move |c| meta::sqlite::digest_page(c, &o1, &c1, &a1, limit),
            move |c| meta::postgres::digest_page(c, &o2, &c2, &a2, limit),
        )
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

    /// A page of `owner`'s collection: records with a version above `page.since`, in version
    /// order, tombstones included, skipping the first `page.offset`, cut at `page.limit` rows
    /// or `page.max_bytes`, read in one transaction.
    pub(crate) async fn pull(
        &self,
        owner: &str,
        collection: &str,
        page: PageQuery,
    ) -> Result<Page> {
        let backend = self.backend.clone();
        let (owner, collection) = (owner.to_owned(), collection.to_owned());
        blocking(move || match backend {
            Backend::Sqlite(pool) => sqlite::pull(
                &mut *pool.get().map_err(Error::Pool)?,
                &owner,
                &collection,
                &page,
            ),
            Backend::Pg(pool) => postgres::pull(
                &mut *pool.get().map_err(Error::Pool)?,
                &owner,
                &collection,
                &page,
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
        settings: WriteSettings,
    ) -> Result<WriteOutcome> {
        let backend = self.backend.clone();
        let owner = owner.to_owned();
        let lock = self.write_lock.clone();
        let notify = self.notify.clone();
        blocking(move || match backend {
            Backend::Sqlite(pool) => {
                let mut conn = pool.get().map_err(Error::Pool)?;
                let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
                write::write(&mut *conn, &owner, &ops, settings, None)
            }
            Backend::Pg(pool) => write::write(
                &mut *pool.get().map_err(Error::Pool)?,
                &owner,
                &ops,
                settings,
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

/// The SQLite JSON path of a top-level key.
fn sqlite_json_path(field: &str) -> String {
    format!("$.\"{field}\"")
}
