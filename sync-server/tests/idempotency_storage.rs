//! How idempotency results are stored (see the `lazy_idempotency_results` and
//! `idempotency_keys_on_records` migrations): replays stay byte for byte across schema upgrades
//! and downgrades, across server instances writing the same database concurrently, and for keys
//! and ids with unusual characters.

#![allow(clippy::unwrap_used)]

mod support;

use diesel::connection::SimpleConnection;
use diesel::migration::MigrationConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{Client, Serve, TestDb, ALICE, BOB};

const MIGRATIONS: EmbeddedMigrations = diesel_migrations::embed_migrations!("migrations");
/// The migration that created the tables, before results were stored lazily.
const FIRST_MIGRATION: &str = "2025-01-01-000000";

sync_testkit::backend_matrix!(
    async:
    down_migration_keeps_every_replay,
    keys_stored_before_the_migration_still_replay,
    writes_of_a_build_before_the_migration_are_fenced_off,
    two_instances_writing_one_database_keep_replays_exact,
    unusual_keys_and_ids_replay_exactly,
    a_key_lives_on_its_record_until_the_record_changes,
    keys_of_the_lazy_format_still_replay,
    a_record_naming_a_lost_key_is_not_changed,
);

/// A direct connection to a test database, beside the server.
enum Raw {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

#[derive(QueryableByName, Debug)]
struct StoredKey {
    #[diesel(sql_type = Text)]
    idem_key: String,
    #[diesel(sql_type = Text)]
    result: String,
}

#[derive(QueryableByName, Debug)]
struct LazyKey {
    #[diesel(sql_type = Nullable<BigInt>)]
    record_version: Option<i64>,
}

impl Raw {
    fn open(db: &TestDb) -> Self {
        if db.is_postgres() {
            Self::Pg(PgConnection::establish(&db.url).unwrap())
        } else {
            let path = db.url.strip_prefix("sqlite://").unwrap();
            Self::Sqlite(SqliteConnection::establish(path).unwrap())
        }
    }

    fn run_first_migration_only(&mut self) {
        fn first<DB: diesel::backend::Backend>(
            source: &EmbeddedMigrations,
        ) -> Box<dyn diesel::migration::Migration<DB>> {
            use diesel::migration::MigrationSource;
            MigrationSource::<DB>::migrations(source)
                .unwrap()
                .into_iter()
                .find(|m| m.name().to_string().starts_with(FIRST_MIGRATION))
                .unwrap()
        }
        match self {
            Self::Sqlite(conn) => {
                let migration = first(&MIGRATIONS);
                conn.setup().unwrap();
                conn.run_migration(&*migration).unwrap();
            }
            Self::Pg(conn) => {
                let migration = first(&MIGRATIONS);
                conn.setup().unwrap();
                conn.run_migration(&*migration).unwrap();
            }
        }
    }

    /// Reverts the migration that moved keys onto records, and every later one.
    fn revert_keys_on_records(&mut self) {
        self.revert_through("20250603");
    }

    /// Reverts the migrations after the first one, newest first.
    fn revert_to_first_migration(&mut self) {
        self.revert_through("20250601");
    }

    /// Reverts migrations newest first, up to and including the one whose version starts
    /// with `version_prefix`.
    fn revert_through(&mut self, version_prefix: &str) {
        loop {
            let reverted = match self {
                Self::Sqlite(conn) => conn.revert_last_migration(MIGRATIONS),
                Self::Pg(conn) => conn.revert_last_migration(MIGRATIONS),
            }
            .unwrap();
            let version: String = reverted
                .to_string()
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            if version.starts_with(version_prefix) {
                return;
            }
        }
    }

    /// Whether `sql` runs.
    fn try_execute(&mut self, sql: &str) -> bool {
        match self {
            Self::Sqlite(conn) => conn.batch_execute(sql),
            Self::Pg(conn) => conn.batch_execute(sql),
        }
        .is_ok()
    }

    fn execute(&mut self, sql: &str) {
        match self {
            Self::Sqlite(conn) => conn.batch_execute(sql),
            Self::Pg(conn) => conn.batch_execute(sql),
        }
        .unwrap();
    }

    /// Every stored key of `owner` and its stored result text.
    fn stored_results(&mut self, owner: &str) -> Vec<StoredKey> {
        let sql = format!(
            "SELECT idem_key, result FROM sync_idempotency WHERE owner = '{owner}' ORDER BY idem_key"
        );
        match self {
            Self::Sqlite(conn) => diesel::sql_query(sql).load(conn),
            Self::Pg(conn) => diesel::sql_query(sql).load(conn),
        }
        .unwrap()
    }

    fn lazy_keys(&mut self) -> usize {
        self.count_versions(
            "SELECT record_version FROM sync_idempotency WHERE record_version IS NOT NULL",
        )
    }

    /// Keys that live on their record row only.
    fn held_keys(&mut self) -> usize {
        self.count_versions(
            "SELECT version AS record_version FROM sync_records WHERE idem_op IS NOT NULL",
        )
    }

    fn count_versions(&mut self, sql: &str) -> usize {
        let rows: Vec<LazyKey> = match self {
            Self::Sqlite(conn) => diesel::sql_query(sql).load(conn),
            Self::Pg(conn) => diesel::sql_query(sql).load(conn),
        }
        .unwrap();
        rows.iter().filter(|r| r.record_version.is_some()).count()
    }
}

/// The exact bytes of a push's response.
async fn push_bytes(client: &Client, ops: Value) -> Vec<u8> {
    let res = client
        .request(Method::POST, "/sync/push")
        .json(&json!({ "ops": ops }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.bytes().await.unwrap().to_vec()
}

/// The one result of a one-op push response, as the server wrote it.
fn only_result(response: &[u8]) -> String {
    let text = std::str::from_utf8(response).unwrap();
    text.strip_prefix("{\"results\":[")
        .and_then(|t| t.strip_suffix("]}"))
        .unwrap()
        .to_owned()
}

/// Status and exact body of a REST request.
async fn rest_bytes(req: reqwest::RequestBuilder) -> (StatusCode, Vec<u8>) {
    let res = req.send().await.unwrap();
    (res.status(), res.bytes().await.unwrap().to_vec())
}

fn weird_id() -> String {
    // Characters the record JSON has to escape, and some it must not.
    "w\"\\/\n\t\r\u{8}\u{c}\u{1}\u{1f}\u{7f} caf\u{e9} \u{1f600}".to_owned()
}

async fn down_migration_keeps_every_replay(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let id = weird_id();
    // Results that are still rebuilt from their record rows when the server stops: a create, an
    // update, a delete (tombstone), a create with empty data, one whose result was already
    // stored in full (its record changed later), and a REST create with a server id.
    let pushes = [
        json!([{"idempotency_key": "k-create", "collection": "todos", "op": "create", "id": id,
                "data": {"n": 1, "t": "a \"b\" \\ \u{1}"}}]),
        json!([{"idempotency_key": "k-update", "collection": "todos", "op": "update", "id": id,
                "data": {"n": 2}}]),
        json!([{"idempotency_key": "k-empty", "collection": "todos", "op": "create", "id": "e",
                "data": {}}]),
        json!([{"idempotency_key": "k-gone", "collection": "todos", "op": "create", "id": "g",
                "data": {"x": [1, {"y": null}]}}]),
        json!([{"idempotency_key": "k-delete", "collection": "todos", "op": "delete", "id": "g"}]),
    ];
    let mut first = Vec::new();
    for ops in &pushes {
        let bytes = push_bytes(&alice, ops.clone()).await;
        assert!(
            only_result(&bytes).starts_with("{\"status\":\"applied\""),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        first.push(bytes);
    }
    let rest = alice
        .request(Method::POST, "/notes")
        .header("idempotency-key", "k-rest")
        .json(&json!({"title": "server id"}));
    let (status, rest_first) = rest_bytes(rest.try_clone().unwrap()).await;
    assert_eq!(status, StatusCode::CREATED);
    server.shutdown().await.unwrap();

    let mut raw = Raw::open(&db);
    assert!(
        raw.held_keys() > 0,
        "the test needs results rebuilt from records"
    );
    raw.revert_to_first_migration();
    // What a build without the migration would answer: the full result of every key.
    let stored = raw.stored_results(ALICE.0);
    let expected_rest = {
        let record: Value = serde_json::from_slice(&rest_first).unwrap();
        format!(
            "{{\"status\":\"applied\",\"version\":{},\"record\":{}}}",
            record["version"],
            String::from_utf8(rest_first.clone()).unwrap()
        )
    };
    for key in &stored {
        let expected = match key.idem_key.as_str() {
            "k-create" => only_result(&first[0]),
            "k-update" => only_result(&first[1]),
            "k-empty" => only_result(&first[2]),
            "k-gone" => only_result(&first[3]),
            "k-delete" => only_result(&first[4]),
            "k-rest" => expected_rest.clone(),
            other => panic!("unexpected key {other}"),
        };
        assert_eq!(key.result, expected, "stored result of {}", key.idem_key);
    }
    assert_eq!(stored.len(), 6);
    drop(raw);

    // Migrating up again (the server does on start) keeps every replay exact.
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    for (ops, bytes) in pushes.iter().zip(&first) {
        assert_eq!(
            String::from_utf8(push_bytes(&alice, ops.clone()).await).unwrap(),
            String::from_utf8(bytes.clone()).unwrap()
        );
    }
    let rest = alice
        .request(Method::POST, "/notes")
        .header("idempotency-key", "k-rest")
        .json(&json!({"title": "server id"}));
    assert_eq!(rest_bytes(rest).await, (StatusCode::CREATED, rest_first));
    // Nothing was applied twice.
    assert_eq!(alice.pull_all("notes", "", 10).await.len(), 1);
    assert_eq!(alice.pull_all("todos", "", 10).await.len(), 3);
    server.shutdown().await.unwrap();
}

async fn keys_stored_before_the_migration_still_replay(db: TestDb) {
    // A database written by a build before the migration: the key's full result is stored.
    let mut raw = Raw::open(&db);
    raw.run_first_migration_only();
    let record = r#"{"id":"r","version":7,"updated_at":"2025-01-02T03:04:05.678Z","n":1}"#;
    let old_result = format!(r#"{{"status":"applied","version":7,"record":{record}}}"#);
    raw.execute(&format!(
        "INSERT INTO sync_records (owner, collection, id, data, version, updated_at, deleted) \
         VALUES ('alice', 'todos', 'r', '{{\"n\":1}}', 7, '2025-01-02T03:04:05.678Z', FALSE); \
         INSERT INTO sync_idempotency (owner, idem_key, collection, op, record_id, result, \
             created_at) \
         VALUES ('alice', 'old', 'todos', 'create', 'r', '{old_result}', \
             '2025-01-02T03:04:05.678Z'); \
         UPDATE sync_sequence SET value = 7 WHERE id = 1;"
    ));
    drop(raw);

    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let old_op = json!([{"idempotency_key": "old", "collection": "todos", "op": "create",
                         "id": "r", "data": {"n": 1}}]);
    let expected = format!(r#"{{"results":[{old_result}]}}"#);
    let replay = |ops: Value| {
        let alice = alice.clone();
        async move { String::from_utf8(push_bytes(&alice, ops).await).unwrap() }
    };
    assert_eq!(replay(old_op.clone()).await, expected);
    // A key reused for another op is still refused.
    let reused = alice
        .push(
            json!([{"idempotency_key": "old", "collection": "todos", "op": "update",
                       "id": "r", "data": {"n": 9}}]),
        )
        .await;
    assert_eq!(reused.body["results"][0]["code"], "idempotency_key_reused");
    // The old row changes under a new key, then without one; the old key keeps its result.
    let update = json!([{"idempotency_key": "new", "collection": "todos", "op": "update",
                         "id": "r", "base_version": 7, "data": {"n": 2}}]);
    let first_update = replay(update.clone()).await;
    assert!(first_update.contains("\"version\":8"), "{first_update}");
    alice
        .push(json!([{"collection": "todos", "op": "update", "id": "r", "data": {"n": 3}}]))
        .await;
    assert_eq!(replay(old_op).await, expected);
    assert_eq!(replay(update).await, first_update);
    assert_eq!(alice.get("/todos/r").await.body["n"], 3);
    server.shutdown().await.unwrap();
}

/// Two servers on one database (on SQLite two stores on one file, which lock it in turn):
/// keyed creates, unkeyed and keyed updates of the same records, and replays, all at once,
/// alternating between the instances. Every replay afterwards returns its first response.
async fn two_instances_writing_one_database_keep_replays_exact(db: TestDb) {
    let one = db.start().await;
    let two = db.start().await;
    let clients = [Client::new(&one, ALICE.1), Client::new(&two, ALICE.1)];
    const RECORDS: usize = 12;
    const ROUNDS: usize = 6;
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            let client = clients[w % 2].clone();
            let other = clients[(w + 1) % 2].clone();
            tokio::spawn(async move {
                let mut seen: Vec<(Value, String)> = Vec::new();
                for round in 0..ROUNDS {
                    let ops: Vec<Value> = (0..RECORDS)
                        .map(|r| {
                            let key = format!("w{w}-r{round}-{r}");
                            match (w + r + round) % 3 {
                                0 => json!({"idempotency_key": key, "collection": "c",
                                            "op": "replace", "id": format!("x{r}"),
                                            "data": {"w": w, "round": round}}),
                                1 => json!({"collection": "c", "op": "update",
                                            "id": format!("x{r}"), "data": {"u": w}}),
                                _ => json!({"idempotency_key": key, "collection": "c",
                                            "op": "update", "id": format!("x{r}"),
                                            "data": {"k": round}}),
                            }
                        })
                        .collect();
                    let bytes = push_bytes(&client, Value::Array(ops.clone())).await;
                    let results: Value = serde_json::from_slice(&bytes).unwrap();
                    for (op, result) in ops.iter().zip(results["results"].as_array().unwrap()) {
                        if op.get("idempotency_key").is_some() && result["status"] == "applied" {
                            seen.push((op.clone(), result.to_string()));
                        }
                    }
                    // Replay an earlier key through the other instance mid-way.
                    if let Some((op, result)) = seen.get(seen.len() / 2) {
                        let again = push_bytes(&other, json!([op])).await;
                        let again: Value = serde_json::from_slice(&again).unwrap();
                        assert_eq!(again["results"][0].to_string(), *result);
                    }
                }
                seen
            })
        })
        .collect();
    // The records exist before the writers start.
    let creates: Vec<Value> = (0..RECORDS)
        .map(|r| json!({"collection": "c", "op": "create", "id": format!("x{r}"), "data": {}}))
        .collect();
    clients[0].push(Value::Array(creates)).await;
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert!(all.len() > RECORDS);
    for (n, (op, result)) in all.iter().enumerate() {
        let bytes = push_bytes(&clients[n % 2], json!([op])).await;
        let again: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(again["results"][0].to_string(), *result, "{op}");
    }
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

async fn unusual_keys_and_ids_replay_exactly(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let bob = Client::new(&server, BOB.1);
    let id = weird_id();
    for key in [
        "k\u{1}\n\"\\",
        "caf\u{e9}-\u{1f600}",
        "[\"x\"]",
        "1",
        "null",
    ] {
        let ops = json!([{"idempotency_key": key, "collection": "u", "op": "create",
                          "id": format!("{id}{key}"), "data": {"k": key}}]);
        let first = push_bytes(&alice, ops.clone()).await;
        assert!(only_result(&first).starts_with("{\"status\":\"applied\""));
        assert_eq!(push_bytes(&alice, ops.clone()).await, first);
        // The same key is another user's own.
        let bobs = push_bytes(&bob, ops.clone()).await;
        assert!(only_result(&bobs).starts_with("{\"status\":\"applied\""));
        alice
            .push(json!([{"collection": "u", "op": "delete", "id": format!("{id}{key}")}]))
            .await;
        assert_eq!(push_bytes(&alice, ops).await, first);
    }
    // A NUL character is refused alike on both backends (Postgres text cannot hold it), before
    // it reaches the database, and the rest of the batch still applies.
    for (key, collection, id) in [
        ("nul\u{0}", "u", "a"),
        ("ok", "u", "nul\u{0}"),
        ("ok", "u\u{0}", "b"),
    ] {
        let reply = alice
            .push(
                json!([{"idempotency_key": key, "collection": collection, "op": "create",
                           "id": id, "data": {}},
                          {"collection": "u", "op": "create", "data": {}}]),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(
            reply.body["results"][0]["status"], "rejected",
            "{}",
            reply.body
        );
        assert_eq!(
            reply.body["results"][1]["status"], "applied",
            "{}",
            reply.body
        );
    }
    server.shutdown().await.unwrap();
}

/// A build from before the lazy results, still running against a migrated database (a rolling
/// upgrade), must not rewrite record rows: it would not store the results rebuilt from them.
/// Every write of such a build starts by locking the sequence row through its `value` column.
async fn writes_of_a_build_before_the_migration_are_fenced_off(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    alice
        .push(
            json!([{"idempotency_key": "k", "collection": "c", "op": "create", "id": "a",
                       "data": {}}]),
        )
        .await;
    let mut raw = Raw::open(&db);
    let old_write_lock = if db.is_postgres() {
        "BEGIN; SELECT value FROM sync_sequence WHERE id = 1 FOR UPDATE; ROLLBACK;"
    } else {
        "BEGIN IMMEDIATE; SELECT value FROM sync_sequence WHERE id = 1; ROLLBACK;"
    };
    assert!(!raw.try_execute(old_write_lock));
    if db.is_postgres() {
        raw.execute("ROLLBACK");
    }
    // Nor can a build from before keys moved onto records, which locked `last_version`.
    let lazy_write_lock = if db.is_postgres() {
        "BEGIN; SELECT last_version FROM sync_sequence WHERE id = 1 FOR UPDATE; ROLLBACK;"
    } else {
        "BEGIN IMMEDIATE; SELECT last_version FROM sync_sequence WHERE id = 1; ROLLBACK;"
    };
    assert!(!raw.try_execute(lazy_write_lock));
    if db.is_postgres() {
        raw.execute("ROLLBACK");
    }
    // Reads of such a build keep working.
    assert!(raw.try_execute(
        "SELECT owner, collection, id, data, version, updated_at, deleted FROM sync_records"
    ));
    server.shutdown().await.unwrap();
}

/// A keyed write stores no idempotency row: the key stays on the record row it wrote. When a
/// later write changes that row, the key gets its own row with the full first result, in the
/// same transaction; replays before and after answer the same bytes, and within one batch a key
/// whose record the batch changes again is stored in full at once.
async fn a_key_lives_on_its_record_until_the_record_changes(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let create = json!([{"idempotency_key": "c", "collection": "todos", "op": "create",
                         "id": "a", "data": {"n": 1}}]);
    let first = push_bytes(&alice, create.clone()).await;
    let mut raw = Raw::open(&db);
    assert!(raw.stored_results(ALICE.0).is_empty());
    assert_eq!(raw.held_keys(), 1);
    assert_eq!(push_bytes(&alice, create.clone()).await, first);

    // An unkeyed update changes the row: the key moves to its own row, in full.
    alice
        .push(json!([{"collection": "todos", "op": "update", "id": "a", "data": {"n": 2}}]))
        .await;
    let stored = raw.stored_results(ALICE.0);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].result, only_result(&first));
    assert_eq!(raw.held_keys(), 0);
    assert_eq!(push_bytes(&alice, create).await, first);

    // One batch: a keyed create, then a keyed update of the same record.
    let batch = json!([
        {"idempotency_key": "b1", "collection": "todos", "op": "create", "id": "b", "data": {}},
        {"idempotency_key": "b2", "collection": "todos", "op": "update", "id": "b",
         "data": {"m": 1}},
    ]);
    let first_batch = push_bytes(&alice, batch.clone()).await;
    let keys: Vec<String> = raw
        .stored_results(ALICE.0)
        .into_iter()
        .map(|k| k.idem_key)
        .collect();
    assert_eq!(keys, ["b1", "c"]);
    assert_eq!(raw.held_keys(), 1);
    assert_eq!(push_bytes(&alice, batch).await, first_batch);
    // Another user's key of the same name is a key of its own.
    let bob = Client::new(&server, BOB.1);
    let bob_reply = bob
        .push(
            json!([{"idempotency_key": "c", "collection": "todos", "op": "create",
                      "id": "a", "data": {"bob": true}}]),
        )
        .await;
    assert_eq!(bob_reply.body["results"][0]["status"], "applied");
    assert_eq!(bob_reply.body["results"][0]["record"]["bob"], true);
    server.shutdown().await.unwrap();
}

/// Keys written while results were lazy rows of `sync_idempotency` (the migration before keys
/// moved onto records, re-created here by its down migration) replay exactly, and are stored in
/// full when their record changes.
async fn keys_of_the_lazy_format_still_replay(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let ops = [
        json!([{"idempotency_key": "l1", "collection": "todos", "op": "create", "id": "x",
                "data": {"n": 1}}]),
        json!([{"idempotency_key": "l2", "collection": "todos", "op": "create", "id": "y",
                "data": {"n": 1}}]),
    ];
    let mut first = Vec::new();
    for op in &ops {
        first.push(push_bytes(&alice, op.clone()).await);
    }
    server.shutdown().await.unwrap();
    let mut raw = Raw::open(&db);
    raw.revert_keys_on_records();
    assert_eq!(raw.lazy_keys(), 2);
    drop(raw);

    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let mut raw = Raw::open(&db);
    assert_eq!(raw.held_keys(), 0, "lazy rows are not converted");
    for (op, bytes) in ops.iter().zip(&first) {
        assert_eq!(push_bytes(&alice, op.clone()).await, *bytes);
    }
    // Changing x stores l1 in full (an update of its lazy row); y's key stays lazy.
    alice
        .push(
            json!([{"idempotency_key": "u", "collection": "todos", "op": "update", "id": "x",
                      "data": {"n": 2}}]),
        )
        .await;
    assert_eq!(raw.lazy_keys(), 1);
    assert_eq!(raw.held_keys(), 1);
    let stored = raw.stored_results(ALICE.0);
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].result, only_result(&first[0]));
    for (op, bytes) in ops.iter().zip(&first) {
        assert_eq!(push_bytes(&alice, op.clone()).await, *bytes);
    }
    assert_eq!(alice.pull_all("todos", "", 10).await.len(), 2);
    server.shutdown().await.unwrap();
}

/// A damaged database: a record written in the lazy format names its key, but the key's row is
/// gone. Changing the record would lose the key's first result for good, so the write fails
/// (500, nothing applied, the cause in the log) while other records stay writable.
async fn a_record_naming_a_lost_key_is_not_changed(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    alice
        .push(
            json!([{"idempotency_key": "lost", "collection": "todos", "op": "create",
                      "id": "x", "data": {"n": 1}}]),
        )
        .await;
    server.shutdown().await.unwrap();
    let mut raw = Raw::open(&db);
    raw.revert_keys_on_records();
    raw.execute("DELETE FROM sync_idempotency WHERE idem_key = 'lost'");
    drop(raw);

    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let refused = alice
        .request(Method::POST, "/sync/push")
        .json(
            &json!({"ops": [{"collection": "todos", "op": "update", "id": "x",
                               "data": {"n": 2}}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(alice.get("/todos/x").await.body["n"], 1);
    let other = alice.create("todos", &json!({"id": "y"})).await;
    assert_eq!(other.status, StatusCode::CREATED);
    server.shutdown().await.unwrap();
}
