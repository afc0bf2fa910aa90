//! Every limit answers with a clear JSON error and applies nothing.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{Client, Serve, TestDb, ALICE};

sync_testkit::backend_matrix!(
    async:
    oversized_body_is_413,
    oversized_batch_is_rejected_whole,
    long_ids_are_rejected,
    non_object_data_is_400,
    malformed_json_is_400_with_the_parse_error,
    unknown_op_is_rejected,
    missing_or_bad_token_is_401,
);

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["code"], code, "{body}");
    assert!(
        !body["error"].as_str().unwrap_or_default().is_empty(),
        "{body}"
    );
}

async fn assert_nothing_stored(client: &Client) {
    for collection in ["todos", "notes"] {
        assert!(
            client.pull_all(collection, "", 100).await.is_empty(),
            "something was stored in {collection}"
        );
    }
}

async fn oversized_body_is_413(db: TestDb) {
    let server = support::start(db.builder().max_body_bytes(4096)).await;
    let alice = Client::new(&server, ALICE.1);
    let big = json!({"id": "big", "blob": "x".repeat(10_000)});
    let reply = alice.create("todos", &big).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&reply.body, "payload_too_large");
    assert_eq!(reply.body["limit"], 4096);
    let ops: Vec<Value> = (0..100)
        .map(|n| json!({"collection": "todos", "op": "create", "id": format!("n{n}"), "data": {"pad": "y".repeat(50)}}))
        .collect();
    let reply = alice.push(Value::Array(ops)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&reply.body, "payload_too_large");
    // Just under the limit is fine.
    let ok = alice
        .create("notes", &json!({"id": "small", "blob": "x".repeat(1000)}))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    assert!(alice.pull_all("todos", "", 100).await.is_empty());
    server.shutdown().await.unwrap();
}

async fn oversized_batch_is_rejected_whole(db: TestDb) {
    let server = support::start(db.builder().max_batch_ops(10)).await;
    let alice = Client::new(&server, ALICE.1);
    let ops: Vec<Value> = (0..11)
        .map(|n| json!({"collection": "todos", "op": "create", "id": format!("n{n}"), "data": {}}))
        .collect();
    let reply = alice.push(Value::Array(ops.clone())).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&reply.body, "batch_too_large");
    assert_eq!(reply.body["limit"], 10);
    assert_nothing_stored(&alice).await;
    let reply = alice.push(Value::Array(ops[..10].to_vec())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(alice.pull_all("todos", "", 100).await.len(), 10);
    server.shutdown().await.unwrap();
}

async fn long_ids_are_rejected(db: TestDb) {
    let server = support::start(db.builder().max_id_len(16)).await;
    let alice = Client::new(&server, ALICE.1);
    let long = "x".repeat(17);
    let reply = alice.create("todos", &json!({"id": long})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_error(&reply.body, "id_too_long");
    assert_eq!(reply.body["limit"], 16);
    let reply = alice.get(&format!("/todos/{long}")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = alice
        .push(json!([{"collection": "todos", "op": "create", "id": long, "data": {}}]))
        .await;
    assert_eq!(reply.body["results"][0]["code"], "id_too_long");
    let reply = alice.create("todos", &json!({"id": 42})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_error(&reply.body, "invalid_id");
    assert_nothing_stored(&alice).await;
    assert_eq!(
        alice
            .create("todos", &json!({"id": "x".repeat(16)}))
            .await
            .status,
        StatusCode::CREATED
    );
    server.shutdown().await.unwrap();
}

async fn non_object_data_is_400(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    for body in [json!([1, 2]), json!("text"), json!(3), json!(null)] {
        let reply = alice.create("todos", &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_error(&reply.body, "invalid_data");
    }
    alice.create("notes", &json!({"id": "n"})).await;
    let reply = Client::send(alice.request(Method::PATCH, "/notes/n").json(&json!(["a"]))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_error(&reply.body, "invalid_data");
    let reply = alice
        .push(json!([{"collection": "todos", "op": "create", "id": "t", "data": "nope"}]))
        .await;
    assert_eq!(reply.body["results"][0]["code"], "invalid_data");
    assert!(alice.pull_all("todos", "", 100).await.is_empty());
    server.shutdown().await.unwrap();
}

async fn malformed_json_is_400_with_the_parse_error(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let bodies = ["{\"id\": \"a\",", "not json", "{\"ops\": [}"];
    for (path, body) in [
        ("/todos", bodies[0]),
        ("/todos", bodies[1]),
        ("/sync/push", bodies[2]),
    ] {
        let reply = Client::send(
            alice
                .request(Method::POST, path)
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_error(&reply.body, "malformed_json");
        let message = reply.body["error"].as_str().unwrap();
        assert!(message.contains("line 1 column"), "{message}");
    }
    let reply = alice.post("/sync/push", &json!({"operations": []})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_error(&reply.body, "invalid_request");
    assert_nothing_stored(&alice).await;
    server.shutdown().await.unwrap();
}

async fn unknown_op_is_rejected(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let reply = alice
        .push(json!([
            {"collection": "todos", "op": "upsert", "id": "a", "data": {}},
            {"collection": "todos", "id": "b", "data": {}},
        ]))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let results = &reply.body["results"];
    assert_eq!(results[0]["status"], "rejected");
    assert_eq!(results[0]["code"], "unknown_op");
    assert!(results[0]["error"].as_str().unwrap().contains("upsert"));
    assert_eq!(results[1]["code"], "invalid_op");
    assert_nothing_stored(&alice).await;
    server.shutdown().await.unwrap();
}

async fn missing_or_bad_token_is_401(db: TestDb) {
    let server = db.start().await;
    let anonymous = Client::anonymous(&server);
    let bad = Client::new(&server, "wrong-token");
    for client in [&anonymous, &bad] {
        for (method, path) in [
            (Method::GET, "/todos"),
            (Method::GET, "/todos/a"),
            (Method::POST, "/todos"),
            (Method::PATCH, "/todos/a"),
            (Method::PUT, "/todos/a"),
            (Method::DELETE, "/todos/a"),
            (Method::POST, "/sync/push"),
        ] {
            let reply = Client::send(
                client
                    .request(method.clone(), path)
                    .json(&json!({"id": "a", "ops": [{"collection": "todos", "op": "create", "id": "a", "data": {}}]})),
            )
            .await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_error(&reply.body, "unauthorized");
        }
    }
    let basic = Client::send(
        anonymous
            .request(Method::GET, "/todos")
            .header("authorization", "Basic YWxpY2U6eA=="),
    )
    .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
    assert_nothing_stored(&Client::new(&server, ALICE.1)).await;
    server.shutdown().await.unwrap();
}
