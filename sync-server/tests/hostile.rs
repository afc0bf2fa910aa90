//! Hostile and broken peers (issue 13, server points): each test reproduces an attack against a
//! real server on 127.0.0.1 over real sockets and asserts the limit that now bounds it.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{Client, Serve, TestDb, ALICE};

sync_testkit::backend_matrix!(
    async:
    a_push_answer_stays_within_its_byte_budget,
);

/// `Limits::max_push_answer_bytes` by default (8 MiB).
const PUSH_ANSWER_BUDGET: usize = 8 * 1024 * 1024;

/// Point 1: 64 stale ops on a 512 KiB record used to answer the record 64 times (32 MiB).
/// The answer stays within `max_push_answer_bytes`; results past it carry the version and
/// `record_omitted: true`, and the client fetches the record.
async fn a_push_answer_stays_within_its_byte_budget(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let blob = "x".repeat(512 * 1024);
    let created = alice
        .create("todos", &json!({"id": "big", "blob": blob}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let version = created.body["version"].as_i64().unwrap();
    let ops: Vec<Value> = (0..64)
        .map(|n| {
            json!({"collection": "todos", "op": "update", "id": "big", "base_version": 0,
                   "data": {"n": n}})
        })
        .collect();
    let response = alice
        .request(Method::POST, "/sync/push")
        .json(&json!({ "ops": ops }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.unwrap();
    // Each result without its record is well under 512 bytes.
    assert!(
        bytes.len() <= PUSH_ANSWER_BUDGET + 64 * 512,
        "a push answer of {} bytes exceeds max_push_answer_bytes ({PUSH_ANSWER_BUDGET})",
        bytes.len()
    );
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 64);
    assert_eq!(
        results[0]["record"]["blob"].as_str().unwrap().len(),
        blob.len()
    );
    let mut omitted = 0;
    for result in results {
        assert_eq!(result["status"], "conflict", "{result}");
        assert_eq!(result["version"], version);
        if result.get("record").is_none() {
            assert_eq!(result["record_omitted"], true, "{result}");
            omitted += 1;
        }
    }
    assert!(omitted > 0, "no record was omitted");
    server.shutdown().await.unwrap();
}
