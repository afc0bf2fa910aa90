//! One database per test: a SQLite file in a temp dir, or a fresh schema on the test Postgres
//! server, and [`backend_matrix!`](crate::backend_matrix), which runs a test on each backend.

use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// The environment variable naming the test Postgres server
/// (e.g. `postgres://postgres@127.0.0.1:5432/test`). Unset: the Postgres runs are skipped,
/// each with a printed reason.
pub const POSTGRES_URL_ENV: &str = "SYNC_TEST_POSTGRES_URL";

/// A schema of its own on the test Postgres server, dropped (with its tables) when this is
/// dropped. Its [`url`](PgSchema::url) sets `search_path` to it, so a connection made from
/// that URL sees only this test's tables.
#[derive(Debug)]
pub struct PgSchema {
    base: String,
    schema: String,
    url: String,
}

impl PgSchema {
    /// Creates a fresh schema for `test`, or returns `None` after printing why the Postgres
    /// run is skipped when [`POSTGRES_URL_ENV`] is unset.
    pub fn create(test: &str) -> Option<PgSchema> {
        let Ok(base) = std::env::var(POSTGRES_URL_ENV) else {
            eprintln!(
                "SKIP Postgres run of `{test}`: set {POSTGRES_URL_ENV} \
                 (e.g. postgres://postgres@127.0.0.1:5432/test) to run it"
            );
            return None;
        };
        // Unique across processes and runs; the test name makes a leftover schema readable.
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        let name: String = test
            .rsplit("::")
            .next()
            .unwrap_or(test)
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(24)
            .collect::<String>()
            .to_ascii_lowercase();
        let schema = format!("t_{}_{name}", &uuid[..16]);
        let mut conn = PgConnection::establish(&base)
            .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_ENV}={base}: {e}"));
        conn.batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
        Some(PgSchema { base, schema, url })
    }

    /// The server's URL with `search_path` set to this schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's URL as [`POSTGRES_URL_ENV`] gives it (no `search_path`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.schema
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&self.base) {
            let _ = conn.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            ));
        }
    }
}

/// A database for one test: a SQLite file in a temp dir, or a [`PgSchema`].
#[derive(Debug)]
pub struct TestDb {
    /// The database URL (`sqlite://...`, or a Postgres URL with `search_path` set).
    pub url: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Sqlite {
        dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres(PgSchema),
}

impl TestDb {
    /// A SQLite file (not yet created) in a fresh temp dir.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sync.db");
        TestDb {
            url: format!("sqlite://{}", path.display()),
            kind: Kind::Sqlite { dir, path },
        }
    }

    /// A fresh Postgres schema, or `None` (after printing why) when [`POSTGRES_URL_ENV`] is
    /// unset.
    pub fn postgres(test: &str) -> Option<TestDb> {
        let schema = PgSchema::create(test)?;
        Some(TestDb {
            url: schema.url().to_owned(),
            kind: Kind::Postgres(schema),
        })
    }

    /// Whether this is the Postgres database.
    pub fn is_postgres(&self) -> bool {
        matches!(self.kind, Kind::Postgres(_))
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.kind {
            Kind::Sqlite { .. } => "sqlite",
            Kind::Postgres(_) => "postgres",
        }
    }

    /// The SQLite file, `None` on Postgres.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Sqlite { path, .. } => Some(path),
            Kind::Postgres(_) => None,
        }
    }

    /// The Postgres schema, `None` on SQLite.
    pub fn pg_schema(&self) -> Option<&PgSchema> {
        match &self.kind {
            Kind::Sqlite { .. } => None,
            Kind::Postgres(schema) => Some(schema),
        }
    }

    /// The temp dir of the SQLite file, `None` on Postgres.
    pub fn sqlite_dir(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Sqlite { dir, .. } => Some(dir.path()),
            Kind::Postgres(_) => None,
        }
    }
}

/// What a test of [`backend_matrix!`](crate::backend_matrix) receives: built from the
/// test's [`TestDb`] (a store opened on it, or the database itself).
pub trait FromTestDb: Sized {
    /// Opens the fixture on `db`, which it keeps alive.
    fn from_test_db(db: TestDb) -> Self;
}

impl FromTestDb for TestDb {
    fn from_test_db(db: TestDb) -> Self {
        db
    }
}

/// Makes one test per backend of each listed function: `sqlite::<name>` always and
/// `postgres::<name>` (which prints a skip reason and passes when
/// [`POSTGRES_URL_ENV`](crate::POSTGRES_URL_ENV) is unset), so each backend shows as its own
/// test.
///
/// The functions are defined beside the macro call and take their fixture, any type with
/// [`FromTestDb`](crate::postgres::FromTestDb):
///
/// - `async: a, b` makes `#[tokio::test]`s (multi-threaded, 4 workers) of
///   `async fn a(db: F)`;
/// - `sync: a, b` makes plain `#[test]`s of `fn a(f: &F)`.
///
/// ```
/// use sync_testkit::TestDb;
///
/// // Makes the tests `sqlite::the_url_names_the_backend` and
/// // `postgres::the_url_names_the_backend`.
/// sync_testkit::backend_matrix!(sync: the_url_names_the_backend);
///
/// fn the_url_names_the_backend(db: &TestDb) {
///     assert_eq!(db.url.starts_with("sqlite://"), !db.is_postgres());
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! backend_matrix {
    (async: $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::TestDb::sqlite();
                    super::$name($crate::postgres::FromTestDb::from_test_db(db)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = $crate::TestDb::postgres(stringify!($name)) else {
                        return;
                    };
                    super::$name($crate::postgres::FromTestDb::from_test_db(db)).await;
                }
            )*
        }
    };
    (sync: $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let db = $crate::TestDb::sqlite();
                    super::$name(&$crate::postgres::FromTestDb::from_test_db(db));
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let Some(db) = $crate::TestDb::postgres(stringify!($name)) else {
                        return;
                    };
                    super::$name(&$crate::postgres::FromTestDb::from_test_db(db));
                }
            )*
        }
    };
}
