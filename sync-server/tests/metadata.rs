//! Sync metadata endpoints under bad and hostile input: malformed device ids are refused, a
//! user's devices are bounded, the digest listing pages by id and refuses absurd limits, and a
//! user sees only their own devices and collections.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{Client, Serve, TestDb, ALICE, BOB};

sync_testkit::backend_matrix!(
    async:
    a_malformed_device_id_is_refused_and_records_nothing,
    devices_are_bounded_per_user_and_the_oldest_is_replaced,
    the_digest_pages_by_id_and_refuses_absurd_limits,
    each_user_sees_only_their_own_metadata,
);

async fn get_as(client: &Client, path: &str, device: &str) -> support::Reply {
    Client::send(
        client
            .request(Method::GET, path)
            .header("X-Sync-Device", device),
    )
    .await
}

async fn a_malformed_device_id_is_refused_and_records_nothing(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    for bad in ["has space", "slash/y", &"x".repeat(65), "ünïcode"] {
        let reply = Client::send(
            alice
                .request(Method::GET, "/todos")
                .header("X-Sync-Device", bad),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad:?}: {reply:?}");
        assert_eq!(reply.body["code"], "invalid_device_id");
    }
    let meta = alice.get("/sync/metadata").await;
    assert_eq!(meta.status, StatusCode::OK);
    assert_eq!(meta.body["devices"], json!([]));
    server.shutdown().await.unwrap();
}

async fn devices_are_bounded_per_user_and_the_oldest_is_replaced(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    // 70 made-up devices, one request each: the table keeps 64.
    for n in 0..70 {
        let reply = get_as(&alice, "/todos", &format!("dev-{n:03}")).await;
        assert_eq!(reply.status, StatusCode::OK);
        // Distinct `last_seen` times, so "oldest" is well defined.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let meta = alice.get("/sync/metadata").await;
    let devices = meta.body["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 64, "{meta:?}");
    let ids: Vec<&str> = devices.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"dev-069"));
    assert!(!ids.contains(&"dev-000"), "the oldest device stayed");
    // The newest first; each finished a sync (its pull had nothing more).
    assert_eq!(ids[0], "dev-069");
    assert!(devices
        .iter()
        .all(|d| d["last_successful_sync"].is_string()));
    // Forgetting one: 204, then 404.
    let path = "/sync/metadata/devices/dev-069";
    let reply = Client::send(alice.request(Method::DELETE, path)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = Client::send(alice.request(Method::DELETE, path)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    server.shutdown().await.unwrap();
}

async fn the_digest_pages_by_id_and_refuses_absurd_limits(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let ops: Vec<Value> = (0..25)
        .map(|n| json!({"collection": "todos", "op": "create", "id": format!("t{n:02}"), "data": {"n": n}}))
        .collect();
    alice.push(Value::Array(ops)).await;
    alice
        .push(json!([{"collection": "todos", "op": "delete", "id": "t03", "data": {}}]))
        .await;
    let mut after = String::new();
    let mut seen = Vec::new();
    loop {
        let reply = alice
            .get(&format!("/sync/digest/todos?limit=10&after={after}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        for item in reply.body["items"].as_array().unwrap() {
            seen.push((
                item["id"].as_str().unwrap().to_owned(),
                item["deleted"].as_bool().unwrap(),
            ));
        }
        match reply.body["next_after"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(
        seen.contains(&("t03".to_owned(), true)),
        "tombstones are listed"
    );
    for bad in ["limit=0", "limit=10001", "limit=-1", "limit=many"] {
        let reply = alice.get(&format!("/sync/digest/todos?{bad}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}: {reply:?}");
    }
    let reply = alice.get("/sync/digest/ws").await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "a reserved name: {reply:?}"
    );
    server.shutdown().await.unwrap();
}

async fn each_user_sees_only_their_own_metadata(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let bob = Client::new(&server, BOB.1);
    get_as(&alice, "/todos", "alice-phone").await;
    alice.create("todos", &json!({"id": "a1"})).await;
    get_as(&bob, "/notes", "bob-laptop").await;
    let meta = bob.get("/sync/metadata").await;
    assert_eq!(meta.body["user"], "bob");
    let ids: Vec<&str> = meta.body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["bob-laptop"]);
    assert_eq!(meta.body["collections"], json!({}));
    // Bob cannot forget alice's device, nor list her records.
    let reply =
        Client::send(bob.request(Method::DELETE, "/sync/metadata/devices/alice-phone")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = bob.get("/sync/digest/todos").await;
    assert_eq!(reply.body["items"], json!([]));
    let meta = alice.get("/sync/metadata").await;
    assert_eq!(meta.body["collections"]["todos"]["records"], 1);
    assert_eq!(meta.body["devices"][0]["id"], "alice-phone");
    server.shutdown().await.unwrap();
}
