//! The migration generator, and the repository's generated `migrations/`.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use diesel::{Connection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use serde::{Deserialize, Serialize};
use support::generator::migration_generator;
use support::{prepare, save, todo, Gadget, Todo};
use sync_core::store::LocalStore;
use sync_core::SyncModel;
use sync_derive::SyncModel;
use sync_diesel::{Backend, DieselStore, Error, MigrationGenerator, SNAPSHOT_FILE};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

fn committed(backend: Backend) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(backend.name())
}

fn files(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            for (inner, text) in files(&entry.path()) {
                out.insert(format!("{name}/{inner}"), text);
            }
        } else {
            out.insert(name, std::fs::read_to_string(entry.path()).unwrap());
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for (name, text) in files(from) {
        let path = to.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

#[test]
fn the_committed_migrations_match_the_models() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&committed(backend), tmp.path());
        let written = migration_generator(tmp.path(), backend).write().unwrap();
        let names: Vec<String> = written.into_iter().map(|m| m.name).collect();
        assert!(
            names.is_empty(),
            "migrations/{} is out of date with the models: the generator would write {names:?}; \
             run `cargo run -p sync-diesel --example regenerate_migrations` and commit the result",
            backend.name()
        );
        assert_eq!(
            files(tmp.path()),
            files(&committed(backend)),
            "migrations/{} differs from what the generator writes",
            backend.name()
        );
    }
}

#[test]
fn generated_output_is_deterministic() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        migration_generator(a.path(), backend).write().unwrap();
        migration_generator(b.path(), backend).write().unwrap();
        assert_eq!(files(a.path()), files(b.path()));
        assert_eq!(files(a.path()), files(&committed(backend)));
    }
}

#[test]
fn the_committed_sqlite_migrations_run_with_embed_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    let applied = conn.run_pending_migrations(SQLITE_MIGRATIONS).unwrap();
    assert_eq!(applied.len(), 2);
    drop(conn);
    let store = DieselStore::open_sqlite_blocking(&path).unwrap();
    store.prepare_model(Todo::SCHEMA, false).unwrap();
    store.prepare_model(Gadget::SCHEMA, false).unwrap();
    save(&store, &todo("t", "works", 1));
    assert!(store.get(Todo::SCHEMA, "t").unwrap().is_some());
    // The store can also run them itself (nothing left to apply here).
    assert!(store.run_migrations(SQLITE_MIGRATIONS).unwrap().is_empty());
}

#[test]
fn the_committed_postgres_migrations_run_with_embed_migrations() {
    let Some(schema) = sync_testkit::PgSchema::create("pg_migrations") else {
        return;
    };
    let url = schema.url().to_owned();
    let store = DieselStore::open_postgres_blocking(url).unwrap();
    assert_eq!(store.run_migrations(POSTGRES_MIGRATIONS).unwrap().len(), 2);
    store.prepare_model(Todo::SCHEMA, false).unwrap();
    store.prepare_model(Gadget::SCHEMA, false).unwrap();
    save(&store, &todo("t", "works", 1));
    assert!(store.get(Todo::SCHEMA, "t").unwrap().is_some());
}

/// `Todo` one release later: two new fields and a new index.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(
    crate = "::sync_core",
    model_type = "todo",
    endpoint = "todos",
    table = "todos"
)]
#[serde(rename_all = "camelCase")]
struct TodoV2 {
    #[sync(id)]
    id: String,
    #[sync(index)]
    title: String,
    #[serde(default)]
    description: String,
    is_completed: bool,
    #[sync(index)]
    priority: i32,
    #[sync(json)]
    tags: Vec<String>,
    due: Option<chrono::DateTime<chrono::Utc>>,
    estimate_minutes: i32,
    note: Option<String>,
}

/// `Todo` without its `tags`.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(
    crate = "::sync_core",
    model_type = "todo",
    endpoint = "todos",
    table = "todos"
)]
#[serde(rename_all = "camelCase")]
struct TodoNoTags {
    #[sync(id)]
    id: String,
    title: String,
    #[serde(default)]
    description: String,
    is_completed: bool,
    #[sync(index)]
    priority: i32,
    due: Option<chrono::DateTime<chrono::Utc>>,
}

/// `Todo` whose priority became text.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(
    crate = "::sync_core",
    model_type = "todo",
    endpoint = "todos",
    table = "todos"
)]
#[serde(rename_all = "camelCase")]
struct TodoTextPriority {
    #[sync(id)]
    id: String,
    title: String,
    #[serde(default)]
    description: String,
    is_completed: bool,
    #[sync(index)]
    priority: String,
    #[sync(json)]
    tags: Vec<String>,
    due: Option<chrono::DateTime<chrono::Utc>>,
}

fn at(h: u32) -> chrono::NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(2025, 3, 1)
        .unwrap()
        .and_hms_opt(h, 0, 0)
        .unwrap()
}

#[test]
fn an_added_field_becomes_an_add_column_migration_that_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    let first = MigrationGenerator::new(&migrations)
        .model::<Todo>()
        .timestamp(at(1))
        .write()
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].name, "2025-03-01-010000_create_todos");
    assert!(migrations.join(SNAPSHOT_FILE).is_file());
    // Nothing changed: nothing written.
    let again = MigrationGenerator::new(&migrations)
        .model::<Todo>()
        .timestamp(at(2))
        .write()
        .unwrap();
    assert!(again.is_empty());

    // Apply the first migration and store a record with the old model.
    let db = dir.path().join("app.db");
    let store = DieselStore::open_sqlite_blocking(&db).unwrap();
    let embedded = diesel_migrations::FileBasedMigrations::from_path(&migrations).unwrap();
    let mut conn = SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    conn.run_pending_migrations(embedded).unwrap();
    store.prepare_model(Todo::SCHEMA, false).unwrap();
    save(&store, &todo("old", "kept", 3));

    // The model grows: an incremental migration, dated after the last one.
    let plan = MigrationGenerator::new(&migrations)
        .model::<TodoV2>()
        .timestamp(at(0))
        .plan()
        .unwrap();
    assert_eq!(plan.len(), 1);
    let m = &plan[0];
    assert_eq!(m.name, "2025-03-01-010001_alter_todos");
    assert!(
        m.up.contains(
            "ALTER TABLE \"todos\" ADD COLUMN \"estimate_minutes\" INTEGER NOT NULL DEFAULT 0;"
        ),
        "{}",
        m.up
    );
    assert!(
        m.up.contains("ALTER TABLE \"todos\" ADD COLUMN \"note\" TEXT;"),
        "{}",
        m.up
    );
    assert!(
        m.up.contains("CREATE INDEX \"todos_title_idx\""),
        "{}",
        m.up
    );
    assert!(
        m.down.contains("DROP COLUMN \"estimate_minutes\""),
        "{}",
        m.down
    );
    let written = MigrationGenerator::new(&migrations)
        .model::<TodoV2>()
        .timestamp(at(0))
        .write()
        .unwrap();
    assert_eq!(written, plan);
    let embedded = diesel_migrations::FileBasedMigrations::from_path(&migrations).unwrap();
    conn.run_pending_migrations(embedded).unwrap();
    drop(store);
    let store = DieselStore::open_sqlite_blocking(&db).unwrap();
    store.prepare_model(TodoV2::SCHEMA, false).unwrap();
    let old = store.get(TodoV2::SCHEMA, "old").unwrap().unwrap();
    let old: TodoV2 = serde_json::from_value(serde_json::Value::Object(old.data)).unwrap();
    assert_eq!(
        (old.title.as_str(), old.estimate_minutes, old.note),
        ("kept", 0, None)
    );
    // And the down migration reverts it.
    let embedded = diesel_migrations::FileBasedMigrations::from_path(&migrations).unwrap();
    conn.revert_last_migration(embedded).unwrap();
}

#[test]
fn dropped_or_retyped_fields_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let generator = |allow: bool| {
        MigrationGenerator::new(dir.path())
            .timestamp(at(1))
            .allow_destructive(allow)
    };
    generator(false).model::<Todo>().write().unwrap();
    let err = generator(false).model::<TodoNoTags>().write().unwrap_err();
    match &err {
        Error::Destructive { field, change, .. } => {
            assert_eq!(field, "tags");
            assert!(change.contains("removed"), "{err}");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("allow_destructive"), "{err}");
    let err = generator(false)
        .model::<TodoTextPriority>()
        .write()
        .unwrap_err();
    match &err {
        Error::Destructive { field, change, .. } => {
            assert_eq!(field, "priority");
            assert!(
                change.contains("INTEGER NOT NULL to TEXT NOT NULL"),
                "{err}"
            );
        }
        other => panic!("{other}"),
    }
    // Nothing was written by the refused runs.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    let written = generator(true).model::<TodoNoTags>().write().unwrap();
    assert_eq!(written.len(), 1);
    assert!(
        written[0].up.contains("DROP COLUMN \"tags\""),
        "{}",
        written[0].up
    );
}

#[test]
fn generator_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = MigrationGenerator::new(dir.path()).write().unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let err = MigrationGenerator::new(dir.path())
        .model::<Todo>()
        .model::<TodoV2>()
        .write()
        .unwrap_err();
    assert!(err.to_string().contains("both use table `todos`"), "{err}");
    std::fs::write(dir.path().join(SNAPSHOT_FILE), "{ not json").unwrap();
    let err = MigrationGenerator::new(dir.path())
        .model::<Todo>()
        .write()
        .unwrap_err();
    assert!(matches!(err, Error::Snapshot { .. }), "{err}");
    // One directory per backend.
    let sqlite = tempfile::tempdir().unwrap();
    MigrationGenerator::new(sqlite.path())
        .model::<Todo>()
        .write()
        .unwrap();
    let err = MigrationGenerator::new(sqlite.path())
        .model::<Todo>()
        .backend(Backend::Postgres)
        .write()
        .unwrap_err();
    assert!(
        err.to_string().contains("one directory per backend"),
        "{err}"
    );
    let _ = prepare;
}
