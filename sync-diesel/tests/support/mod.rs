//! Shared fixtures of the store tests: a store on each backend and helpers to write records.
//! The models, the Postgres schema per test and the backend matrix are `sync_testkit`'s.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod generator;

use sync_core::store::{JsonObject, LocalStore, LocalWrite};
use sync_core::SyncModel;
use sync_diesel::DieselStore;
use sync_testkit::postgres::FromTestDb;
use sync_testkit::TestDb;

pub use sync_testkit::{Gadget, Spec, Todo};

/// A store under test, with the database that keeps it alive.
pub struct Fixture {
    pub store: DieselStore,
    pub backend: &'static str,
    /// SQLite: the database file. Postgres: the URL (with `search_path`).
    pub location: String,
    /// Dropped after the store: SQLite's temp dir, or the Postgres schema.
    _db: TestDb,
}

impl FromTestDb for Fixture {
    fn from_test_db(db: TestDb) -> Self {
        let (store, location) = match db.sqlite_path() {
            Some(path) => (
                DieselStore::open_sqlite_blocking(path).unwrap(),
                path.display().to_string(),
            ),
            None => (
                DieselStore::open_postgres_blocking(db.url.clone()).unwrap(),
                db.url.clone(),
            ),
        };
        Fixture {
            store,
            backend: db.backend(),
            location,
            _db: db,
        }
    }
}

/// A store on a SQLite file in a temp dir.
pub fn sqlite() -> Fixture {
    Fixture::from_test_db(TestDb::sqlite())
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
pub fn save<M: SyncModel>(store: &dyn LocalStore, model: &M) -> sync_core::store::SaveOutcome {
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

/// A second store on the fixture's database (as another process would open it).
pub fn reopen(f: &Fixture) -> DieselStore {
    match f.backend {
        "sqlite" => DieselStore::open_sqlite_blocking(&f.location).unwrap(),
        _ => DieselStore::open_postgres_blocking(f.location.clone()).unwrap(),
    }
}
