//! The encrypted SQLite store (feature `encryption`): nothing readable in the
//! file or its WAL, a clear error for every wrong key or damaged file with the
//! file left as it was, re-writes (`enable_encryption`, `rekey`,
//! `disable_encryption`) that keep every row, op and cursor, and a re-write
//! killed at any moment that never loses or corrupts the store.
//!
//! The crash children are this test binary re-run with an environment variable set.

#![cfg(feature = "encryption")]
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl, SqliteConnection};
use support::{json, prepare, save, todo, Todo};
use sync_core::store::{LocalStore, RemoteRecord, StoreQuery};
use sync_core::SyncModel;
use sync_diesel::{DieselStore, Error, StoreKey};

const MARKER: &str = "MARKER-plaintext-7f3a";
const KEY_A: [u8; 32] = [0xA1; 32];
const KEY_B: [u8; 32] = [0xB2; 32];

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn wal(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Writes records, ops in every state, a cursor, metadata and a tombstone.
fn fill(store: &DieselStore) {
    prepare(store);
    for i in 0..30 {
        save(
            store,
            &todo(&format!("t{i}"), &format!("{MARKER} {i}"), i % 5),
        );
    }
    // A failed op, a pulled page with its cursor, a remote tombstone, metadata.
    let ready = store.ready_ops(Utc::now(), 1).unwrap();
    let seqs: Vec<i64> = ready.iter().map(|o| o.seq).collect();
    store.mark_inflight(&seqs).unwrap();
    store.fail_op(seqs[0], "refused: 422").unwrap();
    let remote = |id: &str, version: i64, deleted: bool| RemoteRecord {
        id: id.into(),
        version,
        deleted,
        data: json(&todo(id, &format!("{MARKER} remote"), 1)),
        updated_at: None,
    };
    store
        .apply_remote(
            Todo::SCHEMA,
            None,
            &[remote("r1", 10, false), remote("r2", 11, false)],
            Some("cursor-11"),
        )
        .unwrap();
    store
        .apply_remote(
            Todo::SCHEMA,
            None,
            &[remote("r2", 12, true)],
            Some("cursor-12"),
        )
        .unwrap();
    store
        .set_metadata(None, "device_id", &format!("{MARKER} device"))
        .unwrap();
}

#[derive(diesel::QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

/// Every table's schema and rows (the counts row too, which keeps what the
/// outbox's seqs are counted from) as text, read on a
/// connection of its own, for comparing a store before and after a re-write.
/// An empty `sqlite_sequence` is left out: the outbox's AUTOINCREMENT made it
/// before bookkeeping migration 7, SQLite cannot drop it, and `sqlcipher_export`
/// does not copy it when no table uses it any more.
fn dump(path: &Path, key: Option<[u8; 32]>) -> Vec<String> {
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    if let Some(key) = key {
        let hex: String = key.iter().map(|b| format!("{b:02X}")).collect();
        conn.batch_execute(&format!("PRAGMA key = 'x''{hex}''';"))
            .unwrap();
    }
    let count = |conn: &mut SqliteConnection, sql: &str| -> String {
        let rows: Vec<Text> = diesel::sql_query(sql).load(conn).unwrap();
        rows.into_iter().next().map(|t| t.value).unwrap_or_default()
    };
    let has_sequence = count(
        &mut conn,
        "SELECT CAST(COUNT(*) AS TEXT) AS value FROM sqlite_master WHERE name = 'sqlite_sequence'",
    ) != "0";
    let empty_sequence = if has_sequence
        && count(
            &mut conn,
            "SELECT CAST(COUNT(*) AS TEXT) AS value FROM sqlite_sequence",
        ) == "0"
    {
        "name <> 'sqlite_sequence'"
    } else {
        "1 = 1"
    };
    let tables: Vec<Text> = diesel::sql_query(format!(
        "SELECT name || ': ' || COALESCE(sql, '') AS value FROM sqlite_master \
         WHERE name NOT LIKE 'sqlite_autoindex%' AND {empty_sequence} ORDER BY type, name"
    ))
    .load(&mut conn)
    .unwrap();
    let mut out: Vec<String> = tables.iter().map(|t| t.value.clone()).collect();
    let names: Vec<Text> = diesel::sql_query(format!(
        "SELECT name AS value FROM sqlite_master WHERE type = 'table' AND {empty_sequence} \
         ORDER BY name"
    ))
    .load(&mut conn)
    .unwrap();
    for table in names {
        let columns: Vec<Text> = diesel::sql_query(format!(
            "SELECT name AS value FROM pragma_table_info('{}')",
            table.value
        ))
        .load(&mut conn)
        .unwrap();
        let row = columns
            .iter()
            .map(|c| format!("quote(\"{}\")", c.value))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let rows: Vec<Text> = diesel::sql_query(format!(
            "SELECT {row} AS value FROM \"{}\" ORDER BY 1",
            table.value
        ))
        .load(&mut conn)
        .unwrap();
        out.push(format!("{} ({} rows)", table.value, rows.len()));
        out.extend(
            rows.into_iter()
                .map(|r| format!("{}: {}", table.value, r.value)),
        );
    }
    out
}

fn header_is_plaintext(path: &Path) -> bool {
    std::fs::read(path)
        .unwrap()
        .starts_with(b"SQLite format 3\0")
}

#[test]
fn the_file_and_its_wal_hold_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    // The control: a plaintext store shows the marker, so the search below can fail.
    let plain = dir.path().join("plain.db");
    let store = DieselStore::open_sqlite_blocking(&plain).unwrap();
    fill(&store);
    let mut bytes = std::fs::read(&plain).unwrap();
    bytes.extend(std::fs::read(wal(&plain)).unwrap_or_default());
    assert!(
        contains(&bytes, MARKER),
        "the control store must show the marker"
    );
    drop(store);

    let path = dir.path().join("secret.db");
    let store = DieselStore::open_sqlite_encrypted_blocking(&path, StoreKey::raw(KEY_A)).unwrap();
    assert!(store.is_encryption_enabled());
    fill(&store);
    // While open, the last writes sit in the WAL.
    let wal_bytes = std::fs::read(wal(&path)).unwrap();
    assert!(
        wal_bytes.len() > 4096,
        "the WAL holds the writes: {}",
        wal_bytes.len()
    );
    for (what, bytes) in [
        ("WAL", &wal_bytes),
        ("file", &std::fs::read(&path).unwrap()),
    ] {
        for needle in [MARKER, "_sync_outbox", "cursor-12", "SQLite format 3"] {
            assert!(!contains(bytes, needle), "the {what} shows `{needle}`");
        }
    }
    // No other file beside the store (journals, temp files) holds it either.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap().path();
        if entry
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("secret")
        {
            assert!(
                !contains(&std::fs::read(&entry).unwrap(), MARKER),
                "{entry:?}"
            );
        }
    }
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    assert!(!contains(&bytes, MARKER), "after the checkpoint at close");
    // And the data is all there with the key.
    let store = DieselStore::open_sqlite_encrypted_blocking(&path, StoreKey::raw(KEY_A)).unwrap();
    prepare(&store);
    assert_eq!(
        store
            .query(Todo::SCHEMA, &StoreQuery::default())
            .unwrap()
            .len(),
        31
    );
}

/// Opens `path` with `key` expecting an error; checks the file did not change
/// and returns the error.
fn refused(path: &Path, key: Option<StoreKey>) -> Error {
    let before = std::fs::read(path).unwrap();
    let result = match key {
        Some(key) => DieselStore::open_sqlite_encrypted_blocking(path, key),
        None => DieselStore::open_sqlite_blocking(path),
    };
    let err = match result {
        Err(err) => err,
        Ok(store) => panic!("{} opened: {store:?}", path.display()),
    };
    let message = err.to_string();
    assert!(
        message.contains(path.file_name().unwrap().to_str().unwrap()),
        "the error names the file: {message}"
    );
    assert!(!message.contains("file is not a database"), "{message}");
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "the file was changed by a failed open"
    );
    err
}

/// An encrypted store with data, closed; returns its path.
fn encrypted_store(dir: &Path, name: &str, key: [u8; 32]) -> PathBuf {
    let path = dir.join(name);
    let store = DieselStore::open_sqlite_encrypted_blocking(&path, StoreKey::raw(key)).unwrap();
    fill(&store);
    drop(store);
    path
}

fn assert_intact(path: &Path, key: [u8; 32]) {
    let store = DieselStore::open_sqlite_encrypted_blocking(path, StoreKey::raw(key)).unwrap();
    prepare(&store);
    assert_eq!(
        store
            .query(Todo::SCHEMA, &StoreQuery::default())
            .unwrap()
            .len(),
        31
    );
    assert_eq!(
        store.cursor(Todo::SCHEMA, None).unwrap().as_deref(),
        Some("cursor-12")
    );
}

#[test]
fn a_wrong_key_is_refused_and_the_file_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = encrypted_store(dir.path(), "a.db", KEY_A);
    let err = refused(&path, Some(StoreKey::raw(KEY_B)));
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    let err = refused(&path, Some(StoreKey::passphrase("not the key")));
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    assert_intact(&path, KEY_A);
}

#[test]
fn a_missing_key_is_refused_and_the_file_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = encrypted_store(dir.path(), "a.db", KEY_A);
    let err = refused(&path, None);
    assert!(matches!(err, Error::KeyRequired { .. }), "{err}");
    assert_intact(&path, KEY_A);
}

#[test]
fn the_key_of_another_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = encrypted_store(dir.path(), "a.db", KEY_A);
    let b = encrypted_store(dir.path(), "b.db", KEY_B);
    let err = refused(&a, Some(StoreKey::raw(KEY_B)));
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    let err = refused(&b, Some(StoreKey::raw(KEY_A)));
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    assert_intact(&a, KEY_A);
    assert_intact(&b, KEY_B);
}

#[test]
fn a_key_for_a_plaintext_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.db");
    let store = DieselStore::open_sqlite_blocking(&path).unwrap();
    fill(&store);
    drop(store);
    let err = refused(&path, Some(StoreKey::raw(KEY_A)));
    assert!(matches!(err, Error::NotEncrypted { .. }), "{err}");
    let store = DieselStore::open_sqlite_blocking(&path).unwrap();
    prepare(&store);
    assert_eq!(
        store
            .query(Todo::SCHEMA, &StoreQuery::default())
            .unwrap()
            .len(),
        31
    );
}

#[test]
fn a_truncated_file_is_refused_as_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = encrypted_store(dir.path(), "a.db", KEY_A);
    let whole = std::fs::read(&path).unwrap();
    assert!(
        whole.len() >= 4 * 4096,
        "the store spans several pages: {}",
        whole.len()
    );
    // Cut in the middle of a page, and at a page boundary.
    for cut in [whole.len() - 1000, whole.len() - 4096, 4096 + 100] {
        std::fs::write(&path, &whole[..cut]).unwrap();
        let err = refused(&path, Some(StoreKey::raw(KEY_A)));
        assert!(matches!(err, Error::Damaged { .. }), "cut at {cut}: {err}");
    }
    std::fs::write(&path, &whole).unwrap();
    assert_intact(&path, KEY_A);
}

#[test]
fn a_tampered_file_is_refused_as_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = encrypted_store(dir.path(), "a.db", KEY_A);
    let whole = std::fs::read(&path).unwrap();
    let pages = whole.len() / 4096;
    for page in [1, pages / 2, pages - 1] {
        let mut bytes = whole.clone();
        let at = page * 4096 + 777;
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = refused(&path, Some(StoreKey::raw(KEY_A)));
        assert!(matches!(err, Error::Damaged { .. }), "page {page}: {err}");
    }
    std::fs::write(&path, &whole).unwrap();
    assert_intact(&path, KEY_A);
}

#[test]
fn a_passphrase_opens_what_it_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let store =
        DieselStore::open_sqlite_encrypted_blocking(&path, StoreKey::passphrase("it's a secret"))
            .unwrap();
    fill(&store);
    drop(store);
    assert!(!header_is_plaintext(&path));
    let store =
        DieselStore::open_sqlite_encrypted_blocking(&path, StoreKey::passphrase("it's a secret"))
            .unwrap();
    prepare(&store);
    assert_eq!(
        store
            .query(Todo::SCHEMA, &StoreQuery::default())
            .unwrap()
            .len(),
        31
    );
    drop(store);
    let err = refused(&path, Some(StoreKey::passphrase("its a secret")));
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
}

#[test]
fn bad_keys_and_wrong_states_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let err =
        DieselStore::open_sqlite_encrypted_blocking(&path, StoreKey::passphrase("")).unwrap_err();
    assert!(err.to_string().contains("passphrase is empty"), "{err}");
    assert!(!path.exists(), "nothing was created for a refused key");
    let err = StoreKey::raw_from_slice(&[1, 2, 3]).unwrap_err();
    assert!(err.to_string().contains("32 bytes"), "{err}");

    let store = DieselStore::open_sqlite_blocking(&path).unwrap();
    assert!(!store.is_encryption_enabled());
    let err = store.rekey(StoreKey::raw(KEY_A)).unwrap_err();
    assert!(err.to_string().contains("not encrypted"), "{err}");
    let err = store.disable_encryption().unwrap_err();
    assert!(err.to_string().contains("not encrypted"), "{err}");
    store.enable_encryption(StoreKey::raw(KEY_A)).unwrap();
    let err = store.enable_encryption(StoreKey::raw(KEY_B)).unwrap_err();
    assert!(err.to_string().contains("already encrypted"), "{err}");
    assert_eq!(
        format!("{:?}", StoreKey::raw(KEY_A)),
        "StoreKey(raw 256-bit key)"
    );
    assert_eq!(
        format!("{:?}", StoreKey::passphrase("hunter2")),
        "StoreKey(passphrase)"
    );
}

#[test]
fn enable_rekey_disable_keep_every_row_op_and_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = DieselStore::open_sqlite_blocking(&path).unwrap();
    fill(&store);
    let original = dump(&path, None);
    assert!(
        original.iter().any(|l| l.contains("refused: 422")),
        "{original:?}"
    );
    assert!(
        original
            .iter()
            .any(|l| l.starts_with("_sync_outbox_counts: 1|")),
        "{original:?}"
    );

    store.enable_encryption(StoreKey::raw(KEY_A)).unwrap();
    assert!(store.is_encryption_enabled());
    assert!(!header_is_plaintext(&path));
    assert_eq!(dump(&path, Some(KEY_A)), original);
    // The store goes on working, on the new file, with the sequence carried over.
    let outcome = save(&store, &todo("after-enable", "x", 1));
    assert!(outcome.created);

    store.rekey(StoreKey::raw(KEY_B)).unwrap();
    assert!(store.is_encryption_enabled());
    let rekeyed = dump(&path, Some(KEY_B));
    assert!(rekeyed.iter().any(|l| l.contains("after-enable")));
    drop(store);
    let err = refused(&path, Some(StoreKey::raw(KEY_A)));
    assert!(
        matches!(err, Error::WrongKey { .. }),
        "the old key no longer opens it: {err}"
    );

    let store = DieselStore::open_sqlite_encrypted_blocking(&path, StoreKey::raw(KEY_B)).unwrap();
    assert_eq!(dump(&path, Some(KEY_B)), rekeyed);
    store.disable_encryption().unwrap();
    assert!(!store.is_encryption_enabled());
    assert!(header_is_plaintext(&path));
    assert_eq!(dump(&path, None), rekeyed);
    prepare(&store);
    let state = store.record_state(Todo::SCHEMA, "t0").unwrap();
    assert_eq!(state.ops.len(), 1);
    assert_eq!(
        store.cursor(Todo::SCHEMA, None).unwrap().as_deref(),
        Some("cursor-12")
    );
    assert_eq!(store.failed_ops().unwrap().len(), 1);
    drop(store);
    let store = DieselStore::open_sqlite_blocking(&path).unwrap();
    prepare(&store);
    assert_eq!(
        store
            .query(Todo::SCHEMA, &StoreQuery::default())
            .unwrap()
            .len(),
        32
    );
}

const CHILD_ENV: &str = "SYNC_DIESEL_REWRITE_CHILD_DB";
const READY: &str = "REWRITE CHILD READY";
const SAVED: &str = "SAVED ";

/// Opens the store with whichever of no key, key A and key B opens it. Exactly
/// one must: the file is always one whole store.
fn open_any(path: &Path) -> (DieselStore, Option<[u8; 32]>) {
    let mut opened = Vec::new();
    let mut errors = Vec::new();
    for key in [None, Some(KEY_A), Some(KEY_B)] {
        let result = match key {
            Some(k) => DieselStore::open_sqlite_encrypted_blocking(path, StoreKey::raw(k)),
            None => DieselStore::open_sqlite_blocking(path),
        };
        match result {
            Ok(store) => opened.push((store, key)),
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        Error::WrongKey { .. }
                            | Error::KeyRequired { .. }
                            | Error::NotEncrypted { .. }
                    ),
                    "the store is damaged: {e}"
                );
                errors.push(e.to_string());
            }
        }
    }
    assert_eq!(
        opened.len(),
        1,
        "exactly one key opens the store; errors: {errors:?}"
    );
    opened.pop().unwrap()
}

/// The child: re-writes the store in a loop (encrypt, rekey, rekey, decrypt),
/// saving a record between re-writes and telling the parent once it is saved.
#[test]
fn rewrite_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (store, key) = open_any(Path::new(&path));
    prepare(&store);
    println!("{READY}");
    std::io::stdout().flush().unwrap();
    let mut current = key;
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for n in 0.. {
        current = match current {
            None => {
                store.enable_encryption(StoreKey::raw(KEY_A)).unwrap();
                Some(KEY_A)
            }
            Some(KEY_A) if n % 3 != 0 => {
                store.rekey(StoreKey::raw(KEY_B)).unwrap();
                Some(KEY_B)
            }
            Some(KEY_B) => {
                store.rekey(StoreKey::raw(KEY_A)).unwrap();
                Some(KEY_A)
            }
            Some(_) => {
                store.disable_encryption().unwrap();
                None
            }
        };
        let id = format!("c{start}-{n}");
        save(&store, &todo(&id, MARKER, 1));
        println!("{SAVED}{id}");
        std::io::stdout().flush().unwrap();
    }
}

#[test]
fn a_rewrite_killed_at_any_moment_leaves_one_whole_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let store = DieselStore::open_sqlite_blocking(&path).unwrap();
    fill(&store);
    drop(store);
    let exe = std::env::current_exe().unwrap();
    let mut saved: Vec<String> = Vec::new();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7)
        | 1;
    let mut keys_seen = [false; 3];
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "rewrite_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = Instant::now();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains(READY) => break,
                Some(Ok(_)) => {}
                _ => panic!("round {round}: the child exited before it was ready"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "child never got ready"
            );
        }
        // Let it finish some re-writes (reading what it saved), then kill it at a
        // random moment of the next ones.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let wanted = 1 + (seed % 4) as usize;
        let mut got = 0;
        while got < wanted {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(id) = line.strip_prefix(SAVED) {
                        saved.push(id.to_owned());
                        got += 1;
                    }
                }
                _ => panic!("round {round}: the child died on its own"),
            }
        }
        std::thread::sleep(Duration::from_micros(u64::from(seed % 30_000)));
        child.kill().unwrap(); // SIGKILL
        assert!(!child.wait().unwrap().success());
        // Lines the child printed before it died are saves it completed.
        for line in lines.map_while(std::result::Result::ok) {
            if let Some(id) = line.strip_prefix(SAVED) {
                saved.push(id.to_owned());
            }
        }

        let (store, key) = open_any(&path);
        keys_seen[match key {
            None => 0,
            Some(KEY_A) => 1,
            Some(_) => 2,
        }] = true;
        prepare(&store);
        let rows = store.query(Todo::SCHEMA, &StoreQuery::default()).unwrap();
        for id in &saved {
            assert!(
                rows.iter().any(|r| &r.id == id),
                "round {round}: the acknowledged save {id} is gone"
            );
        }
        assert_eq!(rows.len(), 31 + saved.len(), "round {round}");
        assert_eq!(
            store.cursor(Todo::SCHEMA, None).unwrap().as_deref(),
            Some("cursor-12")
        );
        assert_eq!(store.failed_ops().unwrap().len(), 1, "round {round}");
        assert_eq!(
            store.counts().unwrap().pending as usize,
            30 - 1 + saved.len()
        );
        let leftover = dir.path().join("crash.db.rewrite");
        assert!(
            !leftover.exists(),
            "round {round}: the open removes a leftover re-write"
        );
    }
    println!(
        "{ROUNDS} kills during re-writes survived; {} saves checked; keys found {keys_seen:?}",
        saved.len()
    );
}

/// The child for one step: re-writes once with the process stopped at a step.
#[test]
fn stop_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = DieselStore::open_sqlite_blocking(&path).unwrap();
    let _ = store.enable_encryption(StoreKey::raw(KEY_A));
    println!("re-write finished without stopping");
}

#[test]
fn a_rewrite_stopped_before_or_after_its_rename_leaves_the_old_or_the_new_store() {
    let exe = std::env::current_exe().unwrap();
    for (step, new_file_expected) in [("copied", false), ("synced", false), ("renamed", true)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = DieselStore::open_sqlite_blocking(&path).unwrap();
        fill(&store);
        drop(store);
        let original = dump(&path, None);
        let status = Command::new(&exe)
            .args(["--exact", "stop_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .env("SYNC_DIESEL_REWRITE_STOP_AT", step)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "{step}: the child was stopped");
        let leftover = dir.path().join("s.db.rewrite");
        assert_eq!(leftover.exists(), !new_file_expected, "{step}");
        let (store, key) = open_any(&path);
        assert_eq!(key.is_some(), new_file_expected, "{step}");
        assert!(!leftover.exists(), "{step}: the open removed the leftover");
        drop(store);
        assert_eq!(dump(&path, key), original, "{step}");
    }
}

/// The outbox counts are kept by triggers (bookkeeping migration 5); a re-write copies the
/// file with `sqlcipher_export`, which must carry the triggers and the counts row over, so
/// the counts keep following writes on every new file.
#[test]
fn the_outbox_counts_follow_writes_after_every_re_write() {
    type Rewrite = fn(&DieselStore);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = DieselStore::open_sqlite_blocking(&path).unwrap();
    prepare(&store);
    let mut expected = store.counts().unwrap();
    let steps: [(&str, Rewrite); 3] = [
        ("enable", |s| {
            s.enable_encryption(StoreKey::raw(KEY_A)).unwrap()
        }),
        ("rekey", |s| s.rekey(StoreKey::raw(KEY_B)).unwrap()),
        ("disable", |s| s.disable_encryption().unwrap()),
    ];
    for (i, (name, rewrite)) in steps.into_iter().enumerate() {
        save(&store, &todo(&format!("before-{i}"), "x", 1));
        expected.pending += 1;
        assert_eq!(store.counts().unwrap(), expected, "before {name}");
        rewrite(&store);
        assert_eq!(store.counts().unwrap(), expected, "after {name}");
        let id = format!("after-{i}");
        save(&store, &todo(&id, "x", 1));
        expected.pending += 1;
        assert_eq!(store.counts().unwrap(), expected, "a save after {name}");
        let seq = store.record_state(Todo::SCHEMA, &id).unwrap().ops[0].seq;
        store.mark_inflight(&[seq]).unwrap();
        store.fail_op(seq, "422").unwrap();
        expected.pending -= 1;
        expected.failed += 1;
        assert_eq!(store.counts().unwrap(), expected, "a failure after {name}");
    }
}
