//! Requests over the WebSocket (`{"type":"request"}`): each method answers what its REST
//! endpoint answers, errors, auth, events interleaved with responses, a slow request that
//! does not hold up the connection, and idempotent replay over the socket.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, SqliteConnection};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{
    ws_connect, ws_expect, ws_next, ws_send, ws_subscribe, Client, Serve, TestDb, Ws, ALICE, BOB,
};
use sync_server::Limits;

sync_testkit::backend_matrix!(
    async:
    each_method_answers_like_rest,
    malformed_and_unknown_requests_are_400,
    requests_need_an_authenticated_connection,
    events_interleave_with_responses,
    a_slow_request_does_not_hold_up_the_connection,
    idempotent_replay_over_the_socket_applies_nothing,
);

const QUIET: Duration = Duration::from_millis(400);

/// Sends a request and returns its response's `(status, body)`; every other message that
/// arrives meanwhile is appended to `others`.
async fn request_collect(
    ws: &mut Ws,
    id: u64,
    method: &str,
    body: Value,
    others: &mut Vec<Value>,
) -> (u16, Value) {
    ws_send(
        ws,
        json!({"type": "request", "id": id, "method": method, "body": body}),
    )
    .await;
    response_collect(ws, id, others).await
}

/// Reads until the response to `id`; other messages go to `others`.
async fn response_collect(ws: &mut Ws, id: u64, others: &mut Vec<Value>) -> (u16, Value) {
    loop {
        let message = ws_expect(ws).await;
        if message["type"] == "response" && message["id"] == id {
            let status = u16::try_from(message["status"].as_u64().unwrap()).unwrap();
            return (status, message["body"].clone());
        }
        others.push(message);
    }
}

async fn request(ws: &mut Ws, id: u64, method: &str, body: Value) -> (u16, Value) {
    let mut others = Vec::new();
    let answer = request_collect(ws, id, method, body, &mut others).await;
    assert!(others.is_empty(), "unexpected messages: {others:?}");
    answer
}

async fn each_method_answers_like_rest(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let bob = Client::new(&server, BOB.1);
    let mut ws = ws_connect(&server, Some(ALICE.1)).await;

    let (status, body) = request(&mut ws, 1, "health", Value::Null).await;
    assert_eq!((status, &body), (200, &json!({"status": "ok"})));

    // push: the same results as POST /sync/push, malformed ops rejected one by one.
    let (status, pushed) = request(
        &mut ws,
        2,
        "push",
        json!({"ops": [
            {"collection": "todos", "op": "create", "id": "t1", "data": {"title": "a", "done": false, "priority": 1}},
            {"collection": "todos", "op": "create", "id": "t2", "data": {"title": "b", "done": true, "priority": 2}},
            {"collection": "todos", "op": "create", "id": "t3", "data": {"title": "c", "done": false, "priority": 3}},
            {"collection": "todos", "op": "dance", "id": "x"},
            {"collection": "todos", "op": "update", "id": "t1", "data": "not an object"},
            {"collection": "todos", "op": "update", "id": "missing", "data": {}},
            {"collection": "todos", "op": "update", "id": "t1", "base_version": 999, "data": {"title": "z"}},
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{pushed}");
    let results = pushed["results"].as_array().unwrap();
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["applied", "applied", "applied", "rejected", "rejected", "rejected", "conflict"]
    );
    assert_eq!(results[3]["code"], "unknown_op");
    assert_eq!(results[4]["code"], "invalid_data");
    assert_eq!(results[5]["code"], "not_found");
    assert_eq!(results[6]["record"]["title"], "a");
    // What was written is what REST reads.
    let t1 = alice.get("/todos/t1").await;
    assert_eq!(results[0]["record"], t1.body);

    // get: the record, or 404 with the REST error body (also for another user's record).
    let (status, got) = request(
        &mut ws,
        3,
        "get",
        json!({"collection": "todos", "id": "t1"}),
    )
    .await;
    assert_eq!((status, &got), (200, &t1.body));
    bob.create("todos", &json!({"id": "bobs"})).await;
    for (id, record) in [(4, "nope"), (5, "bobs")] {
        let (status, body) = request(
            &mut ws,
            id,
            "get",
            json!({"collection": "todos", "id": record}),
        )
        .await;
        let rest = alice.get(&format!("/todos/{record}")).await;
        assert_eq!(status, 404);
        assert_eq!(rest.status, StatusCode::NOT_FOUND);
        assert_eq!(body, rest.body);
    }

    // pull: the same page as GET /{collection}?since=&limit=, cursor by cursor.
    let (status, first) = request(
        &mut ws,
        6,
        "pull",
        json!({"collection": "todos", "since": null, "limit": 2}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(first, alice.get("/todos?limit=2").await.body);
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["has_more"], true);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (_, second) = request(
        &mut ws,
        7,
        "pull",
        json!({"collection": "todos", "since": cursor, "limit": 2}),
    )
    .await;
    assert_eq!(
        second,
        alice
            .get(&format!("/todos?since={cursor}&limit=2"))
            .await
            .body
    );
    assert_eq!(second["items"][0]["id"], "t3");
    assert_eq!(second["has_more"], false);
    // Bob's record never appears.
    assert!(first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .all(|item| item["id"] != "bobs"));

    // query: equality filters (numbers and booleans as their text), limit and offset, as the
    // list endpoint.
    let (status, open) = request(
        &mut ws,
        8,
        "query",
        json!({"collection": "todos", "params": {"done": "false"}, "limit": null, "offset": null}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(open, alice.get("/todos?done=false").await.body);
    let ids: Vec<&str> = open["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["t1", "t3"]);
    let (_, paged) = request(
        &mut ws,
        9,
        "query",
        json!({"collection": "todos", "params": {"done": false}, "limit": 1, "offset": 1}),
    )
    .await;
    assert_eq!(
        paged,
        alice.get("/todos?done=false&limit=1&offset=1").await.body
    );
    assert_eq!(paged["items"][0]["id"], "t3");
    let (_, by_priority) = request(
        &mut ws,
        10,
        "query",
        json!({"collection": "todos", "params": {"priority": 2}}),
    )
    .await;
    assert_eq!(by_priority["items"][0]["id"], "t2");
    assert_eq!(by_priority["items"].as_array().unwrap().len(), 1);
    // json-server's _limit/_offset (what an HTTP remote sends) mean the same on REST.
    assert_eq!(
        alice.get("/todos?done=false&_limit=1&_offset=1").await.body,
        paged
    );
    server.shutdown().await.unwrap();
}

async fn malformed_and_unknown_requests_are_400(db: TestDb) {
    let mut builder = db.builder();
    let mut limits = Limits::default();
    limits.max_batch_ops = 2;
    builder = builder.limits(limits);
    let server = support::start(builder).await;
    let alice = Client::new(&server, ALICE.1);
    let mut ws = ws_connect(&server, Some(ALICE.1)).await;

    let cases = [
        (
            json!({"type": "request", "id": 1, "method": "dance", "body": {}}),
            400,
            "unknown_method",
        ),
        (
            json!({"type": "request", "id": 2, "body": {}}),
            400,
            "invalid_request",
        ),
        (
            json!({"type": "request", "id": 3, "method": "push", "body": []}),
            400,
            "invalid_request",
        ),
        (
            json!({"type": "request", "id": 4, "method": "push", "body": {"nops": []}}),
            400,
            "invalid_request",
        ),
        (
            json!({"type": "request", "id": 5, "method": "pull", "body": {"since": "0"}}),
            400,
            "invalid_collection",
        ),
        (
            json!({"type": "request", "id": 6, "method": "pull", "body": {"collection": "todos", "since": "abc"}}),
            400,
            "invalid_cursor",
        ),
        (
            json!({"type": "request", "id": 7, "method": "pull", "body": {"collection": "todos", "limit": 0}}),
            400,
            "invalid_limit",
        ),
        (
            json!({"type": "request", "id": 8, "method": "get", "body": {"collection": "todos"}}),
            400,
            "invalid_id",
        ),
        (
            json!({"type": "request", "id": 9, "method": "query", "body": {"collection": "todos", "params": {"tags": ["a"]}}}),
            400,
            "invalid_filter",
        ),
        (
            json!({"type": "request", "id": 10, "method": "get", "body": {"collection": "todos", "id": "x".repeat(300)}}),
            400,
            "id_too_long",
        ),
        (
            json!({"type": "request", "id": 11, "method": "push", "body": {"ops": [
                {"collection": "todos", "op": "create", "id": "a", "data": {}},
                {"collection": "todos", "op": "create", "id": "b", "data": {}},
                {"collection": "todos", "op": "create", "id": "c", "data": {}},
            ]}}),
            413,
            "batch_too_large",
        ),
    ];
    for (message, want_status, want_code) in cases {
        let id = message["id"].as_u64().unwrap();
        ws_send(&mut ws, message).await;
        let mut others = Vec::new();
        let (status, body) = response_collect(&mut ws, id, &mut others).await;
        assert!(others.is_empty(), "{others:?}");
        assert_eq!(status, want_status, "request {id}: {body}");
        assert_eq!(body["code"], want_code, "request {id}: {body}");
        assert!(!body["error"].as_str().unwrap().is_empty());
    }
    // The rejected batch changed nothing.
    assert!(alice.pull_all("todos", "", 100).await.is_empty());

    // A string id is echoed as it came.
    ws_send(
        &mut ws,
        json!({"type": "request", "id": "abc", "method": "health"}),
    )
    .await;
    let answer = ws_expect(&mut ws).await;
    assert_eq!(answer["id"], "abc");
    assert_eq!(answer["status"], 200);

    // Without an id there is nothing to answer to: a plain error, and the socket stays open.
    ws_send(&mut ws, json!({"type": "request", "method": "health"})).await;
    let error = ws_expect(&mut ws).await;
    assert_eq!(error["type"], "error", "{error}");
    assert!(error["message"].as_str().unwrap().contains("id"));
    let (status, _) = request(&mut ws, 12, "health", json!({})).await;
    assert_eq!(status, 200);
    server.shutdown().await.unwrap();
}

async fn requests_need_an_authenticated_connection(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    alice.create("todos", &json!({"id": "t1"})).await;
    let mut ws = ws_connect(&server, None).await;

    for (id, method, body) in [
        (1, "get", json!({"collection": "todos", "id": "t1"})),
        (2, "pull", json!({"collection": "todos"})),
        (3, "query", json!({"collection": "todos"})),
        (
            4,
            "push",
            json!({"ops": [{"collection": "todos", "op": "create", "id": "x", "data": {}}]}),
        ),
    ] {
        let (status, body) = request(&mut ws, id, method, body).await;
        assert_eq!(status, 401, "{method}: {body}");
        assert_eq!(body["code"], "unauthorized");
    }
    // Health needs no token, as GET /health.
    assert_eq!(request(&mut ws, 5, "health", Value::Null).await.0, 200);
    assert_eq!(alice.pull_all("todos", "", 100).await.len(), 1);

    ws_send(&mut ws, json!({"type": "auth", "token": ALICE.1})).await;
    assert_eq!(ws_expect(&mut ws).await["type"], "auth_ok");
    let (status, body) = request(
        &mut ws,
        6,
        "get",
        json!({"collection": "todos", "id": "t1"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], "t1");

    // Another user's socket sees only that user's records.
    let mut bob = ws_connect(&server, Some(BOB.1)).await;
    let (status, _) = request(
        &mut bob,
        1,
        "get",
        json!({"collection": "todos", "id": "t1"}),
    )
    .await;
    assert_eq!(status, 404);
    let (_, page) = request(&mut bob, 2, "pull", json!({"collection": "todos"})).await;
    assert_eq!(page["items"], json!([]));
    server.shutdown().await.unwrap();
}

async fn events_interleave_with_responses(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let mut ws = ws_connect(&server, Some(ALICE.1)).await;
    ws_subscribe(&mut ws, "todos", json!({})).await;
    let mut watcher = ws_connect(&server, Some(ALICE.1)).await;
    ws_subscribe(&mut watcher, "todos", json!({})).await;

    // A push over one socket produces events, after commit and each op once, on the user's
    // other sockets; the pushing socket gets its response, not an echo.
    let ops: Vec<Value> = (0..50)
        .map(|n| json!({"collection": "todos", "op": "create", "id": format!("p{n}"), "data": {"n": n}}))
        .collect();
    let (status, pushed) = request(&mut ws, 1, "push", json!({ "ops": ops })).await;
    assert_eq!(status, 200);
    let results = pushed["results"].as_array().unwrap();
    assert_eq!(results.len(), 50);
    let mut events = Vec::new();
    while events.len() < 50 {
        events.push(ws_expect(&mut watcher).await);
    }
    assert_eq!(ws_next(&mut watcher, QUIET).await, None);
    assert_eq!(
        ws_next(&mut ws, QUIET).await,
        None,
        "no echo of its own push"
    );
    for (event, result) in events.iter().zip(results) {
        assert_eq!(event["event"], "item_created", "{event}");
        assert_eq!(event["version"], result["version"]);
        assert_eq!(event["data"], result["record"]);
    }
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..50).map(|n| format!("p{n}")).collect();
    assert_eq!(ids, want);

    // Pipelined requests while another client writes: every response arrives once, matched
    // by id, and every event arrives once, each message whole.
    for id in 10..20u64 {
        let message = if id.is_multiple_of(2) {
            json!({"type": "request", "id": id, "method": "pull", "body": {"collection": "todos", "limit": 10}})
        } else {
            json!({"type": "request", "id": id, "method": "push", "body": {"ops": [
                {"collection": "todos", "op": "update", "id": "p0", "data": {"by": id}}
            ]}})
        };
        ws_send(&mut ws, message).await;
    }
    let writer = tokio::spawn({
        let alice = alice.clone();
        async move {
            for n in 0..20 {
                alice.create("todos", &json!({"id": format!("r{n}")})).await;
            }
        }
    });
    let mut responses = std::collections::BTreeSet::new();
    let mut created = 0;
    while responses.len() < 10 || created < 20 {
        let message = ws_expect(&mut ws).await;
        if message["type"] == "response" {
            assert_eq!(message["status"], 200, "{message}");
            assert!(responses.insert(message["id"].as_u64().unwrap()));
        } else if message["event"] == "item_created" {
            created += 1;
        } else {
            panic!("unexpected {message}");
        }
    }
    writer.await.unwrap();
    assert_eq!(responses, (10..20).collect());
    assert_eq!(ws_next(&mut ws, QUIET).await, None);
    // The watcher saw the REST creates and the socket's five updates.
    let mut seen = Vec::new();
    while let Some(event) = ws_next(&mut watcher, QUIET).await {
        seen.push(event["event"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.iter().filter(|e| *e == "item_created").count(), 20);
    assert_eq!(seen.iter().filter(|e| *e == "item_updated").count(), 5);
    server.shutdown().await.unwrap();
}

/// Holds the database's write lock from outside the server, as another writer would.
enum WriteLock {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

impl WriteLock {
    fn take(db: &TestDb) -> Self {
        if db.is_postgres() {
            let mut conn = PgConnection::establish(&db.url).unwrap();
            conn.batch_execute(
                "BEGIN; SELECT head_version FROM sync_sequence WHERE id = 1 FOR UPDATE;",
            )
            .unwrap();
            Self::Pg(conn)
        } else {
            let path = db.url.strip_prefix("sqlite://").unwrap();
            let mut conn = SqliteConnection::establish(path).unwrap();
            conn.batch_execute("BEGIN IMMEDIATE;").unwrap();
            Self::Sqlite(conn)
        }
    }

    fn release(self) {
        match self {
            Self::Sqlite(mut conn) => conn.batch_execute("COMMIT;").unwrap(),
            Self::Pg(mut conn) => conn.batch_execute("COMMIT;").unwrap(),
        }
    }
}

async fn a_slow_request_does_not_hold_up_the_connection(db: TestDb) {
    let mut limits = Limits::default();
    limits.max_ws_requests_in_flight = 2;
    let server = support::start(db.builder().limits(limits)).await;
    let alice = Client::new(&server, ALICE.1);
    alice.create("todos", &json!({"id": "t0"})).await;
    let mut ws = ws_connect(&server, Some(ALICE.1)).await;

    let lock = tokio::task::block_in_place(|| WriteLock::take(&db));
    let push = |id: u64, record: &str| {
        json!({"type": "request", "id": id, "method": "push", "body": {"ops": [
            {"collection": "todos", "op": "create", "id": record, "data": {}}
        ]}})
    };
    ws_send(&mut ws, push(1, "slow1")).await;
    // While the push waits for the lock, pings, reads and subscriptions are answered.
    ws_send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(ws_expect(&mut ws).await["type"], "pong");
    let (status, body) = request(
        &mut ws,
        2,
        "get",
        json!({"collection": "todos", "id": "t0"}),
    )
    .await;
    assert_eq!((status, body["id"].as_str()), (200, Some("t0")));
    ws_subscribe(&mut ws, "notes", json!({})).await;
    // A second slow request fills the connection's quota; a third is refused at once.
    ws_send(&mut ws, push(3, "slow2")).await;
    let (status, body) = request(&mut ws, 4, "health", Value::Null).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = request(
        &mut ws,
        5,
        "get",
        json!({"collection": "todos", "id": "t0"}),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "too_many_requests");

    tokio::task::block_in_place(|| lock.release());
    let mut ids = Vec::new();
    for _ in 0..2 {
        let answer = ws_expect(&mut ws).await;
        assert_eq!(answer["type"], "response", "{answer}");
        assert_eq!(answer["status"], 200, "{answer}");
        assert_eq!(answer["body"]["results"][0]["status"], "applied");
        ids.push(answer["id"].as_u64().unwrap());
    }
    ids.sort_unstable();
    assert_eq!(ids, [1, 3]);
    assert_eq!(alice.pull_all("todos", "", 100).await.len(), 3);
    server.shutdown().await.unwrap();
}

async fn idempotent_replay_over_the_socket_applies_nothing(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let mut ws = ws_connect(&server, Some(ALICE.1)).await;
    let mut watcher = ws_connect(&server, Some(ALICE.1)).await;
    ws_subscribe(&mut watcher, "todos", json!({})).await;
    let op = json!({"idempotency_key": "k1", "collection": "todos", "op": "create", "id": "i1", "data": {"title": "once"}});

    let (status, first) = request(&mut ws, 1, "push", json!({ "ops": [op.clone()] })).await;
    assert_eq!(status, 200);
    assert_eq!(first["results"][0]["status"], "applied");
    assert_eq!(ws_expect(&mut watcher).await["id"], "i1");

    // Replays over the socket, over a second socket and over REST: the stored result, nothing
    // applied, no event.
    for id in 2..5 {
        let (status, again) = request(&mut ws, id, "push", json!({ "ops": [op.clone()] })).await;
        assert_eq!(status, 200);
        assert_eq!(again, first);
    }
    let mut other = ws_connect(&server, Some(ALICE.1)).await;
    let (_, again) = request(&mut other, 1, "push", json!({ "ops": [op.clone()] })).await;
    assert_eq!(again, first);
    assert_eq!(alice.push(json!([op.clone()])).await.body, first);
    assert_eq!(ws_next(&mut watcher, QUIET).await, None);
    let items = alice.pull_all("todos", "", 100).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["version"], first["results"][0]["version"]);

    // A key reused for another operation is refused, as on REST.
    let (_, reused) = request(
        &mut ws,
        9,
        "push",
        json!({"ops": [{"idempotency_key": "k1", "collection": "todos", "op": "delete", "id": "i1"}]}),
    )
    .await;
    assert_eq!(reused["results"][0]["code"], "idempotency_key_reused");
    server.shutdown().await.unwrap();
}
