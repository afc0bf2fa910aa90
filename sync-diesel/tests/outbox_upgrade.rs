//! Bookkeeping migration 7 (a leaner outbox, issue 18) on a store that the migrations before it
//! built: the bookkeeping of versions 1 to 6 run from their files, the `todos` table from the
//! repository's generated migration, and queued ops in every state written as a build of
//! version 6 wrote them. Opening the store with this build upgrades it; every op must come
//! through exactly as it was, the counts must still match, and the rules the outbox relies on
//! must still hold: one never-sent pending op per record (enforced by the database), seqs
//! never handed out twice (also those of ops deleted before the upgrade), new keys for
//! changed ops.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::path::Path;

use chrono::{TimeDelta, Utc};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use support::{save, todo, Todo};
use sync_core::store::{LocalStore, OpKind, OpState, OutboxCounts};
use sync_core::SyncModel;
use sync_diesel::DieselStore;
use sync_testkit::postgres::FromTestDb;
use sync_testkit::TestDb;

sync_testkit::backend_matrix!(
    sync:
    queued_ops_in_every_state_come_through_the_upgrade_intact,
);

/// A database with nothing opened on it yet.
struct Old {
    backend: &'static str,
    location: String,
    _db: TestDb,
}

impl FromTestDb for Old {
    fn from_test_db(db: TestDb) -> Self {
        let location = match db.sqlite_path() {
            Some(path) => path.display().to_string(),
            None => db.url.clone(),
        };
        Old {
            backend: db.backend(),
            location,
            _db: db,
        }
    }
}

enum Raw {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

#[derive(diesel::QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

impl Raw {
    fn open(old: &Old) -> Raw {
        match old.backend {
            "sqlite" => Raw::Sqlite(SqliteConnection::establish(&old.location).unwrap()),
            _ => Raw::Pg(PgConnection::establish(&old.location).unwrap()),
        }
    }

    fn exec(&mut self, sql: &str) -> Result<(), diesel::result::Error> {
        match self {
            Raw::Sqlite(c) => c.batch_execute(sql),
            Raw::Pg(c) => c.batch_execute(sql),
        }
    }

    fn texts(&mut self, sql: &str) -> Vec<String> {
        let rows: Vec<Text> = match self {
            Raw::Sqlite(c) => diesel::sql_query(sql).load(c).unwrap(),
            Raw::Pg(c) => diesel::sql_query(sql).load(c).unwrap(),
        };
        rows.into_iter().map(|t| t.value).collect()
    }

    /// Every outbox row, every column, as text, in seq order.
    fn outbox(&mut self) -> Vec<String> {
        let sql = match self {
            Raw::Sqlite(_) => {
                "SELECT quote(seq) || '|' || quote(model_type) || '|' || quote(record_id) || '|' \
                 || quote(user_id) || '|' || quote(op) || '|' || quote(changed_fields) || '|' \
                 || quote(base_version) || '|' || quote(base_values) || '|' \
                 || quote(idempotency_key) || '|' || quote(priority) || '|' || quote(attempts) \
                 || '|' || quote(next_attempt_at) || '|' || quote(last_error) || '|' \
                 || quote(state) || '|' || quote(created_at) || '|' || quote(sent) AS value \
                 FROM _sync_outbox ORDER BY seq"
            }
            Raw::Pg(_) => "SELECT o::text AS value FROM _sync_outbox o ORDER BY seq",
        };
        self.texts(sql)
    }

    /// Runs the bookkeeping migrations 1 to 6 from their files, as a build of version 6 did.
    fn migrate_to_6(&mut self, backend: &str) {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("bookkeeping")
            .join(backend);
        let to = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: u32 = name[..14].parse().unwrap();
            if version > 6 {
                continue;
            }
            let dir = to.path().join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            for file in ["up.sql", "down.sql"] {
                std::fs::copy(entry.path().join(file), dir.join(file)).unwrap();
            }
        }
        let migrations = FileBasedMigrations::from_path(to.path()).unwrap();
        let ran = match self {
            Raw::Sqlite(c) => c.run_pending_migrations(migrations).unwrap().len(),
            Raw::Pg(c) => c.run_pending_migrations(migrations).unwrap().len(),
        };
        assert_eq!(ran, 6);
    }
}

/// What a build of bookkeeping version 6 left: records `a` to `f` with their ops, and an op of
/// `g` with the largest seq, deleted since (its seq must never come back).
fn write_as_version_6(raw: &mut Raw, backend: &str) -> i64 {
    let (todos, time) = match backend {
        "sqlite" => (
            include_str!("../../migrations/sqlite/2025-01-01-000001_create_todos/up.sql"),
            "'2026-12-03T10:00:00.000000000Z'",
        ),
        _ => (
            include_str!("../../migrations/postgres/2025-01-01-000001_create_todos/up.sql"),
            "'2026-12-03T10:00:00Z'",
        ),
    };
    raw.exec(todos).unwrap();
    for id in ["a", "b", "c", "d", "e", "f"] {
        raw.exec(&format!(
            "INSERT INTO todos (id, title, description, is_completed, priority, tags, \
             _created_at, _updated_at) VALUES ('{id}', 'old {id}', '', FALSE, 1, '[\"home\"]', \
             {time}, {time})"
        ))
        .unwrap();
    }
    let later = match backend {
        "sqlite" => "'2999-01-01T00:00:00.000000000Z'",
        _ => "'2999-01-01T00:00:00Z'",
    };
    // (record, op, changed, base version, base values, key, priority, attempts,
    //  next attempt, last error, state, sent)
    let ops = [
        // Pending, never sent.
        (
            "a", "create", "[]", 0, "{}", "key-a1", 0, 0, "NULL", "NULL", "pending", "FALSE",
        ),
        // Pending, possibly sent (a transient failure), with a never-sent op behind it.
        (
            "b",
            "update",
            "[\"title\"]",
            3,
            "{\"title\":\"was\"}",
            "key-b1",
            0,
            1,
            "NULL",
            "'timeout'",
            "pending",
            "TRUE",
        ),
        (
            "b",
            "update",
            "[\"done\"]",
            3,
            "{\"done\":false}",
            "key-b2",
            0,
            0,
            "NULL",
            "NULL",
            "pending",
            "FALSE",
        ),
        // In flight.
        (
            "c", "create", "[]", 0, "{}", "key-c1", 2, 0, "NULL", "NULL", "inflight", "FALSE",
        ),
        // Failed (refused), an edit held behind it.
        (
            "d",
            "update",
            "[\"title\"]",
            5,
            "{\"title\":\"x\"}",
            "key-d1",
            0,
            3,
            "NULL",
            "'422 refused'",
            "failed",
            "TRUE",
        ),
        (
            "d",
            "update",
            "[\"title\"]",
            5,
            "{\"title\":\"y\"}",
            "key-d2",
            0,
            0,
            "NULL",
            "NULL",
            "pending",
            "FALSE",
        ),
        // Backing off until later, higher priority.
        (
            "e",
            "update",
            "[\"title\"]",
            2,
            "{\"title\":\"z\"}",
            "key-e1",
            5,
            2,
            later,
            "'503'",
            "pending",
            "TRUE",
        ),
        // A delete, never sent.
        (
            "f",
            "delete",
            "[]",
            4,
            "{\"title\":\"old f\"}",
            "key-f1",
            1,
            0,
            "NULL",
            "NULL",
            "pending",
            "FALSE",
        ),
        // The largest seq handed out, deleted below.
        (
            "g", "create", "[]", 0, "{}", "key-g1", 0, 0, "NULL", "NULL", "pending", "FALSE",
        ),
    ];
    for (id, op, changed, base_version, base, key, priority, attempts, next, error, state, sent) in
        ops
    {
        raw.exec(&format!(
            "INSERT INTO _sync_outbox (model_type, record_id, user_id, op, changed_fields, \
             base_version, base_values, idempotency_key, priority, attempts, next_attempt_at, \
             last_error, state, created_at, sent) VALUES ('todo', '{id}', NULL, '{op}', \
             '{changed}', {base_version}, '{base}', '{key}', {priority}, {attempts}, {next}, \
             {error}, '{state}', {time}, {sent})"
        ))
        .unwrap();
    }
    let g: i64 = raw
        .texts("SELECT CAST(seq AS TEXT) AS value FROM _sync_outbox WHERE record_id = 'g'")[0]
        .parse()
        .unwrap();
    raw.exec("DELETE FROM _sync_outbox WHERE record_id = 'g'")
        .unwrap();
    g
}

fn open(old: &Old) -> DieselStore {
    let store = match old.backend {
        "sqlite" => DieselStore::open_sqlite_blocking(&old.location).unwrap(),
        _ => DieselStore::open_postgres_blocking(old.location.clone()).unwrap(),
    };
    store.prepare_model(Todo::SCHEMA, true).unwrap();
    store
}

fn ops(store: &DieselStore, id: &str) -> Vec<sync_core::store::OutboxOp> {
    store.record_state(Todo::SCHEMA, id).unwrap().ops
}

fn queued_ops_in_every_state_come_through_the_upgrade_intact(old: &Old) {
    let mut raw = Raw::open(old);
    raw.migrate_to_6(old.backend);
    let g = write_as_version_6(&mut raw, old.backend);
    let before = raw.outbox();
    assert_eq!(before.len(), 8);

    let store = open(old);
    assert_eq!(
        raw.texts("SELECT CAST(version AS TEXT) AS value FROM _sync_schema_version"),
        ["7"]
    );
    // Every op, every column, as it was; but the one in flight, which an opening takes for a
    // crash's: pending and possibly sent (the outbox's state table), as before the upgrade.
    let after = raw.outbox();
    assert_eq!(after.len(), before.len());
    for (i, (after, before)) in after.iter().zip(&before).enumerate() {
        if i != 3 {
            assert_eq!(after, before, "op {i}");
        }
    }
    assert_eq!(
        store.counts().unwrap(),
        OutboxCounts {
            pending: 7,
            failed: 1,
            quarantined: 0
        }
    );

    // The ops read back as the states they were written in.
    let a = ops(&store, "a");
    assert_eq!(
        (a.len(), a[0].state, a[0].sent),
        (1, OpState::Pending, false)
    );
    let b = ops(&store, "b");
    assert_eq!(
        b.iter()
            .map(|o| (o.sent, o.idempotency_key.as_str()))
            .collect::<Vec<_>>(),
        [(true, "key-b1"), (false, "key-b2")]
    );
    let c = ops(&store, "c");
    assert_eq!(
        (c[0].state, c[0].sent, c[0].idempotency_key.as_str()),
        (OpState::Pending, true, "key-c1")
    );
    let d = ops(&store, "d");
    assert_eq!((d[0].state, d[0].attempts), (OpState::Failed, 3));
    assert_eq!(d[0].last_error.as_deref(), Some("422 refused"));
    assert!(ops(&store, "e")[0].next_attempt_at.unwrap() > Utc::now());
    assert_eq!(ops(&store, "f")[0].op, OpKind::Delete);

    // Ready: the first op of each record that is pending and due, by priority then seq.
    let ready: Vec<String> = store
        .ready_ops(Utc::now() + TimeDelta::seconds(1), 100)
        .unwrap()
        .into_iter()
        .map(|o| o.idempotency_key)
        .collect();
    assert_eq!(ready, ["key-c1", "key-f1", "key-a1", "key-b1"]);

    // The database still refuses a second never-sent pending op of a record ...
    let second_unsent = match old.backend {
        "sqlite" => {
            "INSERT INTO _sync_outbox (seq, model_type, record_id, op, idempotency_key, \
             created_at) VALUES ((SELECT MAX(last_seq, (SELECT MAX(seq) FROM _sync_outbox)) + 1 \
             FROM _sync_outbox_counts), 'todo', 'a', \
             'update', 'key-a2', '2026-12-03T10:00:00.000000000Z')"
        }
        _ => {
            "INSERT INTO _sync_outbox (model_type, record_id, op, idempotency_key, created_at) \
             VALUES ('todo', 'a', 'update', 'key-a2', now())"
        }
    };
    let err = raw.exec(second_unsent).unwrap_err().to_string();
    assert!(
        err.contains("UNIQUE") || err.contains("duplicate key"),
        "{err}"
    );
    // ... and, on SQLite, a seq handed out before (the deleted op's).
    if old.backend == "sqlite" {
        let reused = format!(
            "INSERT INTO _sync_outbox (seq, model_type, record_id, op, idempotency_key, \
             created_at) VALUES ({g}, 'todo', 'g', 'create', 'key-g2', \
             '2026-12-03T10:00:00.000000000Z')"
        );
        let err = raw.exec(&reused).unwrap_err().to_string();
        assert!(
            err.contains("the seq after the largest handed out"),
            "{err}"
        );
    }
    assert_eq!(raw.outbox(), after, "the refused inserts left nothing");

    // Edits after the upgrade follow the outbox rules on the upgraded rows.
    let saved = save(&store, &todo("a", "new a", 1));
    assert_eq!(
        saved.op_seq,
        Some(a[0].seq),
        "folds into the never-sent create"
    );
    let a_after = ops(&store, "a");
    assert_ne!(
        a_after[0].idempotency_key, "key-a1",
        "a changed op gets a new key"
    );
    save(&store, &todo("b", "new b", 1));
    let b_after = ops(&store, "b");
    assert_eq!(b_after.len(), 2);
    assert_eq!(b_after[0], b[0], "the possibly-sent op stays frozen");
    assert_eq!(b_after[1].seq, b[1].seq);
    let c_new = save(&store, &todo("c", "new c", 1)).op_seq.unwrap();
    assert_eq!(
        ops(&store, "c").len(),
        2,
        "a new op behind the possibly-sent one"
    );
    let h = save(&store, &todo("h", "new h", 1)).op_seq.unwrap();
    assert!(
        c_new > g && h > c_new,
        "new seqs {c_new}, {h} come after {g}, the largest ever"
    );
    let keys: HashSet<String> = ["a", "b", "c", "d", "e", "f", "h"]
        .iter()
        .flat_map(|id| ops(&store, id))
        .map(|o| o.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 10, "every op has a key of its own");
    assert_eq!(
        store.counts().unwrap(),
        OutboxCounts {
            pending: 9,
            failed: 1,
            quarantined: 0
        }
    );

    // A reopened store (no migration left to run) goes on from the same seq.
    drop(store);
    let store = open(old);
    let i = save(&store, &todo("i", "new i", 1)).op_seq.unwrap();
    assert_eq!(i, h + 1);
}
