//! The per-user storage quota (`Limits::max_user_bytes`): writes that would grow a user's
//! stored record data past it are refused alone with `quota_exceeded`, writes that keep or
//! shrink it always go, other users are not affected, and the count survives restarts,
//! concurrent writers and databases written before it was kept.

#![allow(clippy::unwrap_used)]

mod support;

use diesel::{Connection, RunQueryDsl};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{Client, Serve, TestDb, ALICE, BOB};

sync_testkit::backend_matrix!(
    async:
    growth_past_the_quota_is_refused_alone,
    deletes_and_shrinking_updates_always_go,
    the_count_survives_a_restart,
    concurrent_writers_cannot_both_take_the_last_room,
    records_stored_before_the_count_existed_are_counted,
    the_count_matches_a_recount_after_every_kind_of_write,
);

const QUOTA: u64 = 1000;

/// A record whose data is exactly 300 bytes of JSON.
fn record(id: &str) -> Value {
    let bare = json!({"id": id, "pad": ""}).to_string().len();
    let value = json!({"id": id, "pad": "x".repeat(300 - bare)});
    assert_eq!(value.to_string().len(), 300);
    value
}

fn create_op(id: &str) -> Value {
    json!({"collection": "todos", "op": "create", "id": id, "data": record(id)})
}

fn statuses(reply: &Value) -> Vec<(String, Option<String>)> {
    reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap().to_owned(),
                r["code"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn applied() -> (String, Option<String>) {
    ("applied".into(), None)
}

fn over_quota() -> (String, Option<String>) {
    ("rejected".into(), Some("quota_exceeded".into()))
}

async fn growth_past_the_quota_is_refused_alone(db: TestDb) {
    let server = support::start(db.builder().max_user_bytes(QUOTA)).await;
    let alice = Client::new(&server, ALICE.1);
    // 3 x 300 bytes fit in 1000, a fourth does not; the ops around a refused one go on.
    let ops: Vec<Value> = ["a1", "a2", "a3", "a4"].map(create_op).to_vec();
    let reply = alice.push(Value::Array(ops)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        statuses(&reply.body),
        vec![applied(), applied(), applied(), over_quota()]
    );
    let message = reply.body["results"][3]["error"].as_str().unwrap();
    assert!(message.contains("1000"), "{message}");
    // A smaller record still fits in what is left (100 bytes).
    let small = json!({"collection": "todos", "op": "create", "id": "s", "data": {"id": "s"}});
    let reply = alice.push(json!([small])).await;
    assert_eq!(statuses(&reply.body), vec![applied()]);
    // A single REST write past the quota is 413 with the code, and stores nothing.
    let reply = alice.create("todos", &record("a5")).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    assert_eq!(reply.body["code"], "quota_exceeded");
    let ids: Vec<String> = alice
        .pull_all("todos", "", 100)
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["a1", "a2", "a3", "s"]);
    // The quota is per user: bob has his own 1000 bytes.
    let bob = Client::new(&server, BOB.1);
    let reply = bob
        .push(Value::Array(["b1", "b2", "b3"].map(create_op).to_vec()))
        .await;
    assert_eq!(statuses(&reply.body), vec![applied(); 3]);
    server.shutdown().await.unwrap();
}

async fn deletes_and_shrinking_updates_always_go(db: TestDb) {
    let server = support::start(db.builder().max_user_bytes(QUOTA)).await;
    let alice = Client::new(&server, ALICE.1);
    let reply = alice
        .push(Value::Array(["a1", "a2", "a3"].map(create_op).to_vec()))
        .await;
    assert_eq!(statuses(&reply.body), vec![applied(); 3]);
    // At 900 of 1000 bytes: growing a1 by 200 does not fit, shrinking it does, and then the
    // freed room takes a record that did not fit before.
    let grow = json!({"collection": "todos", "op": "update", "id": "a1",
        "data": {"pad": "y".repeat(480)}});
    let shrink = json!({"collection": "todos", "op": "replace", "id": "a1",
        "data": {"id": "a1"}});
    let reply = alice.push(json!([grow, shrink, create_op("a4")])).await;
    assert_eq!(
        statuses(&reply.body),
        vec![over_quota(), applied(), applied()]
    );
    // A delete always goes, but its tombstone keeps the record's data (filtered readers
    // match it), so it frees nothing.
    let delete = json!({"collection": "todos", "op": "delete", "id": "a2"});
    let reply = alice.push(json!([delete, create_op("a5")])).await;
    assert_eq!(statuses(&reply.body), vec![applied(), over_quota()]);
    server.shutdown().await.unwrap();
}

async fn the_count_survives_a_restart(db: TestDb) {
    let server = support::start(db.builder().max_user_bytes(QUOTA)).await;
    let alice = Client::new(&server, ALICE.1);
    let reply = alice
        .push(Value::Array(["a1", "a2", "a3"].map(create_op).to_vec()))
        .await;
    assert_eq!(statuses(&reply.body), vec![applied(); 3]);
    server.shutdown().await.unwrap();
    let server = support::start(db.builder().max_user_bytes(QUOTA)).await;
    // The checksums of what was there were counted when the server opened the database.
    assert_eq!(
        checksum_mismatches(&db),
        Vec::<String>::new(),
        "counted at open"
    );
    let alice = Client::new(&server, ALICE.1);
    let reply = alice.push(json!([create_op("a4")])).await;
    assert_eq!(statuses(&reply.body), vec![over_quota()]);
    server.shutdown().await.unwrap();
}

async fn concurrent_writers_cannot_both_take_the_last_room(db: TestDb) {
    let server = support::start(db.builder().max_user_bytes(QUOTA)).await;
    // 12 writers at once, each creating one 300-byte record: exactly 3 fit.
    let mut tasks = Vec::new();
    for n in 0..12 {
        let alice = Client::new(&server, ALICE.1);
        tasks.push(tokio::spawn(async move {
            alice
                .create("todos", &record(&format!("c{n}")))
                .await
                .status
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::PAYLOAD_TOO_LARGE => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 3);
    let alice = Client::new(&server, ALICE.1);
    assert_eq!(alice.pull_all("todos", "", 100).await.len(), 3);
    server.shutdown().await.unwrap();
}

/// Runs `statements` on the test's database directly.
fn execute(db: &TestDb, statements: &[&str]) {
    match db.sqlite_path() {
        Some(path) => {
            let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            for statement in statements {
                diesel::sql_query(*statement).execute(&mut conn).unwrap();
            }
        }
        None => {
            let mut conn = diesel::PgConnection::establish(&db.url).unwrap();
            for statement in statements {
                diesel::sql_query(*statement).execute(&mut conn).unwrap();
            }
        }
    }
}

#[derive(diesel::QueryableByName)]
struct Mismatches {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Rows of `sync_usage` that differ from a recount of `sync_records` (either side missing
/// counts as a difference, except a zero row with no records behind it).
fn mismatches(db: &TestDb) -> i64 {
    let query = "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM (
            SELECT owner, collection,
                   SUM(CASE WHEN deleted THEN 0 ELSE 1 END) AS records,
                   SUM(octet_length(data)) AS bytes
            FROM sync_records GROUP BY owner, collection
        ) r FULL OUTER JOIN sync_usage u ON r.owner = u.owner AND r.collection = u.collection
        WHERE r.records IS DISTINCT FROM u.records OR r.bytes IS DISTINCT FROM u.bytes";
    let rows: Vec<Mismatches> = match db.sqlite_path() {
        Some(path) => {
            let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            diesel::sql_query(query).load(&mut conn).unwrap()
        }
        None => {
            let mut conn = diesel::PgConnection::establish(&db.url).unwrap();
            diesel::sql_query(query).load(&mut conn).unwrap()
        }
    };
    rows[0].n
}

#[derive(diesel::QueryableByName)]
struct RecordKey {
    #[diesel(sql_type = diesel::sql_types::Text)]
    owner: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    collection: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    version: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    deleted: bool,
}

#[derive(diesel::QueryableByName)]
struct UsageSums {
    #[diesel(sql_type = diesel::sql_types::Text)]
    owner: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    collection: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    total: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    checksum_lo: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    checksum_hi: Option<i64>,
}

/// (owner, collection) pairs whose kept record total or checksum differs from one computed
/// from `sync_records` (the checksum as sync-protocol defines it).
fn checksum_mismatches(db: &TestDb) -> Vec<String> {
    use std::collections::BTreeMap;
    use sync_server::protocol::Checksum;
    let records_sql = "SELECT owner, collection, id, version, deleted FROM sync_records";
    let usage_sql = "SELECT owner, collection, total, checksum_lo, checksum_hi FROM sync_usage";
    let (records, usage): (Vec<RecordKey>, Vec<UsageSums>) = match db.sqlite_path() {
        Some(path) => {
            let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            (
                diesel::sql_query(records_sql).load(&mut conn).unwrap(),
                diesel::sql_query(usage_sql).load(&mut conn).unwrap(),
            )
        }
        None => {
            let mut conn = diesel::PgConnection::establish(&db.url).unwrap();
            (
                diesel::sql_query(records_sql).load(&mut conn).unwrap(),
                diesel::sql_query(usage_sql).load(&mut conn).unwrap(),
            )
        }
    };
    let mut expected: BTreeMap<(String, String), (i64, u64)> = BTreeMap::new();
    for r in records {
        let entry = expected.entry((r.owner, r.collection)).or_insert((0, 0));
        entry.0 += 1;
        entry.1 = entry
            .1
            .wrapping_add(Checksum::of_record(&r.id, r.version, r.deleted, 1).value());
    }
    let mut kept: BTreeMap<(String, String), (i64, u64)> = BTreeMap::new();
    for u in usage {
        let checksum = Checksum {
            lo: u.checksum_lo.unwrap_or(-1),
            hi: u.checksum_hi.unwrap_or(-1),
        };
        kept.insert(
            (u.owner, u.collection),
            (u.total.unwrap_or(-1), checksum.value()),
        );
    }
    let mut out = Vec::new();
    for (key, want) in &expected {
        if kept.get(key) != Some(want) {
            out.push(format!(
                "{key:?}: kept {:?}, recounted {want:?}",
                kept.get(key)
            ));
        }
    }
    for (key, have) in &kept {
        if !expected.contains_key(key) && *have != (0, 0) {
            out.push(format!("{key:?}: kept {have:?} with no records"));
        }
    }
    out
}

async fn the_count_matches_a_recount_after_every_kind_of_write(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let bob = Client::new(&server, BOB.1);
    let op = |op: &str, collection: &str, id: &str, data: Value| json!({"collection": collection, "op": op, "id": id, "data": data});
    let keyed = |mut value: Value, key: &str| {
        value["idempotency_key"] = json!(key);
        value
    };
    // Fresh creates (the fast path), then every kind of op over existing rows.
    alice
        .push(json!([
            keyed(op("create", "todos", "t1", json!({"title": "one"})), "k1"),
            keyed(op("create", "todos", "t2", json!({"title": "two"})), "k2"),
            op("create", "notes", "n1", json!({"body": "x".repeat(500)})),
        ]))
        .await;
    assert_eq!(mismatches(&db), 0, "after fresh creates");
    assert_eq!(
        checksum_mismatches(&db),
        Vec::<String>::new(),
        "after fresh creates"
    );
    alice
        .push(json!([
            // A replay of a key: answered from the store, changes nothing.
            keyed(op("create", "todos", "t1", json!({"title": "one"})), "k1"),
            // A create of an existing id: a conflict, changes nothing.
            op("create", "todos", "t2", json!({"title": "again"})),
            op("update", "todos", "t1", json!({"title": "one, longer now"})),
            op("replace", "notes", "n1", json!({"body": "short"})),
            op("delete", "todos", "t2", json!({})),
            op("delete", "todos", "never-there", json!({})),
            op("update", "todos", "missing", json!({"title": "?"})),
        ]))
        .await;
    assert_eq!(mismatches(&db), 0, "after mixed ops");
    assert_eq!(
        checksum_mismatches(&db),
        Vec::<String>::new(),
        "after mixed ops"
    );
    alice
        .push(json!([
            // A create over a tombstone brings the record back.
            op("create", "todos", "t2", json!({"title": "back"})),
            op("delete", "notes", "n1", json!({})),
            op("delete", "notes", "n1", json!({})),
        ]))
        .await;
    bob.push(json!([op(
        "create",
        "todos",
        "t1",
        json!({"title": "bob's"})
    )]))
    .await;
    let reply = alice
        .create("todos", &json!({"id": "r1", "title": "rest"}))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = alice
        .request(reqwest::Method::DELETE, "/todos/r1")
        .send()
        .await
        .unwrap();
    assert!(reply.status().is_success());
    assert_eq!(mismatches(&db), 0, "after tombstones and REST writes");
    assert_eq!(
        checksum_mismatches(&db),
        Vec::<String>::new(),
        "after tombstones and REST writes"
    );
    server.shutdown().await.unwrap();
}

async fn records_stored_before_the_count_existed_are_counted(db: TestDb) {
    // Records written without a quota, then the count taken away as if the database came
    // from a build before it: the migration counts what is there.
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let reply = alice
        .push(Value::Array(["a1", "a2", "a3"].map(create_op).to_vec()))
        .await;
    assert_eq!(statuses(&reply.body), vec![applied(); 3]);
    let bob = Client::new(&server, BOB.1);
    let reply = bob.push(json!([create_op("b1")])).await;
    assert_eq!(statuses(&reply.body), vec![applied()]);
    server.shutdown().await.unwrap();
    execute(
        &db,
        &[
            "DROP TABLE sync_devices",
            "DROP TABLE sync_usage",
            "DELETE FROM __diesel_schema_migrations WHERE version IN ('20261203000000', '20261204000000')",
        ],
    );
    let server = support::start(db.builder().max_user_bytes(QUOTA)).await;
    // The checksums of what was there were counted when the server opened the database.
    assert_eq!(
        checksum_mismatches(&db),
        Vec::<String>::new(),
        "counted at open"
    );
    let alice = Client::new(&server, ALICE.1);
    let reply = alice.push(json!([create_op("a4")])).await;
    assert_eq!(statuses(&reply.body), vec![over_quota()]);
    let bob = Client::new(&server, BOB.1);
    let reply = bob
        .push(Value::Array(["b2", "b3", "b4"].map(create_op).to_vec()))
        .await;
    assert_eq!(
        statuses(&reply.body),
        vec![applied(), applied(), over_quota()]
    );
    server.shutdown().await.unwrap();
}
