//! WAL checkpoints off the commit path: the store's own thread folds the write-ahead log into
//! the database file a moment after writes, ends with the store, and never creates a file.
//!
//! One test function, so that no other test's store adds checkpoint threads while it counts
//! them.
//!
//! Guards against: a checkpoint thread that never runs (the WAL grows until the backstop
//! checkpoints at commit, the latency this thread exists to avoid), one that outlives its
//! store, and one that re-creates a store file deleted under it (an account wiped while its
//! store was still open).

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, RunQueryDsl};
use support::{prepare, save, todo};
use sync_diesel::DieselStore;

/// Threads of this process named like the store's checkpoint thread.
fn checkpoint_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| t.ok())
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|name| name.trim() == "sync-checkpoint")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Waits (at most 10 s) until `checkpoint_threads()` is `n`.
fn wait_for_threads(n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = checkpoint_threads();
        if found == n || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Rows of `todos` in the database file at `path` read alone, without its WAL.
fn rows_in_main_file(path: &Path, scratch: &Path) -> i64 {
    let copy = scratch.join("main-file-only.db");
    std::fs::copy(path, &copy).unwrap();
    let mut conn = SqliteConnection::establish(copy.to_str().unwrap()).unwrap();
    conn.batch_execute("PRAGMA journal_mode = DELETE;").unwrap();
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT COUNT(*) AS n FROM todos")
        .load::<Count>(&mut conn)
        .unwrap()[0]
        .n
}

#[test]
fn the_store_thread_folds_the_wal_ends_with_the_store_and_creates_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let before = checkpoint_threads();

    let store = DieselStore::open_sqlite_blocking(&path).unwrap();
    assert_eq!(
        wait_for_threads(before + 1),
        before + 1,
        "one thread per store"
    );
    prepare(&store);
    for i in 0..300 {
        save(&store, &todo(&format!("t{i}"), "title", 1));
    }

    // The thread runs by itself a moment after the writes.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = store.checkpoint_stats().unwrap();
        if stats.frames_copied > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no background checkpoint: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Asked for, it folds everything in: the main file alone holds all 300 rows.
    let stats = store.checkpoint().unwrap().unwrap();
    assert!(stats.runs >= 2, "{stats:?}");
    assert_eq!(rows_in_main_file(&path, dir.path()), 300);

    drop(store);
    assert_eq!(
        wait_for_threads(before),
        before,
        "the thread ends with its store"
    );

    // A store whose files are deleted under it (an account wiped while its store is still
    // held): the thread's next checkpoint creates nothing at the path.
    let store = DieselStore::open_sqlite_blocking(&path).unwrap();
    prepare(&store);
    save(&store, &todo("late", "title", 1));
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.path().join(format!("store.db{suffix}"));
        if file.exists() {
            std::fs::remove_file(&file).unwrap();
        }
    }
    let _ = store.checkpoint();
    drop(store);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = dir.path().join(format!("store.db{suffix}"));
        assert!(!file.exists(), "{} was created again", file.display());
    }
}
