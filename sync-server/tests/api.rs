//! REST and batch push against a real server, on SQLite and (when configured) Postgres.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{Client, Serve, TestDb, ALICE, BOB};

sync_testkit::backend_matrix!(
    async:
    health_answers_ok,
    create_get_update_replace_delete_roundtrip,
    pull_pages_by_cursor_with_tombstones_and_filters,
    idempotent_create_replayed_five_times_makes_one_record,
    idempotent_push_replay_applies_nothing,
    idempotent_replay_after_the_record_changed_returns_the_first_response,
    stale_if_match_is_409_with_current_record,
    users_cannot_see_or_touch_each_others_records,
    push_returns_per_op_results_in_order,
    a_batch_of_creates_meeting_existing_records_answers_each_op,
    restart_keeps_records_and_idempotency_keys,
    jwt_tokens_authenticate_by_sub,
);

async fn health_answers_ok(db: TestDb) {
    let server = db.start().await;
    let reply = Client::anonymous(&server).get("/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"status": "ok"}));
    server.shutdown().await.unwrap();
}

async fn create_get_update_replace_delete_roundtrip(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);

    let created = alice
        .create(
            "todos",
            &json!({"id": "t1", "title": "milk", "done": false, "tags": ["a"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let v1 = created.body["version"].as_i64().unwrap();
    assert!(v1 > 0);
    assert_eq!(created.body["id"], "t1");
    assert_eq!(created.body["title"], "milk");
    assert!(created.body["updated_at"].is_string());
    assert!(created.body.get("deleted").is_none());

    // A create without id gets a server id.
    let generated = alice.create("todos", &json!({"title": "eggs"})).await;
    assert_eq!(generated.status, StatusCode::CREATED);
    assert!(!generated.body["id"].as_str().unwrap().is_empty());

    let got = alice.get("/todos/t1").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, created.body);

    // PATCH merges top-level keys.
    let patched = Client::send(
        alice
            .request(Method::PATCH, "/todos/t1")
            .header("if-match", v1.to_string())
            .json(&json!({"done": true})),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    let v2 = patched.body["version"].as_i64().unwrap();
    assert!(v2 > v1);
    assert_eq!(patched.body["title"], "milk");
    assert_eq!(patched.body["done"], true);

    // PUT replaces the data.
    let put = Client::send(
        alice
            .request(Method::PUT, "/todos/t1")
            .header("if-match", format!("\"{v2}\""))
            .json(&json!({"title": "oat milk"})),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let v3 = put.body["version"].as_i64().unwrap();
    assert!(v3 > v2);
    assert_eq!(put.body["title"], "oat milk");
    assert!(put.body.get("done").is_none());
    assert!(put.body.get("tags").is_none());

    let deleted = Client::send(
        alice
            .request(Method::DELETE, "/todos/t1")
            .header("if-match", v3.to_string()),
    )
    .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert_eq!(deleted.body["deleted"], true);
    let v4 = deleted.body["version"].as_i64().unwrap();
    assert!(v4 > v3);

    assert_eq!(alice.get("/todos/t1").await.status, StatusCode::NOT_FOUND);
    let missing = Client::send(
        alice
            .request(Method::PATCH, "/todos/nope")
            .json(&json!({"a": 1})),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["code"], "not_found");

    // The pull shows the tombstone.
    let items = alice.pull_all("todos", "", 100).await;
    let t1 = items.iter().find(|i| i["id"] == "t1").unwrap();
    assert_eq!(t1["deleted"], true);
    assert_eq!(t1["version"], v4);

    // Recreating over a tombstone works.
    let again = alice
        .create("todos", &json!({"id": "t1", "title": "again"}))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert!(again.body["version"].as_i64().unwrap() > v4);

    // Creating a live id again is a conflict.
    let dup = alice
        .create("todos", &json!({"id": "t1", "title": "dup"}))
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.body["record"]["title"], "again");
    server.shutdown().await.unwrap();
}

async fn pull_pages_by_cursor_with_tombstones_and_filters(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let ops: Vec<Value> = (0..25)
        .map(|n| {
            json!({"collection": "todos", "op": "create", "id": format!("t{n:02}"),
                   "data": {"n": n, "project": if n % 2 == 0 { "even" } else { "odd" }, "done": n % 5 == 0}})
        })
        .collect();
    let pushed = alice.push(Value::Array(ops)).await;
    assert_eq!(pushed.status, StatusCode::OK);
    let del = alice
        .push(json!([{"collection": "todos", "op": "delete", "id": "t03"}]))
        .await;
    assert_eq!(del.body["results"][0]["status"], "applied");

    let first = alice.get("/todos?limit=10").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["items"].as_array().unwrap().len(), 10);
    assert_eq!(first.body["has_more"], true);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(
        cursor,
        first.body["items"][9]["version"]
            .as_i64()
            .unwrap()
            .to_string()
    );

    let all = alice.pull_all("todos", "", 10).await;
    assert_eq!(all.len(), 25);
    let versions: Vec<i64> = all.iter().map(|i| i["version"].as_i64().unwrap()).collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "ordered by version"
    );
    // The deleted record comes last (highest version) as a tombstone.
    assert_eq!(all.last().unwrap()["id"], "t03");
    assert_eq!(all.last().unwrap()["deleted"], true);

    // An empty page keeps the cursor.
    let last = versions.last().unwrap();
    let empty = alice.get(&format!("/todos?since={last}")).await;
    assert_eq!(empty.body["items"], json!([]));
    assert_eq!(empty.body["next_cursor"], last.to_string());
    assert_eq!(empty.body["has_more"], false);

    let even = alice.pull_all("todos", "&project=even", 4).await;
    assert_eq!(even.len(), 13);
    assert!(even.iter().all(|i| i["project"] == "even"));
    let done = alice.pull_all("todos", "&done=true", 100).await;
    let mut ids: Vec<&str> = done.iter().map(|i| i["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["t00", "t05", "t10", "t15", "t20"]);
    let one = alice.pull_all("todos", "&n=7", 100).await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["id"], "t07");
    // The tombstone still matches a filter on its last data.
    let odd = alice.pull_all("todos", "&project=odd&n=3", 100).await;
    assert_eq!(odd.len(), 1);
    assert_eq!(odd[0]["deleted"], true);

    let bad = alice.get("/todos?since=abc").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["code"], "invalid_cursor");
    // NUL cannot be stored or compared on every backend: the same 400 on both.
    for query in ["/todos?project=a%00b", "/todos?pro%00ject=a"] {
        let bad = alice.get(query).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(bad.body["code"], "invalid_filter", "{query}");
    }
    server.shutdown().await.unwrap();
}

async fn idempotent_create_replayed_five_times_makes_one_record(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let send = |alice: Client| async move {
        Client::send(
            alice
                .request(Method::POST, "/todos")
                .header("idempotency-key", "create-once")
                .json(&json!({"title": "once"})),
        )
        .await
    };
    // Concurrently, with a server-generated id: the replays must return the same id.
    let concurrent = futures_util::future::join_all((0..3).map(|_| send(alice.clone()))).await;
    let mut replies = concurrent;
    replies.push(send(alice.clone()).await);
    replies.push(send(alice.clone()).await);
    assert_eq!(replies.len(), 5);
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        assert_eq!(reply, &replies[0]);
    }
    let items = alice.pull_all("todos", "", 100).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0], replies[0].body);

    // Reusing the key for another operation is refused, not applied.
    let other = Client::send(
        alice
            .request(Method::POST, "/notes")
            .header("idempotency-key", "create-once")
            .json(&json!({"title": "other"})),
    )
    .await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other.body
    );
    assert!(alice.pull_all("notes", "", 100).await.is_empty());
    server.shutdown().await.unwrap();
}

async fn idempotent_push_replay_applies_nothing(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let created = alice.create("todos", &json!({"id": "a", "count": 0})).await;
    let v0 = created.body["version"].as_i64().unwrap();
    let op = json!({"idempotency_key": "inc-1", "collection": "todos", "op": "update",
                    "id": "a", "base_version": v0, "data": {"count": 1}});
    // The same op twice in one batch and three more times in later batches (also concurrently).
    let first = alice.push(json!([op.clone(), op.clone()])).await;
    assert_eq!(first.status, StatusCode::OK);
    let results = first.body["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "applied", "{}", first.body);
    assert_eq!(results[0], results[1]);
    let later = futures_util::future::join_all((0..3).map(|_| {
        let alice = alice.clone();
        let op = op.clone();
        async move { alice.push(json!([op])).await }
    }))
    .await;
    for reply in later {
        assert_eq!(reply.body["results"][0], results[0]);
    }
    let current = alice.get("/todos/a").await;
    assert_eq!(current.body["version"], results[0]["version"]);
    assert_eq!(current.body["count"], 1);
    // Exactly one new version was made.
    let versions: Vec<i64> = alice
        .pull_all("todos", "", 10)
        .await
        .iter()
        .map(|i| i["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions.len(), 1);
    server.shutdown().await.unwrap();
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

async fn idempotent_replay_after_the_record_changed_returns_the_first_response(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let create = json!({"idempotency_key": "k-create", "collection": "todos", "op": "create",
                        "id": "r", "data": {"n": 1, "text": "caf\u{e9} \"q\""}});
    let first = push_bytes(&alice, json!([create.clone()])).await;
    let first_json: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(first_json["results"][0]["status"], "applied");
    assert_eq!(
        first_json["results"][0]["record"]["text"],
        "caf\u{e9} \"q\""
    );
    // Replayed while the record is unchanged, and again after each change to it.
    assert_eq!(push_bytes(&alice, json!([create.clone()])).await, first);

    // A keyed create without id (the server generates it) and a keyed update, each replayed
    // after the record changed later in the same batch, then in later batches.
    let generated = Client::send(
        alice
            .request(Method::POST, "/notes")
            .header("idempotency-key", "k-generated")
            .json(&json!({"title": "g"})),
    )
    .await;
    assert_eq!(generated.status, StatusCode::CREATED);
    let generated_id = generated.body["id"].as_str().unwrap().to_owned();
    let update = json!({"idempotency_key": "k-update", "collection": "todos", "op": "update",
                        "id": "r", "data": {"n": 2}});
    let batch = push_bytes(
        &alice,
        json!([
            update.clone(),
            {"collection": "todos", "op": "update", "id": "r", "data": {"n": 3}},
            update.clone(),
            create.clone(),
            {"collection": "notes", "op": "delete", "id": generated_id},
        ]),
    )
    .await;
    let batch: Value = serde_json::from_slice(&batch).unwrap();
    let results = batch["results"].as_array().unwrap();
    assert_eq!(results[0]["record"]["n"], 2);
    assert_eq!(results[1]["record"]["n"], 3);
    assert_eq!(results[2], results[0]);
    assert_eq!(results[3], first_json["results"][0]);
    assert_eq!(results[4]["record"]["deleted"], true);

    alice
        .push(json!([{"collection": "todos", "op": "delete", "id": "r"}]))
        .await;
    let recreated = alice
        .push(
            json!([{"idempotency_key": "k-again", "collection": "todos", "op": "create",
                      "id": "r", "data": {"n": 4}}]),
        )
        .await;
    assert_eq!(recreated.body["results"][0]["status"], "applied");
    assert_eq!(push_bytes(&alice, json!([create.clone()])).await, first);
    let replayed_update: Value =
        serde_json::from_slice(&push_bytes(&alice, json!([update])).await).unwrap();
    assert_eq!(replayed_update["results"][0], results[0]);
    let replayed_generated = Client::send(
        alice
            .request(Method::POST, "/notes")
            .header("idempotency-key", "k-generated")
            .json(&json!({"title": "g"})),
    )
    .await;
    assert_eq!(replayed_generated, generated);

    // Nothing was applied twice.
    let versions: Vec<i64> = alice
        .pull_all("todos", "", 10)
        .await
        .iter()
        .map(|i| i["version"].as_i64().unwrap())
        .collect();
    assert_eq!(
        versions,
        [recreated.body["results"][0]["version"].as_i64().unwrap()]
    );
    assert_eq!(alice.get("/todos/r").await.body["n"], 4);

    // A batch longer than one insert chunk, with a remainder, is stored whole and replays whole.
    let many: Vec<Value> = (0..123)
        .map(|n| {
            json!({"idempotency_key": format!("many-{n}"), "collection": "many", "op": "create",
                   "id": format!("m{n:03}"), "data": {"n": n}})
        })
        .collect();
    let first_many = push_bytes(&alice, Value::Array(many.clone())).await;
    assert_eq!(push_bytes(&alice, Value::Array(many)).await, first_many);
    let stored = alice.pull_all("many", "", 1000).await;
    assert_eq!(stored.len(), 123);
    assert!(stored.iter().enumerate().all(|(n, r)| r["n"] == n));

    // Data is stored as sent unless a `\u` escape needs the full parse, which also refuses an
    // unpaired surrogate.
    let raw = |body: &'static str| {
        Client::send(
            alice
                .request(Method::POST, "/escapes")
                .header("content-type", "application/json")
                .body(body),
        )
    };
    let escaped = raw(r#"{"id": "e", "t": "caf\u00e9", "n": [1, 2.50]}"#).await;
    assert_eq!(escaped.status, StatusCode::CREATED, "{}", escaped.body);
    assert_eq!(escaped.body["t"], "caf\u{e9}");
    let lone = raw(r#"{"id": "s", "t": "\ud800"}"#).await;
    assert_eq!(lone.status, StatusCode::BAD_REQUEST, "{}", lone.body);
    assert_eq!(lone.body["code"], "invalid_data");
    server.shutdown().await.unwrap();
}

async fn stale_if_match_is_409_with_current_record(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let v1 = alice
        .create("todos", &json!({"id": "c", "title": "one"}))
        .await
        .body["version"]
        .as_i64()
        .unwrap();
    let ok = Client::send(
        alice
            .request(Method::PATCH, "/todos/c")
            .header("if-match", v1.to_string())
            .json(&json!({"title": "two"})),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let v2 = ok.body["version"].as_i64().unwrap();
    assert!(v2 > v1);

    for method in [Method::PATCH, Method::PUT, Method::DELETE] {
        let stale = Client::send(
            alice
                .request(method.clone(), "/todos/c")
                .header("if-match", v1.to_string())
                .json(&json!({"title": "stale"})),
        )
        .await;
        assert_eq!(
            stale.status,
            StatusCode::CONFLICT,
            "{method}: {}",
            stale.body
        );
        assert_eq!(stale.body["code"], "conflict");
        assert_eq!(stale.body["record"]["title"], "two");
        assert_eq!(stale.body["record"]["version"], v2);
    }
    // Nothing was applied by the stale writes.
    assert_eq!(alice.get("/todos/c").await.body, ok.body);

    // The same through push.
    let pushed = alice
        .push(json!([{"collection": "todos", "op": "update", "id": "c", "base_version": v1, "data": {"title": "x"}},
                     {"collection": "todos", "op": "update", "id": "c", "base_version": v2, "data": {"title": "three"}}]))
        .await;
    let results = &pushed.body["results"];
    assert_eq!(results[0]["status"], "conflict");
    assert_eq!(results[0]["record"]["version"], v2);
    assert_eq!(results[0]["version"], v2);
    assert_eq!(results[1]["status"], "applied");
    assert!(results[1]["version"].as_i64().unwrap() > v2);

    let bad = Client::send(
        alice
            .request(Method::PATCH, "/todos/c")
            .header("if-match", "soon")
            .json(&json!({})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    server.shutdown().await.unwrap();
}

async fn users_cannot_see_or_touch_each_others_records(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let bob = Client::new(&server, BOB.1);
    let created = alice
        .create("todos", &json!({"id": "secret", "title": "alice's"}))
        .await;
    let v = created.body["version"].as_i64().unwrap();

    assert_eq!(bob.get("/todos/secret").await.status, StatusCode::NOT_FOUND);
    let patch = Client::send(
        bob.request(Method::PATCH, "/todos/secret")
            .header("if-match", v.to_string())
            .json(&json!({"title": "bob's"})),
    )
    .await;
    assert_eq!(patch.status, StatusCode::NOT_FOUND);
    let put = Client::send(
        bob.request(Method::PUT, "/todos/secret")
            .json(&json!({"title": "bob's"})),
    )
    .await;
    assert_eq!(put.status, StatusCode::NOT_FOUND);
    let delete = Client::send(bob.request(Method::DELETE, "/todos/secret")).await;
    assert_eq!(delete.status, StatusCode::NOT_FOUND);
    let pushed = bob
        .push(json!([{"collection": "todos", "op": "delete", "id": "secret"}]))
        .await;
    // A delete of a record Bob does not have has nothing to do: applied, changing nothing
    // (Alice's record is untouched, checked below).
    assert_eq!(pushed.body["results"][0]["status"], "applied");
    assert_eq!(pushed.body["results"][0]["version"], 0);
    assert!(bob.pull_all("todos", "", 100).await.is_empty());

    // Bob's own record with the same id is a different record.
    let own = bob
        .create("todos", &json!({"id": "secret", "title": "bob's"}))
        .await;
    assert_eq!(own.status, StatusCode::CREATED);
    assert_eq!(alice.get("/todos/secret").await.body, created.body);
    let alice_items = alice.pull_all("todos", "", 100).await;
    assert_eq!(alice_items, vec![created.body.clone()]);
    server.shutdown().await.unwrap();
}

async fn push_returns_per_op_results_in_order(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let long_id = "x".repeat(300);
    let reply = alice
        .push(json!([
            {"collection": "todos", "op": "create", "id": "p1", "data": {"title": "one"}},
            {"collection": "todos", "op": "frobnicate", "id": "p2", "data": {}},
            {"collection": "todos", "op": "create", "id": "p3", "data": [1, 2]},
            {"collection": "todos", "op": "create", "id": long_id, "data": {}},
            {"collection": "todos", "op": "update", "id": "missing", "data": {"a": 1}},
            {"collection": "todos", "op": "update", "id": "p1", "data": {"done": true}},
            "not an op",
            {"collection": "todos", "op": "create", "id": "p4", "data": {"title": "four"}},
            {"collection": "todos", "op": "create", "id": "p1", "data": {"title": "dup"}},
            {"collection": "todos", "op": "delete", "id": "p4"},
        ]))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let results = reply.body["results"].as_array().unwrap();
    let summary: Vec<(&str, Option<&str>)> = results
        .iter()
        .map(|r| (r["status"].as_str().unwrap(), r["code"].as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("applied", None),
            ("rejected", Some("unknown_op")),
            ("rejected", Some("invalid_data")),
            ("rejected", Some("id_too_long")),
            ("rejected", Some("not_found")),
            ("applied", None),
            ("rejected", Some("invalid_op")),
            ("applied", None),
            ("conflict", Some("conflict")),
            ("applied", None),
        ]
    );
    for r in results.iter().filter(|r| r["status"] == "rejected") {
        assert!(!r["error"].as_str().unwrap().is_empty());
    }
    // Versions of applied ops increase in op order.
    let versions: Vec<i64> = results
        .iter()
        .filter(|r| r["status"] == "applied")
        .map(|r| r["version"].as_i64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(results[5]["record"]["title"], "one");
    assert_eq!(results[5]["record"]["done"], true);

    let items = alice.pull_all("todos", "", 100).await;
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["p1", "p4"]);
    assert_eq!(items[1]["deleted"], true);
    server.shutdown().await.unwrap();
}

async fn restart_keeps_records_and_idempotency_keys(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let first = Client::send(
        alice
            .request(Method::POST, "/todos")
            .header("idempotency-key", "k-restart")
            .json(&json!({"id": "r1", "title": "kept"})),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let pushed = alice
        .push(json!([{"idempotency_key": "k-push", "collection": "todos", "op": "create", "id": "r2", "data": {"n": 2}}]))
        .await;
    server.shutdown().await.unwrap();

    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    assert_eq!(alice.get("/todos/r1").await.body, first.body);
    let replay = Client::send(
        alice
            .request(Method::POST, "/todos")
            .header("idempotency-key", "k-restart")
            .json(&json!({"id": "r1", "title": "kept"})),
    )
    .await;
    assert_eq!(replay, first);
    let replay_push = alice
        .push(json!([{"idempotency_key": "k-push", "collection": "todos", "op": "create", "id": "r2", "data": {"n": 2}}]))
        .await;
    assert_eq!(replay_push.body, pushed.body);
    let items = alice.pull_all("todos", "", 100).await;
    assert_eq!(items.len(), 2);
    // The sequence continues after the restart.
    let created = alice.create("todos", &json!({"id": "r3"})).await;
    assert!(created.body["version"].as_i64().unwrap() > items[1]["version"].as_i64().unwrap());
    server.shutdown().await.unwrap();
}

async fn jwt_tokens_authenticate_by_sub(db: TestDb) {
    let secret = b"jwt-test-secret-of-32-bytes-long";
    let server = support::start(db.builder().jwt_secret(secret.to_vec())).await;
    let make = |sub: &str, exp_offset: i64, key: &[u8]| {
        let exp = chrono::Utc::now().timestamp() + exp_offset;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": sub, "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(key),
        )
        .unwrap()
    };
    let carol = Client::new(&server, &make("carol", 3600, secret));
    let created = carol.create("todos", &json!({"id": "j1"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    // Same `sub`, another token: same user.
    let carol2 = Client::new(&server, &make("carol", 1800, secret));
    assert_eq!(carol2.get("/todos/j1").await.status, StatusCode::OK);
    // Alice's static token still works, and does not see carol's record.
    assert_eq!(
        Client::new(&server, ALICE.1).get("/todos/j1").await.status,
        StatusCode::NOT_FOUND
    );
    let expired = Client::new(&server, &make("carol", -3600, secret));
    assert_eq!(
        expired.get("/todos/j1").await.status,
        StatusCode::UNAUTHORIZED
    );
    let forged = Client::new(&server, &make("carol", 3600, b"other-secret"));
    assert_eq!(
        forged.get("/todos/j1").await.status,
        StatusCode::UNAUTHORIZED
    );
    server.shutdown().await.unwrap();
}

/// A batch of nothing but creates is first tried without reading its records. When one of them
/// exists (live or a tombstone), or an id comes twice, the batch must still answer every op as
/// if the records had been read: conflicts for the taken ids, a re-create over the tombstone,
/// consecutive versions for what applied, and nothing else written.
async fn a_batch_of_creates_meeting_existing_records_answers_each_op(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let create = |id: &str, key: Option<&str>| {
        let mut op = json!({"collection": "todos", "op": "create", "id": id, "data": {"id": id}});
        if let Some(key) = key {
            op["idempotency_key"] = json!(key);
        }
        op
    };
    let setup = alice
        .push(json!([create("live", None), create("gone", None),
                     {"collection": "todos", "op": "delete", "id": "gone"}]))
        .await;
    let before = setup.body["results"][2]["version"].as_i64().unwrap();

    let reply = alice
        .push(json!([
            create("n1", Some("k1")),
            create("live", Some("k2")),
            create("gone", Some("k3")),
            create("n2", None),
            create("n2", Some("k5")),
        ]))
        .await;
    let results = reply.body["results"].as_array().unwrap();
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["applied", "conflict", "applied", "applied", "conflict"]
    );
    let versions: Vec<i64> = [0, 2, 3]
        .iter()
        .map(|&n| results[n]["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [before + 1, before + 2, before + 3]);
    assert_eq!(results[1]["record"]["id"], "live");

    let pulled = alice.pull_all("todos", "", 100).await;
    let mut ids: Vec<&str> = pulled.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["gone", "live", "n1", "n2"]);
    assert!(pulled.iter().all(|r| r["deleted"].as_bool() != Some(true)));
    // The refused ops stored no key: the same keys apply to new ops.
    let retry = alice
        .push(json!([create("n3", Some("k2")), create("n4", Some("k5"))]))
        .await;
    assert_eq!(retry.body["results"][0]["status"], "applied");
    assert_eq!(retry.body["results"][1]["status"], "applied");
    // A key held by a record, reused for a create of a new id, is refused as reused.
    let reused = alice.push(json!([create("n9", Some("k1"))])).await;
    assert_eq!(reused.body["results"][0]["code"], "idempotency_key_reused");
    // A fresh batch of creates with keys replays exactly.
    let batch = json!([create("f1", Some("f1")), create("f2", Some("f2"))]);
    let first = push_bytes(&alice, batch.clone()).await;
    assert_eq!(push_bytes(&alice, batch).await, first);
    assert_eq!(alice.pull_all("todos", "", 100).await.len(), 8);
    server.shutdown().await.unwrap();
}
