//! WebSocket: auth, subscriptions, ping/pong, events after commit to the owner only, and
//! events across two instances on one Postgres database.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{
    ws_connect, ws_expect, ws_next, ws_send, ws_subscribe, Client, Serve, TestDb, ALICE, BOB,
};

sync_testkit::backend_matrix!(
    async:
    events_reach_the_subscribed_owner_after_commit,
    auth_by_message_ping_and_bad_messages,
    other_users_receive_no_events,
    subscription_parameters_filter_events,
    subscription_since_is_a_version_floor_not_a_filter,
    shutdown_closes_websockets_and_stops_serving,
);

const QUIET: Duration = Duration::from_millis(400);

async fn events_reach_the_subscribed_owner_after_commit(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let mut ws = ws_connect(&server, Some(ALICE.1)).await;
    ws_subscribe(&mut ws, "todos", json!({})).await;

    let created = alice
        .create("todos", &json!({"id": "e1", "title": "hi"}))
        .await;
    let event = ws_expect(&mut ws).await;
    assert_eq!(event["event"], "item_created");
    assert_eq!(event["collection"], "todos");
    assert_eq!(event["id"], "e1");
    assert_eq!(event["version"], created.body["version"]);
    assert_eq!(event["data"], created.body);
    // The event was sent after commit: the record is readable.
    assert_eq!(alice.get("/todos/e1").await.status, StatusCode::OK);

    let patched = Client::send(
        alice
            .request(Method::PATCH, "/todos/e1")
            .json(&json!({"title": "ho"})),
    )
    .await;
    let event = ws_expect(&mut ws).await;
    assert_eq!(event["event"], "item_updated");
    assert_eq!(event["data"], patched.body);

    let deleted = Client::send(alice.request(Method::DELETE, "/todos/e1")).await;
    let event = ws_expect(&mut ws).await;
    assert_eq!(event["event"], "item_deleted");
    assert_eq!(event["version"], deleted.body["version"]);
    assert_eq!(event["data"]["deleted"], true);

    // Push ops produce events in order; rejected and conflicting ops produce none.
    alice
        .push(json!([
            {"collection": "todos", "op": "create", "id": "b1", "data": {}},
            {"collection": "todos", "op": "update", "id": "nope", "data": {}},
            {"collection": "todos", "op": "create", "id": "b2", "data": {}},
        ]))
        .await;
    assert_eq!(ws_expect(&mut ws).await["id"], "b1");
    assert_eq!(ws_expect(&mut ws).await["id"], "b2");
    // Other collections are not subscribed.
    alice.create("notes", &json!({"id": "n1"})).await;
    assert_eq!(ws_next(&mut ws, QUIET).await, None);

    ws_send(
        &mut ws,
        json!({"type": "subscription", "data": {"action": "unsubscribe", "channel": "todos"}}),
    )
    .await;
    assert_eq!(ws_expect(&mut ws).await["type"], "unsubscribed");
    alice.create("todos", &json!({"id": "after"})).await;
    assert_eq!(ws_next(&mut ws, QUIET).await, None);
    server.shutdown().await.unwrap();
}

async fn auth_by_message_ping_and_bad_messages(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let mut ws = ws_connect(&server, None).await;

    ws_send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(ws_expect(&mut ws).await, json!({"type": "pong"}));

    // Subscribing before auth is refused without closing.
    ws_send(
        &mut ws,
        json!({"type": "subscription", "data": {"action": "subscribe", "channel": "todos"}}),
    )
    .await;
    let refused = ws_expect(&mut ws).await;
    assert_eq!(refused["type"], "error");

    // A failed auth is answered and closes the socket (issue 13 point 7; the test of the
    // close is `hostile.rs::a_failed_websocket_auth_closes_the_socket`), so a new one
    // authenticates.
    let mut failed = ws_connect(&server, None).await;
    ws_send(&mut failed, json!({"type": "auth", "token": "wrong"})).await;
    assert_eq!(ws_expect(&mut failed).await["type"], "error");

    ws_send(&mut ws, json!({"type": "auth", "token": ALICE.1})).await;
    assert_eq!(
        ws_expect(&mut ws).await,
        json!({"type": "auth_ok", "user": "alice"})
    );

    for bad in ["not json", "{\"type\":\"dance\"}", "{\"no_type\":1}"] {
        ws.send_text(bad).await;
        let reply = ws_expect(&mut ws).await;
        assert_eq!(reply["type"], "error", "{bad}");
        assert!(!reply["message"].as_str().unwrap().is_empty());
    }
    // Still open and working.
    ws_subscribe(&mut ws, "todos", json!({})).await;
    alice.create("todos", &json!({"id": "m1"})).await;
    assert_eq!(ws_expect(&mut ws).await["id"], "m1");
    ws_send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(ws_expect(&mut ws).await["type"], "pong");

    // A bad Authorization header is refused before the upgrade.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            server.ws_url(),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

trait SendText {
    async fn send_text(&mut self, text: &str);
}

impl SendText for support::Ws {
    async fn send_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
    }
}

async fn other_users_receive_no_events(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let mut alice_ws = ws_connect(&server, Some(ALICE.1)).await;
    let mut bob_ws = ws_connect(&server, None).await;
    ws_send(&mut bob_ws, json!({"type": "auth", "token": BOB.1})).await;
    assert_eq!(ws_expect(&mut bob_ws).await["type"], "auth_ok");
    ws_subscribe(&mut alice_ws, "todos", json!({})).await;
    ws_subscribe(&mut bob_ws, "todos", json!({})).await;

    alice.create("todos", &json!({"id": "private"})).await;
    alice
        .push(json!([{"collection": "todos", "op": "delete", "id": "private"}]))
        .await;
    assert_eq!(ws_expect(&mut alice_ws).await["event"], "item_created");
    assert_eq!(ws_expect(&mut alice_ws).await["event"], "item_deleted");
    assert_eq!(ws_next(&mut bob_ws, QUIET).await, None);
    server.shutdown().await.unwrap();
}

async fn subscription_parameters_filter_events(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let mut ws = ws_connect(&server, Some(ALICE.1)).await;
    ws_subscribe(&mut ws, "todos", json!({"project": "p1"})).await;
    alice
        .create("todos", &json!({"id": "a", "project": "p2"}))
        .await;
    alice
        .create("todos", &json!({"id": "b", "project": "p1"}))
        .await;
    let event = ws_expect(&mut ws).await;
    assert_eq!(event["id"], "b");
    // Re-subscribing replaces the filter.
    ws_subscribe(&mut ws, "todos", json!({"priority": 3})).await;
    alice
        .create("todos", &json!({"id": "c", "priority": 2}))
        .await;
    alice
        .create("todos", &json!({"id": "d", "priority": 3}))
        .await;
    assert_eq!(ws_expect(&mut ws).await["id"], "d");
    assert_eq!(ws_next(&mut ws, QUIET).await, None);
    server.shutdown().await.unwrap();
}

/// `since` is a version (the pull cursor): only changes after it are sent. It used to be read as
/// an equality filter on a field `since`, which no record has, so nothing was ever sent.
async fn subscription_since_is_a_version_floor_not_a_filter(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let mut ws = ws_connect(&server, Some(ALICE.1)).await;
    let old = alice
        .create("todos", &json!({"id": "old", "status": "open"}))
        .await;
    let cursor = old.body["version"].as_i64().unwrap();
    // The cursor as text (what a pull answers) or as a number, beside equality filters.
    ws_subscribe(
        &mut ws,
        "todos",
        json!({"since": cursor.to_string(), "status": "open"}),
    )
    .await;
    alice
        .create("todos", &json!({"id": "closed", "status": "closed"}))
        .await;
    alice
        .create("todos", &json!({"id": "new", "status": "open"}))
        .await;
    let event = ws_expect(&mut ws).await;
    assert_eq!(event["id"], "new", "{event}");
    assert_eq!(ws_next(&mut ws, QUIET).await, None);

    // A floor above every version sent so far holds back the changes below it.
    let far = cursor + 1_000;
    ws_subscribe(&mut ws, "todos", json!({"since": far})).await;
    alice.create("todos", &json!({"id": "held"})).await;
    assert_eq!(ws_next(&mut ws, QUIET).await, None);

    // Anything but a version is refused, and the socket stays open.
    for bad in [json!("yesterday"), json!(1.5), json!(true)] {
        ws_send(
            &mut ws,
            json!({"type": "subscription", "data": {"action": "subscribe", "channel": "todos", "parameters": {"since": bad}}}),
        )
        .await;
        let answer = ws_expect(&mut ws).await;
        assert_eq!(answer["type"], "error", "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("since"),
            "{answer}"
        );
    }
    // `null` is no floor.
    ws_subscribe(&mut ws, "todos", json!({"since": null})).await;
    alice.create("todos", &json!({"id": "after"})).await;
    assert_eq!(ws_expect(&mut ws).await["id"], "after");
    server.shutdown().await.unwrap();
}

async fn shutdown_closes_websockets_and_stops_serving(db: TestDb) {
    let server = db.start().await;
    let addr = server.local_addr();
    let mut ws = ws_connect(&server, Some(ALICE.1)).await;
    ws_subscribe(&mut ws, "todos", json!({})).await;
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown finishes with a WebSocket open")
        .unwrap();
    assert_eq!(ws_next(&mut ws, Duration::from_secs(5)).await, None);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Two instances on one Postgres database: a write through one reaches a WebSocket subscriber
/// of the other, including a record too large for one NOTIFY payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_events_cross_instances() {
    let Some(db) = TestDb::postgres("postgres_events_cross_instances") else {
        return;
    };
    let one = db.start().await;
    let two = db.start().await;
    let mut ws = ws_connect(&two, Some(ALICE.1)).await;
    ws_subscribe(&mut ws, "todos", json!({})).await;
    let mut bob_ws = ws_connect(&two, Some(BOB.1)).await;
    ws_subscribe(&mut bob_ws, "todos", json!({})).await;

    let alice_one = Client::new(&one, ALICE.1);
    let created = alice_one
        .create("todos", &json!({"id": "x1", "title": "from one"}))
        .await;
    let event = ws_expect(&mut ws).await;
    assert_eq!(event["event"], "item_created");
    assert_eq!(event["data"], created.body);

    let big = "z".repeat(20_000);
    let updated = Client::send(
        alice_one
            .request(Method::PATCH, "/todos/x1")
            .json(&json!({"blob": big})),
    )
    .await;
    let event = ws_expect(&mut ws).await;
    assert_eq!(event["event"], "item_updated");
    assert_eq!(event["version"], updated.body["version"]);
    assert_eq!(event["data"]["blob"].as_str().unwrap().len(), 20_000);

    let ops: Vec<_> = (0..300)
        .map(|n| json!({"collection": "todos", "op": "create", "id": format!("b{n}"), "data": {"n": n}}))
        .collect();
    alice_one.push(serde_json::Value::Array(ops)).await;
    for n in 0..300 {
        let event = ws_expect(&mut ws).await;
        assert_eq!(event["id"], format!("b{n}"));
    }
    // Instance two's own writes are delivered once, not twice.
    Client::new(&two, ALICE.1)
        .create("todos", &json!({"id": "local"}))
        .await;
    assert_eq!(ws_expect(&mut ws).await["id"], "local");
    assert_eq!(ws_next(&mut ws, QUIET).await, None);
    assert_eq!(ws_next(&mut bob_ws, QUIET).await, None);

    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

/// The listening connection of an instance dies; the instance reconnects and still delivers
/// the change committed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_listener_reconnects_without_losing_events() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    let Some(db) = TestDb::postgres("postgres_listener_reconnects_without_losing_events") else {
        return;
    };
    let one = db.start().await;
    let two = db.start().await;
    let mut ws = ws_connect(&two, Some(ALICE.1)).await;
    ws_subscribe(&mut ws, "todos", json!({})).await;
    let alice_one = Client::new(&one, ALICE.1);
    alice_one.create("todos", &json!({"id": "before"})).await;
    assert_eq!(ws_expect(&mut ws).await["id"], "before");

    // Kill every listening session of this schema (both instances').
    let schema = db.url.rsplit("search_path%3D").next().unwrap().to_owned();
    let base = std::env::var(sync_testkit::POSTGRES_URL_ENV).unwrap();
    let mut admin = diesel::PgConnection::establish(&base).unwrap();
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = left('sync-listener-sync_events_{schema}', 63)"
        ))
        .unwrap();
    let created = alice_one.create("todos", &json!({"id": "during"})).await;
    let event = ws_expect(&mut ws).await;
    assert_eq!(event["id"], "during");
    assert_eq!(event["version"], created.body["version"]);
    // Later changes flow through the new listening session.
    alice_one.create("todos", &json!({"id": "after"})).await;
    let mut next = ws_expect(&mut ws).await;
    // The catch-up may repeat an event; clients ignore stale versions.
    while next["id"] == "during" {
        next = ws_expect(&mut ws).await;
    }
    assert_eq!(next["id"], "after");
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

/// Notifications on the instances' channel that arrive on `conn` within `wait`.
fn notifications(conn: &mut diesel::PgConnection, wait: Duration) -> usize {
    let until = std::time::Instant::now() + wait;
    let mut count = 0;
    while std::time::Instant::now() < until {
        for notification in conn.notifications_iter() {
            notification.unwrap();
            count += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    count
}

/// A lone instance sends no NOTIFY (nobody could hear it), and an instance that starts while
/// another one is writing gets every change committed after its subscriber subscribed: the
/// writer decides per transaction, not from a cached view of who listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_notifies_only_while_another_instance_listens() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let Some(db) = TestDb::postgres("postgres_notifies_only_while_another_instance_listens") else {
        return;
    };
    let one = db.start().await;
    // A plain session listening on the channel; it is not an instance's listening session, so
    // writers do not count it, but it hears whatever they send.
    let schema = db.url.rsplit("search_path%3D").next().unwrap().to_owned();
    let mut spy = diesel::PgConnection::establish(&db.url).unwrap();
    spy.batch_execute(&format!("LISTEN \"sync_events_{schema}\""))
        .unwrap();

    let alice_one = Client::new(&one, ALICE.1);
    alice_one.create("todos", &json!({"id": "alone"})).await;
    alice_one
        .push(json!([{"collection": "todos", "op": "create", "id": "alone2", "data": {}}]))
        .await;
    assert_eq!(
        notifications(&mut spy, QUIET),
        0,
        "a lone instance sent a NOTIFY"
    );

    // A writer keeps writing through instance one while instance two starts.
    let written = Arc::new(AtomicUsize::new(0));
    let subscribed_at = Arc::new(AtomicUsize::new(usize::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let client = Client::new(&one, ALICE.1);
        let (written, subscribed_at, stop) = (written.clone(), subscribed_at.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) || n <= subscribed_at.load(Ordering::SeqCst) + 20 {
                let reply = client
                    .create("todos", &json!({"id": format!("w{n}")}))
                    .await;
                assert_eq!(reply.status, StatusCode::CREATED);
                n += 1;
                written.store(n, Ordering::SeqCst);
            }
            n
        })
    };
    while written.load(Ordering::SeqCst) < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let two = db.start().await;
    let mut ws = ws_connect(&two, Some(ALICE.1)).await;
    ws_subscribe(&mut ws, "todos", json!({})).await;
    // Writes up to `written` are done; the next one may be in flight and have committed
    // before the subscription. Every write after it starts (so commits) after it.
    let first = written.load(Ordering::SeqCst) + 1;
    subscribed_at.store(first, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let last = writer.await.unwrap();

    let mut seen = std::collections::HashSet::new();
    while let Some(event) = ws_next(&mut ws, Duration::from_secs(5)).await {
        seen.insert(event["id"].as_str().unwrap().to_owned());
        if (first..last).all(|n| seen.contains(&format!("w{n}"))) {
            break;
        }
    }
    let missing: Vec<usize> = (first..last)
        .filter(|n| !seen.contains(&format!("w{n}")))
        .collect();
    assert!(
        missing.is_empty(),
        "instance two missed writes {missing:?} of w{first}..w{last}"
    );
    assert!(
        notifications(&mut spy, QUIET) > 0,
        "no NOTIFY once another instance listens"
    );

    // Once instance two is gone, instance one stops notifying again.
    two.shutdown().await.unwrap();
    drop(ws);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        notifications(&mut spy, Duration::ZERO);
        alice_one
            .create(
                "todos",
                &json!({"id": format!("late{}", uuid::Uuid::new_v4().simple())}),
            )
            .await;
        if notifications(&mut spy, QUIET) == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "instance one kept notifying nobody"
        );
    }
    one.shutdown().await.unwrap();
}
