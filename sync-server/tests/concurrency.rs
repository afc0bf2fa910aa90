//! Concurrent writers and pullers: versions become visible in commit order, so a puller that
//! follows the cursor sees every committed version exactly once.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{Client, Serve, TestDb, ALICE};

sync_testkit::backend_matrix!(
    async:
    concurrent_pullers_see_every_committed_version_once,
    concurrent_updates_converge_for_every_puller,
);

const WRITERS: usize = 4;
const PULLERS: usize = 3;
const ROUNDS: usize = 15;

/// Follows the cursor until `done` was set before a pull that found no more pages.
async fn puller(client: Client, done: Arc<AtomicBool>, limit: usize) -> Vec<(String, i64, Value)> {
    let mut cursor = "0".to_owned();
    let mut seen = Vec::new();
    loop {
        let finished = done.load(Ordering::SeqCst);
        let reply = client
            .get(&format!("/todos?since={cursor}&limit={limit}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        for item in reply.body["items"].as_array().unwrap() {
            seen.push((
                item["id"].as_str().unwrap().to_owned(),
                item["version"].as_i64().unwrap(),
                item.clone(),
            ));
        }
        cursor = reply.body["next_cursor"].as_str().unwrap().to_owned();
        if !reply.body["has_more"].as_bool().unwrap() {
            if finished {
                return seen;
            }
            tokio::task::yield_now().await;
        }
    }
}

async fn concurrent_pullers_see_every_committed_version_once(db: TestDb) {
    let server = db.start().await;
    let done = Arc::new(AtomicBool::new(false));
    let pullers: Vec<_> = (0..PULLERS)
        .map(|n| {
            tokio::spawn(puller(
                Client::new(&server, ALICE.1),
                done.clone(),
                3 + n * 4,
            ))
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = Client::new(&server, ALICE.1);
            tokio::spawn(async move {
                let mut versions = Vec::new();
                for round in 0..ROUNDS {
                    let reply = client
                        .create("todos", &json!({"id": format!("w{w}-r{round}"), "w": w}))
                        .await;
                    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
                    versions.push(reply.body["version"].as_i64().unwrap());
                    let ops: Vec<Value> = (0..4)
                        .map(|k| {
                            json!({"collection": "todos", "op": "create",
                                        "id": format!("w{w}-r{round}-b{k}"), "data": {"w": w}})
                        })
                        .collect();
                    let reply = client.push(Value::Array(ops)).await;
                    for result in reply.body["results"].as_array().unwrap() {
                        assert_eq!(result["status"], "applied");
                        versions.push(result["version"].as_i64().unwrap());
                    }
                }
                versions
            })
        })
        .collect();
    let mut committed = BTreeSet::new();
    for writer in writers {
        for v in writer.await.unwrap() {
            assert!(committed.insert(v), "version {v} was assigned twice");
        }
    }
    done.store(true, Ordering::SeqCst);
    assert_eq!(committed.len(), WRITERS * ROUNDS * 5);
    for puller in pullers {
        let seen: Vec<i64> = puller.await.unwrap().iter().map(|s| s.1).collect();
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "a version was seen twice or out of order"
        );
        let seen: BTreeSet<i64> = seen.into_iter().collect();
        let missing: Vec<_> = committed.difference(&seen).collect();
        assert!(missing.is_empty(), "puller skipped versions {missing:?}");
        assert_eq!(seen, committed);
    }
    server.shutdown().await.unwrap();
}

async fn concurrent_updates_converge_for_every_puller(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let ids: Vec<String> = (0..8).map(|n| format!("c{n}")).collect();
    for id in &ids {
        alice.create("todos", &json!({"id": id, "count": 0})).await;
    }
    let done = Arc::new(AtomicBool::new(false));
    let pullers: Vec<_> = (0..PULLERS)
        .map(|n| {
            tokio::spawn(puller(
                Client::new(&server, ALICE.1),
                done.clone(),
                2 + n * 3,
            ))
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = Client::new(&server, ALICE.1);
            let ids = ids.clone();
            tokio::spawn(async move {
                let mut applied = 0;
                for round in 0..ROUNDS * 2 {
                    let id = &ids[(w + round) % ids.len()];
                    // Read-modify-write with If-Match; conflicts retry with the current record.
                    loop {
                        let current = client.get(&format!("/todos/{id}")).await.body;
                        let count = current["count"].as_i64().unwrap();
                        let reply = Client::send(
                            client
                                .request(Method::PATCH, &format!("/todos/{id}"))
                                .header("if-match", current["version"].to_string())
                                .json(&json!({"count": count + 1})),
                        )
                        .await;
                        if reply.status == StatusCode::OK {
                            applied += 1;
                            break;
                        }
                        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
                    }
                }
                applied
            })
        })
        .collect();
    let mut total = 0;
    for writer in writers {
        total += writer.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    // No update was lost: the counters add up.
    let finals: HashMap<String, Value> = alice
        .pull_all("todos", "", 100)
        .await
        .into_iter()
        .map(|item| (item["id"].as_str().unwrap().to_owned(), item))
        .collect();
    let sum: i64 = finals.values().map(|v| v["count"].as_i64().unwrap()).sum();
    assert_eq!(sum, total);
    for puller in pullers {
        let seen = puller.await.unwrap();
        let versions: Vec<i64> = seen.iter().map(|s| s.1).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
        let mut last: HashMap<String, Value> = HashMap::new();
        for (id, _, item) in seen {
            last.insert(id, item);
        }
        assert_eq!(last, finals, "a puller ended with a different state");
    }
    server.shutdown().await.unwrap();
}
