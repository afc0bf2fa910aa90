//! Shared fixtures: the test models and a store per backend.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod models;

use std::sync::atomic::{AtomicU32, Ordering};

use diesel::{Connection, PgConnection, RunQueryDsl};
use offline_sync_kit::store::{JsonObject, LocalStore, LocalWrite};
use offline_sync_kit::SyncModel;
use sync_diesel::DieselStore;

pub use models::{Gadget, Spec, Todo};

/// Env var naming the Postgres server of the Postgres runs.
pub const PG_ENV: &str = "SYNC_TEST_POSTGRES_URL";

/// A store under test, with what keeps its database alive.
pub struct Fixture {
    pub store: DieselStore,
    pub backend: &'static str,
    /// SQLite: the temp dir. Postgres: drops the schema.
    _guard: Guard,
    /// SQLite: the database file. Postgres: the URL (with search_path).
    pub location: String,
}

enum Guard {
    Dir(tempfile::TempDir),
    Schema { url: String, schema: String },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Schema { url, schema } = self {
            if let Ok(mut conn) = PgConnection::establish(url) {
                let _ = diesel::sql_query(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut conn);
            }
        }
    }
}

pub fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = DieselStore::open_sqlite_blocking(&path).unwrap();
    Fixture {
        store,
        backend: "sqlite",
        location: path.display().to_string(),
        _guard: Guard::Dir(dir),
    }
}

/// A fresh schema on the test Postgres server, or `None` (with a printed
/// skip line) when `SYNC_TEST_POSTGRES_URL` is not set.
pub fn postgres_url(test: &str) -> Option<(String, PgSchema)> {
    let Ok(base) = std::env::var(PG_ENV) else {
        println!("SKIP postgres run of `{test}`: {PG_ENV} is not set");
        return None;
    };
    static N: AtomicU32 = AtomicU32::new(0);
    let schema = format!(
        "t_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        test.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(20)
            .collect::<String>()
            .to_ascii_lowercase()
    );
    let mut conn = PgConnection::establish(&base).unwrap();
    diesel::sql_query(format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
    Some((
        url,
        PgSchema {
            base,
            schema: Some(schema),
        },
    ))
}

/// Drops a test schema when dropped.
pub struct PgSchema {
    base: String,
    schema: Option<String>,
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            drop(Guard::Schema {
                url: self.base.clone(),
                schema,
            });
        }
    }
}

pub fn postgres(test: &str) -> Option<Fixture> {
    let (url, mut schema) = postgres_url(test)?;
    let store = DieselStore::open_postgres_blocking(url.clone()).unwrap();
    let name = schema.schema.take().unwrap_or_default();
    Some(Fixture {
        store,
        backend: "postgres",
        location: url,
        _guard: Guard::Schema {
            url: schema.base.clone(),
            schema: name,
        },
    })
}

/// Runs `case` against SQLite, then against Postgres when configured.
pub fn on_every_backend(test: &str, case: impl Fn(&Fixture)) {
    let fixture = sqlite();
    case(&fixture);
    if let Some(fixture) = postgres(test) {
        case(&fixture);
    }
}

/// Prepares the test models (auto-migration).
pub fn prepare(store: &DieselStore) {
    store.prepare_model(Todo::SCHEMA, true).unwrap();
    store.prepare_model(Gadget::SCHEMA, true).unwrap();
}

pub fn todo(id: &str, title: &str, priority: i32) -> Todo {
    Todo {
        id: id.into(),
        title: title.into(),
        description: String::new(),
        is_completed: false,
        priority,
        tags: vec!["home".into()],
        due: None,
    }
}

pub fn json<M: SyncModel>(model: &M) -> JsonObject {
    model.to_record_json().unwrap()
}

/// Saves a model with an outbox op.
pub fn save<M: SyncModel>(
    store: &dyn LocalStore,
    model: &M,
) -> offline_sync_kit::store::SaveOutcome {
    let data = json(model);
    store
        .save(&LocalWrite {
            schema: M::SCHEMA,
            id: &model.id(),
            data: &data,
            user_id: None,
            priority: 0,
            enqueue: true,
            version: None,
        })
        .unwrap()
}
