//! Hostile and broken peers (issue 13, server points): each test reproduces an attack against a
//! real server on 127.0.0.1 over real sockets and asserts the limit that now bounds it.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{ws_connect, ws_next, ws_send, ws_subscribe, Client, Serve, TestDb, ALICE};
use tokio_tungstenite::tungstenite::Message;

sync_testkit::backend_matrix!(
    async:
    a_push_answer_stays_within_its_byte_budget,
    a_websocket_that_stops_reading_is_dropped_not_buffered,
    subscription_channels_and_parameters_are_bounded,
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

/// Point 2: a subscriber that stops reading used to pin every event in the hub (up to 16,384)
/// while its loop blocked in `send`. Now its queue is bounded (`max_ws_queue_bytes`, 4 MiB by
/// default): it is dropped long before it could be sent every event, and the other
/// connections keep getting theirs.
async fn a_websocket_that_stops_reading_is_dropped_not_buffered(db: TestDb) {
    const EVENTS: usize = 800;
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let mut stalled = ws_connect(&server, Some(ALICE.1)).await;
    ws_subscribe(&mut stalled, "todos", json!({})).await;
    let pad = "p".repeat(64 * 1024);
    for batch in 0..(EVENTS / 50) {
        let ops: Vec<Value> = (0..50)
            .map(|n| {
                json!({"collection": "todos", "op": "create", "id": format!("e{batch}-{n}"),
                       "data": {"pad": pad}})
            })
            .collect();
        let reply = alice.push(Value::Array(ops)).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // Now read what the stalled socket was sent: it must end (a close, or the connection
    // dropped) before all events arrive.
    let mut events = 0;
    let mut close_code = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stalled.next()).await {
            Err(_) => panic!("the stalled socket is still open after {events} events"),
            Ok(None | Some(Err(_))) => break,
            Ok(Some(Ok(Message::Close(frame)))) => {
                close_code = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(Some(Ok(Message::Text(_)))) => events += 1,
            Ok(Some(Ok(_))) => {}
        }
    }
    assert!(
        events < EVENTS,
        "the stalled socket was sent all {events} events: it was buffered, not dropped"
    );
    if let Some(code) = close_code {
        assert!(code == 1013 || code == 1008, "close code {code}");
    }
    // The server still serves a fresh subscriber.
    let mut fresh = ws_connect(&server, Some(ALICE.1)).await;
    ws_subscribe(&mut fresh, "todos", json!({})).await;
    alice.create("todos", &json!({"id": "after"})).await;
    let event = ws_next(&mut fresh, Duration::from_secs(10)).await.unwrap();
    assert_eq!(event["id"], "after");
    server.shutdown().await.unwrap();
}

/// Point 3: channel names and subscription parameters are bounded
/// (`max_collection_len` 128 bytes, `max_subscription_parameters` 16,
/// `max_subscription_bytes` 4 KiB); past them the socket gets an error and stays open.
async fn subscription_channels_and_parameters_are_bounded(db: TestDb) {
    let server = db.start().await;
    let mut ws = ws_connect(&server, Some(ALICE.1)).await;
    let subscribe = |channel: String, parameters: Value| {
        json!({"type": "subscription", "data": {"action": "subscribe", "channel": channel,
               "parameters": parameters}})
    };
    let cases = [
        ("a long channel", subscribe("c".repeat(10_000), json!({}))),
        (
            "a huge parameter",
            subscribe("todos".into(), json!({"p": "v".repeat(1 << 20)})),
        ),
        (
            "too many parameters",
            subscribe(
                "todos".into(),
                Value::Object((0..100).map(|n| (format!("f{n}"), json!(n))).collect()),
            ),
        ),
    ];
    for (case, message) in cases {
        ws_send(&mut ws, message).await;
        let reply = ws_next(&mut ws, Duration::from_secs(10)).await.unwrap();
        let shown: String = reply.to_string().chars().take(200).collect();
        assert_eq!(reply["type"], "error", "{case}: {shown}");
        assert!(
            reply["message"].as_str().unwrap().contains("limit"),
            "{case}: {shown}"
        );
    }
    // Still open and usable.
    ws_subscribe(&mut ws, "todos", json!({"project": "p1"})).await;
    server.shutdown().await.unwrap();
}
