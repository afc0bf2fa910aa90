//! Opening stores: pragmas, bookkeeping migrations, and clear errors for bad locations.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use diesel::{Connection, RunQueryDsl, SqliteConnection};
use support::{prepare, save, todo, Todo};
use sync_core::store::StoreError;
use sync_core::store::{LocalStore, OpState};
use sync_core::SyncModel;
use sync_diesel::{DieselStore, Error, BOOKKEEPING_SCHEMA_VERSION};

#[derive(diesel::QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

fn store_error(result: Result<DieselStore, Error>) -> StoreError {
    match result {
        Err(Error::Store(e)) => e,
        Err(other) => panic!("expected a store error, got {other}"),
        Ok(store) => panic!("expected an error, opened {store:?}"),
    }
}

#[test]
fn sqlite_opens_in_wal_mode_and_persists_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = DieselStore::sqlite(&path)
        .busy_timeout(Duration::from_millis(1500))
        .open_blocking()
        .unwrap();
    prepare(&store);
    save(&store, &todo("t1", "kept", 1));
    let seq = store.record_state(Todo::SCHEMA, "t1").unwrap().ops[0].seq;
    store.mark_inflight(&[seq]).unwrap();
    drop(store);

    let mut raw = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    let mode: Vec<Text> =
        diesel::sql_query("SELECT journal_mode AS value FROM pragma_journal_mode")
            .load(&mut raw)
            .unwrap();
    assert_eq!(mode[0].value, "wal");

    // Reopening keeps the data, and an op left in flight by the previous run is pending again.
    let store = DieselStore::open_sqlite_blocking(&path).unwrap();
    prepare(&store);
    let state = store.record_state(Todo::SCHEMA, "t1").unwrap();
    assert_eq!(state.ops.len(), 1);
    assert_eq!(state.ops[0].state, OpState::Pending);
    assert_eq!(store.location(), path.display().to_string());
}

/// `busy_timeout` is how long a write waits for another process's lock: a short one gives up
/// with a clear error while the lock is held, a long one waits and succeeds once it is gone.
#[test]
fn busy_timeout_decides_how_long_a_write_waits_for_another_writer() {
    use diesel::connection::SimpleConnection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let impatient = DieselStore::sqlite(&path)
        .busy_timeout(Duration::from_millis(50))
        .open_blocking()
        .unwrap();
    prepare(&impatient);
    let patient = DieselStore::sqlite(&path)
        .busy_timeout(Duration::from_secs(10))
        .open_blocking()
        .unwrap();
    prepare(&patient);

    // Another process (here: another connection) holds the write lock for a while.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder_path = path.clone();
    let holder = std::thread::spawn(move || {
        let mut other = SqliteConnection::establish(holder_path.to_str().unwrap()).unwrap();
        other.batch_execute("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        other.batch_execute("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let started = std::time::Instant::now();
    let fast = todo("fast", "x", 1);
    let data = support::json(&fast);
    let err = impatient
        .save(&sync_core::store::LocalWrite {
            schema: Todo::SCHEMA,
            id: "fast",
            data: &data,
            user_id: None,
            priority: 0,
            enqueue: true,
            version: None,
        })
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.to_string().contains("locked") || err.to_string().contains("busy"),
        "{err}"
    );
    save(&patient, &todo("slow", "y", 1));
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "it waited for the lock"
    );
    holder.join().unwrap();
    assert!(patient.get(Todo::SCHEMA, "slow").unwrap().is_some());
    assert!(patient.get(Todo::SCHEMA, "fast").unwrap().is_none());
}

#[tokio::test]
async fn the_async_constructor_opens_on_the_blocking_pool() {
    let dir = tempfile::tempdir().unwrap();
    let store = DieselStore::open_sqlite(dir.path().join("a.db"))
        .await
        .unwrap();
    let store: std::sync::Arc<dyn LocalStore> = std::sync::Arc::new(store);
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.prepare_model(Todo::SCHEMA, true))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.counts().unwrap().pending, 0);
}

#[test]
fn a_file_that_is_not_sqlite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are my notes, not a database\n".repeat(200)).unwrap();
    let err = store_error(DieselStore::open_sqlite_blocking(&path));
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    // The file is untouched.
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .starts_with("these are my notes"));
}

#[test]
fn a_store_written_by_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    drop(DieselStore::open_sqlite_blocking(&path).unwrap());
    let mut raw = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    diesel::sql_query("UPDATE _sync_schema_version SET version = 99")
        .execute(&mut raw)
        .unwrap();
    let err = store_error(DieselStore::open_sqlite_blocking(&path));
    match &err {
        StoreError::NewerSchema { found, known, .. } => {
            assert_eq!((*found, *known), (99, BOOKKEEPING_SCHEMA_VERSION));
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("newer schema version 99"), "{err}");
}

#[test]
fn a_missing_directory_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/app.db");
    let err = store_error(DieselStore::open_sqlite_blocking(&path));
    match &err {
        StoreError::Unavailable { reason, .. } => {
            assert!(reason.contains("does not exist"), "{err}")
        }
        other => panic!("{other}"),
    }
    let err = store_error(DieselStore::open_sqlite_blocking(dir.path()));
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
}

#[test]
fn a_read_only_directory_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // root ignores directory permissions; /proc refuses new files to everyone.
    let writable = std::fs::write(ro.join("probe"), b"x").is_ok();
    let path = if writable {
        std::path::PathBuf::from(format!("/proc/{}/app.db", std::process::id()))
    } else {
        ro.join("app.db")
    };
    let err = store_error(DieselStore::open_sqlite_blocking(&path));
    match &err {
        StoreError::Unavailable { reason, .. } => assert!(reason.contains("writable"), "{err}"),
        other => panic!("{other}"),
    }
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn postgres_refuses_a_newer_schema_and_an_unreachable_server() {
    let Some(schema) = sync_testkit::PgSchema::create("pg_open") else {
        return;
    };
    let url = schema.url().to_owned();
    let store = DieselStore::open_postgres_blocking(url.clone()).unwrap();
    prepare(&store);
    drop(store);
    let mut raw = diesel::PgConnection::establish(&url).unwrap();
    let newer = BOOKKEEPING_SCHEMA_VERSION + 1;
    diesel::sql_query(format!("UPDATE _sync_schema_version SET version = {newer}"))
        .execute(&mut raw)
        .unwrap();
    let err = store_error(DieselStore::open_postgres_blocking(url.clone()));
    assert!(
        matches!(err, StoreError::NewerSchema { found, .. } if found == newer),
        "{err}"
    );

    let err = store_error(
        DieselStore::postgres("postgres://nobody:secret@127.0.0.1:1/none")
            .connect_timeout(Duration::from_millis(300))
            .open_blocking(),
    );
    match &err {
        StoreError::Unavailable { path, .. } => assert!(!path.contains("secret"), "{path}"),
        other => panic!("{other}"),
    }
}
