//! End-to-end tests of realtime updates over WebSocket against a real
//! sync-server on loopback. Each names the failure of the replaced packages it
//! guards against.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use offline_sync_kit::prelude::*;
use offline_sync_kit::{ConflictStrategy, SyncEventType, WebSocketConfig};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

fn ws_url(http: &str) -> String {
    format!("{}/ws", http.replacen("http://", "ws://", 1))
}

async fn realtime_client(url: &str, db: &ClientDb, config: WebSocketConfig) -> SyncManager {
    let sync = client_builder(url, db, ALICE.1)
        .await
        .model::<Todo>()
        .websocket(config)
        .build()
        .await
        .unwrap();
    sync.realtime().unwrap().connect().unwrap();
    eventually(WAIT, "WebSocket connected", || async {
        sync.realtime().unwrap().is_connected()
    })
    .await;
    sync
}

/// Guards against: realtime events that never reach local storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_on_a_reaches_b_store_without_sync() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    let b = realtime_client(
        &server.url(),
        &db_b,
        WebSocketConfig::new(ws_url(&server.url())),
    )
    .await;
    let mut events = b.events();
    // Give the subscription a moment to be registered on the server.
    tokio::time::sleep(Duration::from_millis(100)).await;

    a.save(&todo("rt1", "live")).await.unwrap();
    next_event(&mut events, SyncEventType::ModelAdded, Some("rt1")).await;
    let stored = b
        .store()
        .get(Todo::SCHEMA, "rt1")
        .unwrap()
        .expect("in B's store");
    assert_eq!(stored.data["title"], "live");
    assert!(stored.meta.synced);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: no resubscription after a reconnect, and changes made while
/// disconnected being lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_resubscribes_and_repairs_the_gap() {
    let mut server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    let mut config = WebSocketConfig::new(ws_url(&server.url()));
    config.reconnect_delay = Duration::from_millis(50);
    config.max_reconnect_delay = Duration::from_millis(200);
    let b = realtime_client(&server.url(), &db_b, config).await;
    let mut events = b.events();
    let counter = tokio::spawn(async move {
        let mut added: HashMap<String, usize> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
            // Added or updated: a record applied twice would show up as a second event.
            if matches!(
                event.kind(),
                SyncEventType::ModelAdded | SyncEventType::ModelUpdated
            ) {
                *added
                    .entry(event.id().unwrap_or_default().to_owned())
                    .or_default() += 1;
            }
        }
        added
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.save(&todo("before", "before the outage")).await.unwrap();
    eventually(WAIT, "B has the first record", || async {
        b.store().get(Todo::SCHEMA, "before").unwrap().is_some()
    })
    .await;

    server.stop().await;
    eventually(WAIT, "B notices", || async {
        !b.realtime().unwrap().is_connected()
    })
    .await;
    for i in 0..3 {
        a.save(&todo(&format!("during-{i}"), "written during the outage"))
            .await
            .unwrap();
    }
    server.restart().await;
    eventually(WAIT, "B reconnects", || async {
        b.realtime().unwrap().is_connected()
    })
    .await;
    eventually(
        WAIT,
        "records written during the outage reach B",
        || async {
            (0..3).all(|i| {
                b.store()
                    .get(Todo::SCHEMA, &format!("during-{i}"))
                    .unwrap()
                    .is_some()
            })
        },
    )
    .await;
    // A change after the reconnect arrives live, so the subscription was renewed.
    a.save(&todo("after", "after the reconnect")).await.unwrap();
    eventually(WAIT, "live again", || async {
        b.store().get(Todo::SCHEMA, "after").unwrap().is_some()
    })
    .await;

    let added = counter.await.unwrap();
    for id in ["before", "during-0", "during-1", "during-2", "after"] {
        assert_eq!(
            added.get(id).copied().unwrap_or(0),
            1,
            "exactly one model event (ModelAdded, no ModelUpdated) for {id}: {added:?}"
        );
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: a dead connection that looks open forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_peer_is_detected_by_the_pong_timeout() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let mut config = WebSocketConfig::new(ws_url(&proxy.url()));
    config.ping_interval = Duration::from_millis(200);
    config.pong_timeout = Duration::from_millis(300);
    config.reconnect_delay = Duration::from_secs(30);
    let b = realtime_client(&server.url(), &db, config).await;
    let mut events = b.events();
    proxy.stall();
    let stalled_at = Instant::now();
    next_event(&mut events, SyncEventType::ConnectionClosed, None).await;
    let detected_after = stalled_at.elapsed();
    // ping_interval + pong_timeout, plus scheduling slack.
    assert!(
        detected_after <= Duration::from_millis(200 + 300 + 400),
        "took {detected_after:?}"
    );
    assert!(!b.realtime().unwrap().is_connected());
    b.shutdown().await.unwrap();
}

/// Guards against: realtime updates overwriting unsynced local edits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_update_with_pending_edit_goes_through_conflict_resolution() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    a.save(&todo("cf", "original")).await.unwrap();
    a.sync_all().await.unwrap();

    let mut options = fast_options();
    options.auto_sync = false;
    options.conflict_strategy = ConflictStrategy::MergeFields;
    let b = client_builder(&server.url(), &db_b, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .websocket(WebSocketConfig::new(ws_url(&server.url())))
        .build()
        .await
        .unwrap();
    b.sync_all().await.unwrap();
    b.realtime().unwrap().connect().unwrap();
    eventually(WAIT, "connected", || async {
        b.realtime().unwrap().is_connected()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut events = b.events();

    let mut local = b.get::<Todo>("cf").await.unwrap().unwrap();
    local.is_completed = true;
    b.save(&local).await.unwrap();

    let mut remote = a.get::<Todo>("cf").await.unwrap().unwrap();
    remote.priority = 7;
    a.save(&remote).await.unwrap();

    next_event(&mut events, SyncEventType::ConflictDetected, Some("cf")).await;
    next_event(&mut events, SyncEventType::ConflictResolved, Some("cf")).await;
    let merged = b.get::<Todo>("cf").await.unwrap().unwrap();
    assert!(merged.is_completed, "the local edit survived");
    assert_eq!(merged.priority, 7, "the remote edit was merged in");
    assert_eq!(
        b.status().borrow().pending_changes,
        1,
        "the local edit is still queued"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: reconnecting after the application asked to close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_websocket_never_reconnects() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let mut config = WebSocketConfig::new(ws_url(&proxy.url()));
    config.reconnect_delay = Duration::from_millis(20);
    let b = realtime_client(&server.url(), &db, config).await;
    let mut events = b.events();
    b.realtime().unwrap().close();
    next_event(&mut events, SyncEventType::ConnectionClosed, None).await;
    let connections = proxy.connections.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst),
        connections
    );
    assert!(!b.realtime().unwrap().is_connected());
    while let Ok(event) = events.try_recv() {
        assert_ne!(event.kind(), SyncEventType::Reconnecting);
    }
    b.shutdown().await.unwrap();
}

/// Guards against: a malformed frame crashing the client or corrupting the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_are_skipped_and_the_store_is_untouched() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let frames = [
            Message::text("not json {"),
            Message::binary(vec![0u8, 159, 146, 150]),
            Message::text("[1,2,3]"),
            Message::text(r#"{"event":"item_created"}"#),
            Message::text(
                r#"{"event":"item_created","collection":"todos","id":"x","version":1,"data":"nope"}"#,
            ),
            Message::text(
                r#"{"event":"item_created","collection":"unknown","id":"x","version":1,"data":{}}"#,
            ),
            Message::text(
                r#"{"event":"item_created","collection":"todos","id":"bad","version":"v","data":{"id":"bad"}}"#,
            ),
            Message::text(
                r#"{"event":"item_created","collection":"todos","id":"bad2","version":2,"data":{"id":"bad2","title":5}}"#,
            ),
            Message::text(r#"{"event":"party_started","collection":"todos"}"#),
            Message::text(r#"{"type":"mystery"}"#),
            Message::text(
                r#"{"event":"item_created","collection":"todos","id":"good","version":3,"data":{"id":"good","title":"ok","isCompleted":false,"priority":1,"tags":[],"due":null}}"#,
            ),
        ];
        for frame in frames {
            ws.send(frame).await.unwrap();
        }
        // Keep the connection open for a while.
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    let db = ClientDb::new();
    // HTTP goes to a closed port: the catch-up pull after connecting fails at
    // once instead of waiting on this WebSocket-only fake server.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let sync = SyncManager::builder()
        .base_url(format!("http://{closed}"))
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .options(fast_options())
        .websocket(WebSocketConfig::new(format!("ws://{addr}/ws")))
        .build()
        .await
        .unwrap();
    let mystery = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let m2 = mystery.clone();
    sync.realtime().unwrap().on_message("mystery", move |_| {
        m2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    sync.realtime().unwrap().connect().unwrap();
    eventually(
        WAIT,
        "the valid event after the garbage is applied",
        || async { sync.store().get(Todo::SCHEMA, "good").unwrap().is_some() },
    )
    .await;
    assert!(
        sync.realtime().unwrap().is_connected(),
        "the connection survived"
    );
    assert_eq!(
        sync.all::<Todo>().await.unwrap().len(),
        1,
        "nothing else reached the store"
    );
    assert_eq!(
        mystery.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "unknown types go to handlers"
    );
    sync.shutdown().await.unwrap();
    server.abort();
}

async fn next_set(live: &mut offline_sync_kit::LiveQuery<Todo>) -> Option<Vec<Todo>> {
    tokio::time::timeout(Duration::from_secs(5), live.next())
        .await
        .ok()
        .flatten()
        .map(|r| r.unwrap())
}

/// Live queries update from every source, and only when their result changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_emits_on_local_save_pull_and_realtime_only_for_its_query() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    let b = client_builder(&server.url(), &db_b, ALICE.1)
        .await
        .model::<Todo>()
        .websocket(WebSocketConfig::new(ws_url(&server.url())))
        .build()
        .await
        .unwrap();
    let mut live = b
        .watch(Query::new().filter(Todo::fields().priority.ge(5)))
        .unwrap();
    let first = live.next().await.unwrap().unwrap();
    assert!(first.is_empty());

    // Local save inside the query.
    let mut t = todo("w-local", "local");
    t.priority = 5;
    b.save(&t).await.unwrap();
    assert_eq!(next_set(&mut live).await.unwrap().len(), 1);

    // A change outside the query does not emit.
    b.save(&todo("w-low", "low priority")).await.unwrap();
    let mut t = todo("w-pull", "pulled");
    t.priority = 8;
    a.save(&t).await.unwrap();
    a.sync_all().await.unwrap();
    b.pull::<Todo>().await.unwrap();
    let after_pull = next_set(&mut live).await.unwrap();
    assert_eq!(
        after_pull.len(),
        2,
        "the pull emitted, the low-priority save did not: {after_pull:?}"
    );

    // Realtime.
    b.realtime().unwrap().connect().unwrap();
    eventually(WAIT, "connected", || async {
        b.realtime().unwrap().is_connected()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut t = todo("w-rt", "realtime");
    t.priority = 9;
    a.save(&t).await.unwrap();
    let mut got = next_set(&mut live).await.unwrap();
    while got.len() < 3 {
        got = next_set(&mut live).await.expect("realtime update emitted");
    }
    assert_eq!(got.len(), 3);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// `auth_message` authenticates the socket without any header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_message_authenticates_without_a_header() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    // B has no bearer token at all: only the auth message carries it.
    let b = SyncManager::builder()
        .base_url(server.url())
        .store(store_at(&db_b.path()).await)
        .model::<Todo>()
        .options(fast_options())
        .websocket(WebSocketConfig::new(ws_url(&server.url())).auth_token_message(ALICE.1))
        .build()
        .await
        .unwrap();
    b.realtime().unwrap().connect().unwrap();
    eventually(WAIT, "connected", || async {
        b.realtime().unwrap().is_connected()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.save(&todo("by-auth-message", "x")).await.unwrap();
    eventually(
        WAIT,
        "delivered to the message-authenticated socket",
        || async {
            b.store()
                .get(Todo::SCHEMA, "by-auth-message")
                .unwrap()
                .is_some()
        },
    )
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// `max_reconnect_attempts` bounds the reconnects; then the client gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_stop_after_max_reconnect_attempts() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let db = ClientDb::new();
    let mut config = WebSocketConfig::new(format!("ws://{closed}/ws"));
    config.reconnect_delay = Duration::from_millis(10);
    config.max_reconnect_delay = Duration::from_millis(20);
    config.max_reconnect_attempts = Some(2);
    let sync = SyncManager::builder()
        .base_url(format!("http://{closed}"))
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .options(fast_options())
        .websocket(config)
        .build()
        .await
        .unwrap();
    let mut events = sync.events();
    sync.realtime().unwrap().connect().unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut reconnecting = 0;
    while let Ok(event) = events.try_recv() {
        if event.kind() == SyncEventType::Reconnecting {
            reconnecting += 1;
        }
    }
    assert_eq!(
        reconnecting, 2,
        "exactly max_reconnect_attempts reconnects, then it gives up"
    );
    assert!(!sync.realtime().unwrap().is_connected());
    sync.shutdown().await.unwrap();
}

/// Guards against: realtime options that are accepted and ignored. Against a WebSocket server
/// with its own event names: the configured headers reach the upgrade request, nothing is
/// subscribed until the application asks (`subscribe_all_models = false`), and events named
/// by the server's own scheme are applied through the `SyncEventMapper`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The handshake callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn headers_explicit_subscriptions_and_custom_event_names() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let headers = seen_tx.clone();
        let mut ws =
            tokio_tungstenite::accept_hdr_async(tcp, move |req: &Request, res: Response| {
                for name in ["x-tenant", "authorization"] {
                    let value = req
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    headers.send(format!("header {name}: {value}")).unwrap();
                }
                Ok(res)
            })
            .await
            .unwrap();
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "ping" {
                ws.send(Message::text(r#"{"type":"pong"}"#)).await.unwrap();
                continue;
            }
            seen_tx.send(format!("message {text}")).unwrap();
            if value["type"] == "subscription" && value["data"]["action"] == "subscribe" {
                for frame in [
                    r#"{"event":"todo.new","collection":"todos","id":"c1","version":1,"data":{"id":"c1","title":"from the server","isCompleted":false,"priority":2,"tags":[],"due":null}}"#,
                    r#"{"event":"todo.new","collection":"todos","id":"c2","version":2,"data":{"id":"c2","title":"second","isCompleted":false,"priority":2,"tags":[],"due":null}}"#,
                    r#"{"event":"todo.gone","collection":"todos","id":"c2","version":3}"#,
                ] {
                    ws.send(Message::text(frame)).await.unwrap();
                }
            }
        }
    });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut config = WebSocketConfig::new(format!("ws://{addr}/ws"));
    config.headers.insert("X-Tenant".into(), "t1".into());
    config.subscribe_all_models = false;
    config.event_mapper = offline_sync_kit::SyncEventMapper::new()
        .map("todo.new", SyncEventType::ModelAdded)
        .map("todo.gone", SyncEventType::ModelDeleted);
    let db = ClientDb::new();
    let sync = SyncManager::builder()
        .base_url(format!("http://{closed}"))
        .store(store_at(&db.path()).await)
        .bearer_token("sekret")
        .model::<Todo>()
        .options(fast_options())
        .websocket(config)
        .build()
        .await
        .unwrap();
    sync.realtime().unwrap().connect().unwrap();
    assert_eq!(next_seen(&mut seen_rx).await, "header x-tenant: t1");
    assert_eq!(
        next_seen(&mut seen_rx).await,
        "header authorization: Bearer sekret"
    );
    eventually(WAIT, "connected", || async {
        sync.realtime().unwrap().is_connected()
    })
    .await;
    // Nothing subscribed by itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(seen_rx.try_recv().is_err(), "no message before subscribe");
    assert!(sync.all::<Todo>().await.unwrap().is_empty());

    sync.realtime()
        .unwrap()
        .subscribe("todos", serde_json::Map::new());
    let subscribed = next_seen(&mut seen_rx).await;
    assert!(
        subscribed.contains(r#""action":"subscribe""#)
            && subscribed.contains(r#""channel":"todos""#),
        "{subscribed}"
    );
    eventually(WAIT, "custom-named events applied", || async {
        let all = sync.all::<Todo>().await.unwrap();
        all.len() == 1 && all[0].id == "c1"
    })
    .await;
    assert_eq!(
        sync.get::<Todo>("c1").await.unwrap().unwrap().title,
        "from the server"
    );
    sync.shutdown().await.unwrap();
    server.abort();
}

async fn next_seen(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the server saw something")
        .unwrap()
}

/// Guards against: an auth message sent only on the first connection. B authenticates by
/// message alone; after the server restarts, B's reconnect sends it again, or the server
/// would deliver nothing to the new socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_message_is_sent_again_after_a_reconnect() {
    let mut server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    let mut config = WebSocketConfig::new(ws_url(&server.url())).auth_token_message(ALICE.1);
    config.reconnect_delay = Duration::from_millis(50);
    config.max_reconnect_delay = Duration::from_millis(200);
    let b = SyncManager::builder()
        .base_url(server.url())
        .store(store_at(&db_b.path()).await)
        .model::<Todo>()
        .options(fast_options())
        .websocket(config)
        .build()
        .await
        .unwrap();
    b.realtime().unwrap().connect().unwrap();
    eventually(WAIT, "connected", || async {
        b.realtime().unwrap().is_connected()
    })
    .await;

    let mut events = b.events();
    server.restart().await;
    // The next ConnectionEstablished is the reconnect (B has no HTTP token, so nothing but
    // the re-authenticated socket can bring the record).
    next_event(&mut events, SyncEventType::ConnectionEstablished, None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.save(&todo("after-restart", "x")).await.unwrap();
    eventually(WAIT, "delivered to the re-authenticated socket", || async {
        b.store()
            .get(Todo::SCHEMA, "after-restart")
            .unwrap()
            .is_some()
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: an unbounded realtime queue (300k events -> 588 MB). With
/// `max_queued_events = 4`, a burst of 2,000 events overflows the queue: the backlog is dropped
/// (`RealtimeOverflow`), a catch-up pull fetches what it carried, and every record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_realtime_queue_is_dropped_and_pulled_instead() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let mut options = fast_options();
    options.auto_sync = false;
    options.batch_size = 500;
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    let mut config = WebSocketConfig::new(ws_url(&server.url()));
    config.max_queued_events = 4;
    let b = realtime_client(&server.url(), &db_b, config).await;
    let mut events = b.events();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let todos: Vec<Todo> = (0..2000).map(|i| todo(&format!("burst{i}"), "x")).collect();
    a.save_all(&todos).await.unwrap();
    a.sync_all().await.unwrap();
    let overflow = next_event(&mut events, SyncEventType::RealtimeOverflow, None).await;
    match overflow {
        offline_sync_kit::SyncEvent::RealtimeOverflow { dropped } => assert!(dropped > 0),
        other => panic!("{other:?}"),
    }
    eventually(
        Duration::from_secs(30),
        "all 2,000 records reach b",
        || async { b.count::<Todo>(Query::new()).await.unwrap() == 2000 },
    )
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A port nothing listens on (HTTP for clients whose WebSocket is a stand-in).
fn closed_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A WebSocket server standing in for a backend with a protocol of its own: it records every
/// JSON text message it receives (except those `reply` answers, such as pings), and sends
/// every connection the frames the test hands it.
struct StandIn {
    addr: std::net::SocketAddr,
    seen: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    frames: tokio::sync::broadcast::Sender<String>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// The default protocol's pong.
fn default_pong(message: &serde_json::Value) -> Option<String> {
    (message["type"] == "ping").then(|| r#"{"type":"pong"}"#.to_owned())
}

impl StandIn {
    async fn start(reply: fn(&serde_json::Value) -> Option<String>) -> StandIn {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen) = tokio::sync::mpsc::unbounded_channel();
        let (frames, _) = tokio::sync::broadcast::channel::<String>(64);
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn({
            let frames = frames.clone();
            let connections = connections.clone();
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut out = frames.subscribe();
                    let seen_tx = seen_tx.clone();
                    tokio::spawn(async move {
                        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                            return;
                        };
                        loop {
                            tokio::select! {
                                frame = out.recv() => match frame {
                                    Ok(text) => {
                                        if ws.send(Message::text(text)).await.is_err() {
                                            return;
                                        }
                                    }
                                    Err(_) => return,
                                },
                                incoming = ws.next() => match incoming {
                                    Some(Ok(Message::Text(text))) => {
                                        let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                                            continue;
                                        };
                                        match reply(&value) {
                                            Some(answer) => {
                                                if ws.send(Message::text(answer)).await.is_err() {
                                                    return;
                                                }
                                            }
                                            None => {
                                                let _ = seen_tx.send(value);
                                            }
                                        }
                                    }
                                    Some(Ok(_)) => {}
                                    _ => return,
                                },
                            }
                        }
                    });
                }
            }
        });
        StandIn {
            addr,
            seen,
            frames,
            connections,
            task,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Sends `frame` to every open connection.
    fn send(&self, frame: &str) {
        self.frames.send(frame.to_owned()).unwrap();
    }

    /// The next message the server received.
    async fn next_seen(&mut self) -> serde_json::Value {
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("the stand-in server received a message")
            .unwrap()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Guards against: server events that are not record changes reaching nobody but handlers.
/// `conflict_detected` (a default name) and a name the application maps to a kind become
/// `SyncEvent`s of that kind; no record changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_events_that_are_not_changes_become_sync_events() {
    let mut stand_in = StandIn::start(default_pong).await;
    let mut config = WebSocketConfig::new(stand_in.url());
    config.subscribe_all_models = false;
    // Incoming and outgoing names are separate: the client sends ConflictResolved under a
    // name of its own, and reads the server's under another.
    config.event_mapper = offline_sync_kit::SyncEventMapper::new()
        .map("srv.resolved", SyncEventType::ConflictResolved)
        .map_outgoing(SyncEventType::ConflictResolved, "client.resolved");
    let db = ClientDb::new();
    let sync = SyncManager::builder()
        .base_url(format!("http://{}", closed_port()))
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .options(fast_options())
        .websocket(config)
        .build()
        .await
        .unwrap();
    let mut events = sync.events();
    sync.realtime().unwrap().connect().unwrap();
    eventually(WAIT, "connected", || async {
        sync.realtime().unwrap().is_connected()
    })
    .await;
    stand_in.send(
        r#"{"event":"conflict_detected","collection":"todos","id":"x1","data":{"note":"merged on the server"}}"#,
    );
    stand_in.send(r#"{"event":"srv.resolved","collection":"todos","id":"x2"}"#);
    match next_event(&mut events, SyncEventType::ConflictDetected, Some("x1")).await {
        offline_sync_kit::SyncEvent::ServerEvent {
            name,
            model_type,
            message,
            ..
        } => {
            assert_eq!(name, "conflict_detected");
            assert_eq!(model_type, Some("todo"));
            assert_eq!(message["data"]["note"], "merged on the server");
        }
        other => panic!("{other:?}"),
    }
    match next_event(&mut events, SyncEventType::ConflictResolved, Some("x2")).await {
        offline_sync_kit::SyncEvent::ServerEvent { name, .. } => assert_eq!(name, "srv.resolved"),
        other => panic!("{other:?}"),
    }
    assert!(
        sync.all::<Todo>().await.unwrap().is_empty(),
        "no record changed"
    );

    let realtime = sync.realtime().unwrap();
    assert!(realtime.send_event(
        SyncEventType::ConflictResolved,
        serde_json::json!({"id": "x2"})
    ));
    assert_eq!(
        stand_in.next_seen().await,
        serde_json::json!({"event": "client.resolved", "data": {"id": "x2"}})
    );
    // A kind without an outgoing name is not sent.
    assert!(!realtime.send_event(SyncEventType::Reconnecting, serde_json::Value::Null));
    sync.shutdown().await.unwrap();
}

/// Guards against: an event naming a record without its data being dropped. The client
/// fetches the record by id and applies it through the conflict-aware path: a new record
/// appears, and a record with a pending local edit is merged (MergeFields), not overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_only_event_fetches_the_record_through_the_conflict_path() {
    let server = Server::start().await;
    let stand_in = StandIn::start(default_pong).await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    a.save(&todo("cf", "original")).await.unwrap();
    a.sync_all().await.unwrap();

    let mut options = fast_options();
    options.auto_sync = false;
    options.conflict_strategy = ConflictStrategy::MergeFields;
    // HTTP is the real server; the socket is a stand-in that sends events without data, as
    // some backends do. Nothing is subscribed, so no catch-up pull brings the records.
    let mut config = WebSocketConfig::new(stand_in.url());
    config.subscribe_all_models = false;
    let b = client_builder(&server.url(), &db_b, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .websocket(config)
        .build()
        .await
        .unwrap();
    b.sync_all().await.unwrap();
    b.realtime().unwrap().connect().unwrap();
    eventually(WAIT, "connected", || async {
        b.realtime().unwrap().is_connected()
    })
    .await;
    let mut events = b.events();

    let mut local = b.get::<Todo>("cf").await.unwrap().unwrap();
    local.is_completed = true;
    b.save(&local).await.unwrap();
    let mut remote = a.get::<Todo>("cf").await.unwrap().unwrap();
    remote.priority = 7;
    a.save(&remote).await.unwrap();
    a.save(&todo("new1", "made on A")).await.unwrap();
    a.sync_all().await.unwrap();
    assert_eq!(a.status().borrow().pending_changes, 0);

    stand_in.send(r#"{"event":"item_updated","collection":"todos","id":"cf"}"#);
    stand_in.send(r#"{"event":"item_created","collection":"todos","id":"new1","data":null}"#);
    next_event(&mut events, SyncEventType::ConflictDetected, Some("cf")).await;
    eventually(WAIT, "the id-only events are applied", || async {
        b.get::<Todo>("new1").await.unwrap().is_some()
            && b.get::<Todo>("cf").await.unwrap().unwrap().priority == 7
    })
    .await;
    assert_eq!(
        b.get::<Todo>("new1").await.unwrap().unwrap().title,
        "made on A"
    );
    let merged = b.get::<Todo>("cf").await.unwrap().unwrap();
    assert!(merged.is_completed, "the local edit survived");
    assert_eq!(
        b.status().borrow().pending_changes,
        1,
        "the local edit is still queued"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: subscription parameters that filter everything out (`since` read as an
/// equality filter) and untested subscribe / unsubscribe / send. B subscribes with a version
/// floor and an equality filter, sees only matching changes, unsubscribes, and its own ping
/// sent with `send` is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_with_parameters_unsubscribe_and_send() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    a.save(&todo("old", "before the subscription"))
        .await
        .unwrap();
    a.sync_all().await.unwrap();
    let since = server.record(ALICE.1, "todos", "old").await.unwrap()["version"]
        .as_i64()
        .unwrap();

    let mut config = WebSocketConfig::new(ws_url(&server.url()));
    config.subscribe_all_models = false;
    // No automatic ping during the test: every pong answers the test's own.
    config.ping_interval = Duration::from_secs(600);
    let b = realtime_client(&server.url(), &db_b, config).await;
    let realtime = b.realtime().unwrap();
    let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    for kind in ["subscribed", "unsubscribed", "pong", "error"] {
        let acks = acks.clone();
        realtime.on_message(kind, move |message| {
            let _ = acks.send(message.clone());
        });
    }

    let parameters = match serde_json::json!({"since": since.to_string(), "priority": 5}) {
        serde_json::Value::Object(map) => map,
        _ => unreachable!(),
    };
    realtime.subscribe("todos", parameters);
    let ack = next_ack(&mut acked).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    let mut low = todo("low", "priority 1");
    low.priority = 1;
    a.save(&low).await.unwrap();
    let mut high = todo("high", "priority 5");
    high.priority = 5;
    a.save(&high).await.unwrap();
    a.sync_all().await.unwrap();
    eventually(WAIT, "the matching change arrives", || async {
        b.get::<Todo>("high").await.unwrap().is_some()
    })
    .await;
    assert!(
        b.get::<Todo>("low").await.unwrap().is_none(),
        "filtered by priority"
    );
    assert!(b.get::<Todo>("old").await.unwrap().is_none());

    realtime.unsubscribe("todos");
    assert_eq!(next_ack(&mut acked).await["type"], "unsubscribed");
    assert!(realtime.send(&serde_json::json!({"type": "ping"})));
    assert_eq!(
        next_ack(&mut acked).await["type"],
        "pong",
        "send reached the server"
    );
    let mut unheard = todo("unheard", "after the unsubscribe");
    unheard.priority = 5;
    a.save(&unheard).await.unwrap();
    a.sync_all().await.unwrap();
    // Events of one socket arrive in order: once a later change arrives under a new
    // subscription, the one made while unsubscribed would have arrived before it.
    realtime.subscribe("todos", serde_json::Map::new());
    assert_eq!(next_ack(&mut acked).await["type"], "subscribed");
    a.save(&todo("marker", "after subscribing again"))
        .await
        .unwrap();
    a.sync_all().await.unwrap();
    eventually(WAIT, "live again", || async {
        b.get::<Todo>("marker").await.unwrap().is_some()
    })
    .await;
    assert!(
        b.get::<Todo>("unheard").await.unwrap().is_none(),
        "nothing arrived while unsubscribed"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

async fn next_ack(
    acked: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) -> serde_json::Value {
    tokio::time::timeout(WAIT, acked.recv())
        .await
        .expect("an answer from the server")
        .unwrap()
}

/// The pong of the stand-in protocol of `a_backend_with_its_own_message_format`.
fn hb_ack(message: &serde_json::Value) -> Option<String> {
    (message["op"] == "hb").then(|| r#"{"op":"hb_ack"}"#.to_owned())
}

/// Guards against: message shapes fixed to sync-server's (only event names and the auth
/// message could be set). Against a backend with field names of its own for subscriptions,
/// pings and events, `WebSocketConfig::format` makes the client subscribe and unsubscribe in
/// its shape, stay connected by its pings and pongs, apply its events, and send events in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_with_its_own_message_format() {
    use offline_sync_kit::{MessageFormat, SyncEventMapper};
    use serde_json::json;
    let mut stand_in = StandIn::start(hb_ack).await;
    let mut format = MessageFormat::default();
    format.type_key = "op".into();
    format.ping_type = "hb".into();
    format.pong_type = "hb_ack".into();
    format.subscribe_type = "sub".into();
    format.unsubscribe_type = "unsub".into();
    format.subscription_body_key = None;
    format.action_key = None;
    format.channel_key = "topic".into();
    format.parameters_key = Some("filter".into());
    format.event_key = "kind".into();
    format.collection_key = "table".into();
    format.id_key = "key".into();
    format.version_key = "rev".into();
    format.data_key = "row".into();
    let mut config = WebSocketConfig::new(stand_in.url());
    config.format = format;
    config.event_mapper = SyncEventMapper::new()
        .map("created", SyncEventType::ModelAdded)
        .map("removed", SyncEventType::ModelDeleted)
        .map_outgoing(SyncEventType::SyncCompleted, "client_synced");
    // Pings often, and a short wait for their pongs: pings or pongs of another shape would
    // lose the connection within a second.
    config.ping_interval = Duration::from_millis(100);
    config.pong_timeout = Duration::from_millis(300);
    let db = ClientDb::new();
    let sync = SyncManager::builder()
        .base_url(format!("http://{}", closed_port()))
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .options(fast_options())
        .websocket(config)
        .build()
        .await
        .unwrap();
    let realtime = sync.realtime().unwrap();
    realtime.connect().unwrap();
    // The opening frame subscribes every model in the backend's shape.
    assert_eq!(
        stand_in.next_seen().await,
        json!({"op": "sub", "topic": "todos", "filter": {}})
    );
    eventually(WAIT, "connected", || async { realtime.is_connected() }).await;
    let parameters = match json!({"owner": "me"}) {
        serde_json::Value::Object(map) => map,
        _ => unreachable!(),
    };
    realtime.subscribe("todos", parameters);
    assert_eq!(
        stand_in.next_seen().await,
        json!({"op": "sub", "topic": "todos", "filter": {"owner": "me"}})
    );

    stand_in.send(
        r#"{"kind":"created","table":"todos","key":"f1","rev":1,"row":{"id":"f1","title":"their shape","isCompleted":false,"priority":1,"tags":[],"due":null}}"#,
    );
    stand_in.send(
        r#"{"kind":"created","table":"todos","key":"f2","rev":2,"row":{"title":"id from the envelope","isCompleted":false,"priority":1,"tags":[],"due":null}}"#,
    );
    eventually(WAIT, "both events applied", || async {
        sync.all::<Todo>().await.unwrap().len() == 2
    })
    .await;
    stand_in.send(r#"{"kind":"removed","table":"todos","key":"f2","rev":3}"#);
    eventually(WAIT, "the delete applied", || async {
        let all = sync.all::<Todo>().await.unwrap();
        all.len() == 1 && all[0].id == "f1"
    })
    .await;
    assert_eq!(
        sync.get::<Todo>("f1").await.unwrap().unwrap().title,
        "their shape"
    );

    assert!(realtime.send_event(SyncEventType::SyncCompleted, json!({"pushed": 0})));
    assert_eq!(
        stand_in.next_seen().await,
        json!({"kind": "client_synced", "row": {"pushed": 0}})
    );
    realtime.unsubscribe("todos");
    assert_eq!(
        stand_in.next_seen().await,
        json!({"op": "unsub", "topic": "todos", "filter": {}})
    );
    // Many pings later, still the first connection.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(realtime.is_connected());
    assert_eq!(
        stand_in
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "pongs in the backend's shape kept the connection"
    );
    sync.shutdown().await.unwrap();
}

/// `max_message_bytes`: a message larger than it closes the connection (nothing of it is
/// applied) and the client reconnects; messages within it are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_message_bytes_closes_the_connection() {
    let stand_in = StandIn::start(default_pong).await;
    let mut config = WebSocketConfig::new(stand_in.url());
    config.max_message_bytes = 4 * 1024;
    config.reconnect_delay = Duration::from_millis(20);
    let db = ClientDb::new();
    let sync = SyncManager::builder()
        .base_url(format!("http://{}", closed_port()))
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .options(fast_options())
        .websocket(config)
        .build()
        .await
        .unwrap();
    let realtime = sync.realtime().unwrap();
    realtime.connect().unwrap();
    eventually(WAIT, "connected", || async { realtime.is_connected() }).await;
    let event = |id: &str, title: &str| {
        serde_json::json!({"event": "item_created", "collection": "todos", "id": id, "version": 1,
            "data": {"id": id, "title": title, "isCompleted": false, "priority": 1, "tags": [], "due": null}})
        .to_string()
    };
    stand_in.send(&event("big", &"x".repeat(8 * 1024)));
    eventually(WAIT, "the client reconnected", || async {
        stand_in
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
            == 2
            && realtime.is_connected()
    })
    .await;
    stand_in.send(&event("small", "fits"));
    eventually(WAIT, "the small event applied", || async {
        sync.get::<Todo>("small").await.unwrap().is_some()
    })
    .await;
    assert!(sync.get::<Todo>("big").await.unwrap().is_none());
    sync.shutdown().await.unwrap();
}
