//! End-to-end tests of syncing entirely over one WebSocket: every client here uses only
//! [`WebSocketRemote`] (no HTTP remote, no connectivity of its own, so the socket's state is
//! the manager's connectivity), against a real sync-server on loopback. The engine tests of
//! `tests/engine.rs` that are about being offline and about conflicts, ported to this
//! transport, plus realtime changes arriving through the same socket.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use offline_sync_kit::prelude::*;
use offline_sync_kit::{
    ConflictStrategy, SyncDirection, SyncEventType, SyncOptions, SyncRun, WebSocketConfig,
    WebSocketRemote,
};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

/// A WebSocket remote to `addr` authenticated as `token` by header, reconnecting quickly.
fn ws_remote(addr: std::net::SocketAddr, token: &str) -> WebSocketRemote {
    let mut config = WebSocketConfig::new(format!("ws://{addr}/ws"));
    config.reconnect_delay = Duration::from_millis(50);
    config.max_reconnect_delay = Duration::from_millis(200);
    let mut headers = BTreeMap::new();
    headers.insert("Authorization".to_owned(), format!("Bearer {token}"));
    WebSocketRemote::connect(config, headers, Duration::from_secs(5))
}

/// A client that talks to the server only through `remote`.
async fn ws_client(remote: &WebSocketRemote, db: &ClientDb, options: SyncOptions) -> SyncManager {
    SyncManager::builder()
        .remote(remote.clone())
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap()
}

async fn connected(remote: &WebSocketRemote) {
    eventually(WAIT, "the WebSocket is connected", || async {
        remote.is_connected()
    })
    .await;
}

fn manual_options(strategy: ConflictStrategy) -> SyncOptions {
    let mut options = fast_options();
    options.auto_sync = false;
    options.conflict_strategy = strategy;
    options
}

/// Saved while the server is down: not marked synced, and once the server is back on the
/// same port and database the record arrives exactly once without the application asking
/// (the socket reconnects by its timer; coming back online syncs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_while_server_down_arrives_exactly_once_by_timer() {
    let mut server = Server::start().await;
    let db = ClientDb::new();
    let remote = ws_remote(server.addr, ALICE.1);
    let sync = ws_client(&remote, &db, fast_options()).await;
    connected(&remote).await;
    sync.save(&todo("t0", "before")).await.unwrap();
    eventually(WAIT, "t0 is synced over the socket", || async {
        sync.record_state::<Todo>("t0")
            .await
            .unwrap()
            .meta
            .is_some_and(|m| m.synced)
    })
    .await;

    server.stop().await;
    eventually(WAIT, "the manager sees the socket closed", || async {
        !sync.status().borrow().connected
    })
    .await;
    sync.save(&todo("t1", "milk")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state = sync.record_state::<Todo>("t1").await.unwrap();
    assert!(
        !state.meta.unwrap().synced,
        "not synced while the server is down"
    );
    assert_eq!(sync.status().borrow().pending_changes, 1);
    assert!(sync.failed_ops().await.unwrap().is_empty());

    server.restart().await;
    eventually(WAIT, "the record is synced after the restart", || async {
        sync.record_state::<Todo>("t1")
            .await
            .unwrap()
            .meta
            .is_some_and(|m| m.synced)
    })
    .await;
    let records = server.records(ALICE.1, "todos").await;
    let mut ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["t0", "t1"], "each record exactly once");
    assert_eq!(
        server.record(ALICE.1, "todos", "t1").await.unwrap()["title"],
        "milk"
    );
    assert_eq!(sync.status().borrow().pending_changes, 0);
    sync.shutdown().await.unwrap();
    remote.close();
}

/// Coming online (the socket connects) pushes what was saved offline and pulls what was
/// written meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_to_online_triggers_sync() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    proxy.go_down();
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let remote_a = ws_remote(server.addr, ALICE.1);
    let a = ws_client(&remote_a, &db_a, fast_options()).await;
    let remote_b = ws_remote(proxy.addr, ALICE.1);
    let b = ws_client(&remote_b, &db_b, fast_options()).await;
    let mut events = b.events();
    connected(&remote_a).await;

    b.save(&todo("from-b", "made offline")).await.unwrap();
    a.save(&todo("from-a", "on the server")).await.unwrap();
    a.sync_all().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!remote_b.is_connected());
    assert!(server.record(ALICE.1, "todos", "from-b").await.is_none());
    assert!(b.get::<Todo>("from-a").await.unwrap().is_none());

    proxy.heal();
    next_event(&mut events, SyncEventType::ConnectionEstablished, None).await;
    eventually(WAIT, "b pushed and pulled over the socket", || async {
        server.record(ALICE.1, "todos", "from-b").await.is_some()
            && b.get::<Todo>("from-a").await.unwrap().is_some()
    })
    .await;
    // And a hears of b's record through its own socket.
    eventually(WAIT, "a has b's record", || async {
        a.get::<Todo>("from-b").await.unwrap().is_some()
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    remote_a.close();
    remote_b.close();
}

/// A pulled (or realtime) row with a newer version never overwrites an unsynced local edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_row_never_overwrites_a_pending_edit() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let remote_a = ws_remote(server.addr, ALICE.1);
    let a = ws_client(&remote_a, &db_a, fast_options()).await;
    let remote_b = ws_remote(server.addr, ALICE.1);
    let b = ws_client(
        &remote_b,
        &db_b,
        manual_options(ConflictStrategy::ClientWins),
    )
    .await;
    connected(&remote_a).await;
    connected(&remote_b).await;
    a.save(&todo("c1", "from a")).await.unwrap();
    a.sync_all().await.unwrap();
    b.sync_all().await.unwrap();

    let mut edited = b.get::<Todo>("c1").await.unwrap().unwrap();
    edited.title = "b's unsynced edit".into();
    b.save(&edited).await.unwrap();

    let mut b_events = b.events();
    let mut newer = a.get::<Todo>("c1").await.unwrap().unwrap();
    newer.title = "a's newer title".into();
    a.save(&newer).await.unwrap();
    a.sync_all().await.unwrap();
    // The realtime event of a's write reaches b and goes through conflict resolution.
    next_event(&mut b_events, SyncEventType::ConflictDetected, Some("c1")).await;

    b.synchronize(SyncRun::new(SyncDirection::PullOnly))
        .await
        .unwrap();
    assert_eq!(
        b.get::<Todo>("c1").await.unwrap().unwrap().title,
        "b's unsynced edit"
    );
    assert_eq!(b.status().borrow().pending_changes, 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    remote_a.close();
    remote_b.close();
}

/// Two clients, both over WebSocket, edit the same record; returns a's and b's copies and the
/// server's once they agree.
async fn two_clients_conflict(strategy: ConflictStrategy) -> (Todo, Todo, serde_json::Value) {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let remote_a = ws_remote(server.addr, ALICE.1);
    let a = ws_client(&remote_a, &db_a, manual_options(strategy.clone())).await;
    let remote_b = ws_remote(server.addr, ALICE.1);
    let b = ws_client(&remote_b, &db_b, manual_options(strategy)).await;
    connected(&remote_a).await;
    connected(&remote_b).await;
    a.save(&todo("m1", "original")).await.unwrap();
    a.sync_all().await.unwrap();
    eventually(WAIT, "b has m1", || async {
        b.get::<Todo>("m1").await.unwrap().is_some()
    })
    .await;
    b.sync_all().await.unwrap();

    // a edits title and priority; b edits title (later) and completion.
    let mut ea = a.get::<Todo>("m1").await.unwrap().unwrap();
    ea.title = "title from a".into();
    ea.priority = 5;
    a.save(&ea).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut eb = b.get::<Todo>("m1").await.unwrap().unwrap();
    eb.title = "title from b".into();
    eb.is_completed = true;
    b.save(&eb).await.unwrap();

    let mut b_events = b.events();
    a.sync_all().await.unwrap();
    // b meets a's newer version: through the realtime event or through its push's 409,
    // whichever comes first; either way it is resolved by the strategy.
    b.sync_all().await.unwrap();
    next_event(&mut b_events, SyncEventType::ConflictDetected, Some("m1")).await;
    b.sync_all().await.unwrap();
    a.sync_all().await.unwrap();
    eventually(WAIT, "a, b and the server agree", || async {
        let ra = a.get::<Todo>("m1").await.unwrap().unwrap();
        let rb = b.get::<Todo>("m1").await.unwrap().unwrap();
        let rs = server.record(ALICE.1, "todos", "m1").await.unwrap();
        ra == rb && rs["title"] == ra.title.as_str()
    })
    .await;
    let ra = a.get::<Todo>("m1").await.unwrap().unwrap();
    let rb = b.get::<Todo>("m1").await.unwrap().unwrap();
    let rs = server.record(ALICE.1, "todos", "m1").await.unwrap();
    assert_eq!(b.status().borrow().pending_changes, 0);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    remote_a.close();
    remote_b.close();
    (ra, rb, rs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_server_wins() {
    let (a, b, server) = two_clients_conflict(ConflictStrategy::ServerWins).await;
    assert_eq!(b, a);
    assert_eq!(a.title, "title from a");
    assert_eq!(a.priority, 5);
    assert!(!a.is_completed, "b's edits are dropped");
    assert_eq!(server["title"], "title from a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_client_wins() {
    let (a, b, server) = two_clients_conflict(ConflictStrategy::ClientWins).await;
    assert_eq!(b, a);
    assert_eq!(b.title, "title from b");
    assert!(b.is_completed);
    assert_eq!(b.priority, 1, "the client's whole record wins");
    assert_eq!(server["title"], "title from b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_last_update_wins() {
    let (a, b, server) = two_clients_conflict(ConflictStrategy::LastUpdateWins).await;
    assert_eq!(b, a);
    // b edited after a's local edit but before a's push: the server copy is newer.
    assert_eq!(server["title"], a.title.as_str());
    assert_eq!(a.title, "title from a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_merge_fields_keeps_both_sides() {
    let (a, b, server) = two_clients_conflict(ConflictStrategy::MergeFields).await;
    assert_eq!(b, a);
    assert_eq!(a.priority, 5, "a's field");
    assert!(a.is_completed, "b's field");
    // Both changed the title: the tie-break (last writer; the server's copy is newer) decides.
    assert_eq!(a.title, "title from a");
    assert_eq!(server["priority"], 5);
    assert_eq!(server["isCompleted"], true);
}

#[derive(Debug)]
struct UpperTitle;
impl offline_sync_kit::ConflictResolver for UpperTitle {
    fn resolve(
        &self,
        c: &offline_sync_kit::ConflictContext<'_>,
    ) -> offline_sync_kit::store::Resolution {
        let mut merged = c.remote.data.clone();
        merged.insert("title".into(), serde_json::json!("RESOLVED"));
        offline_sync_kit::store::Resolution::Merged(merged)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_custom_resolver() {
    let (a, b, server) =
        two_clients_conflict(ConflictStrategy::Custom(std::sync::Arc::new(UpperTitle))).await;
    assert_eq!(b, a);
    assert_eq!(a.title, "RESOLVED");
    assert_eq!(server["title"], "RESOLVED");
}

/// A change made by client A reaches client B through B's socket (the same one B syncs
/// over): in B's store and announced by ModelAdded / ModelUpdated / ModelDeleted, without B
/// calling sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_by_one_client_arrives_at_the_other_over_the_socket() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let remote_a = ws_remote(server.addr, ALICE.1);
    let a = ws_client(&remote_a, &db_a, fast_options()).await;
    let remote_b = ws_remote(server.addr, ALICE.1);
    let b = ws_client(
        &remote_b,
        &db_b,
        manual_options(ConflictStrategy::ServerWins),
    )
    .await;
    connected(&remote_a).await;
    connected(&remote_b).await;
    // b's initial sync on connecting has run; everything after this arrives as events.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut events = b.events();

    a.save(&todo("rt1", "live")).await.unwrap();
    let added = next_event(&mut events, SyncEventType::ModelAdded, Some("rt1")).await;
    assert_eq!(added.model_type(), Some("todo"));
    assert_eq!(b.get::<Todo>("rt1").await.unwrap().unwrap().title, "live");
    let state = b.record_state::<Todo>("rt1").await.unwrap();
    assert!(state.meta.unwrap().synced, "a received record is synced");

    let mut edited = a.get::<Todo>("rt1").await.unwrap().unwrap();
    edited.title = "edited".into();
    a.save(&edited).await.unwrap();
    next_event(&mut events, SyncEventType::ModelUpdated, Some("rt1")).await;
    assert_eq!(b.get::<Todo>("rt1").await.unwrap().unwrap().title, "edited");

    a.delete::<Todo>("rt1").await.unwrap();
    next_event(&mut events, SyncEventType::ModelDeleted, Some("rt1")).await;
    assert!(b.get::<Todo>("rt1").await.unwrap().is_none());

    // Bob's socket hears nothing of Alice's records.
    let db_c = ClientDb::new();
    let remote_c = ws_remote(server.addr, BOB.1);
    let c = ws_client(&remote_c, &db_c, fast_options()).await;
    connected(&remote_c).await;
    a.save(&todo("rt2", "alice only")).await.unwrap();
    next_event(&mut events, SyncEventType::ModelAdded, Some("rt2")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.all::<Todo>().await.unwrap().is_empty());
    assert_eq!(b.status().borrow().pending_changes, 0);
    for sync in [a, b, c] {
        sync.shutdown().await.unwrap();
    }
    for remote in [remote_a, remote_b, remote_c] {
        remote.close();
    }
}

/// A loopback TCP proxy whose client-to-server direction can be slowed down: a request
/// reaches the server late while the server's messages (events) still arrive at once.
struct SlowUpstream {
    addr: std::net::SocketAddr,
    delay: std::sync::Arc<std::sync::Mutex<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowUpstream {
    async fn start(upstream: std::net::SocketAddr) -> SlowUpstream {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let delay = std::sync::Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let delay2 = std::sync::Arc::clone(&delay);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let delay = std::sync::Arc::clone(&delay2);
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 1 << 16];
                        while let Ok(n @ 1..) = cr.read(&mut buf).await {
                            let wait = *delay.lock().unwrap();
                            tokio::time::sleep(wait).await;
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    };
                    tokio::select! {
                        () = up => {}
                        () = down => {}
                    }
                });
            }
        });
        SlowUpstream { addr, delay, task }
    }

    fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }
}

impl Drop for SlowUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Another device's change to a record arrives (as an event) while this client's push of
/// its own edit of that record is still on the way: the push then meets a 409, and the
/// client must settle it once, without losing track of its op.
async fn change_arrives_while_push_in_flight(strategy: ConflictStrategy) {
    let server = Server::start().await;
    let slow = SlowUpstream::start(server.addr).await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let remote_a = ws_remote(slow.addr, ALICE.1);
    let a = ws_client(&remote_a, &db_a, manual_options(strategy.clone())).await;
    let remote_b = ws_remote(server.addr, ALICE.1);
    let b = ws_client(&remote_b, &db_b, manual_options(strategy)).await;
    connected(&remote_a).await;
    connected(&remote_b).await;
    a.save(&todo("f1", "original")).await.unwrap();
    a.sync_all().await.unwrap();
    eventually(WAIT, "b has f1", || async {
        b.get::<Todo>("f1").await.unwrap().is_some()
    })
    .await;

    let mut ea = a.get::<Todo>("f1").await.unwrap().unwrap();
    ea.title = "a's edit".into();
    a.save(&ea).await.unwrap();
    slow.set_delay(Duration::from_millis(600));
    let a_sync = tokio::spawn({
        let a = a.clone();
        async move { a.sync_all().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut eb = b.get::<Todo>("f1").await.unwrap().unwrap();
    eb.title = "b's edit".into();
    eb.priority = 9;
    b.save(&eb).await.unwrap();
    b.sync_all().await.unwrap();

    let result = a_sync.await.unwrap();
    slow.set_delay(Duration::ZERO);
    assert!(result.is_ok(), "a's sync with a push in flight: {result:?}");
    a.sync_all().await.unwrap();
    b.sync_all().await.unwrap();
    eventually(WAIT, "a, b and the server agree", || async {
        let ra = a.get::<Todo>("f1").await.unwrap().unwrap();
        let rb = b.get::<Todo>("f1").await.unwrap().unwrap();
        let rs = server.record(ALICE.1, "todos", "f1").await.unwrap();
        ra == rb && rs["title"] == ra.title.as_str()
    })
    .await;
    assert_eq!(a.status().borrow().pending_changes, 0);
    assert!(a.failed_ops().await.unwrap().is_empty());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    remote_a.close();
    remote_b.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_arriving_during_a_push_server_wins() {
    change_arrives_while_push_in_flight(ConflictStrategy::ServerWins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_arriving_during_a_push_client_wins() {
    change_arrives_while_push_in_flight(ConflictStrategy::ClientWins).await;
}

/// A WebSocket remote whose config is `config` with this file's quick reconnects.
fn ws_remote_with(
    addr: std::net::SocketAddr,
    token: &str,
    edit: impl FnOnce(&mut WebSocketConfig),
) -> WebSocketRemote {
    let mut config = WebSocketConfig::new(format!("ws://{addr}/ws"));
    config.reconnect_delay = Duration::from_millis(50);
    config.max_reconnect_delay = Duration::from_millis(200);
    edit(&mut config);
    let mut headers = BTreeMap::new();
    headers.insert("Authorization".to_owned(), format!("Bearer {token}"));
    WebSocketRemote::connect(config, headers, Duration::from_secs(5))
}

/// Guards against: WebSocket options that the remote-as-transport path ignores.
/// `subscribe_all_models = false` on the remote's config: nothing arrives by event until the
/// application subscribes through the remote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_config_subscribe_all_models_off_waits_for_an_explicit_subscription() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let writer = ws_remote(server.addr, ALICE.1);
    let a = ws_client(&writer, &db_a, fast_options()).await;
    let quiet = ws_remote_with(server.addr, ALICE.1, |c| c.subscribe_all_models = false);
    let b = ws_client(&quiet, &db_b, manual_options(ConflictStrategy::ServerWins)).await;
    connected(&writer).await;
    connected(&quiet).await;
    // Let b's first run after connecting (a pull) finish before anything is written.
    tokio::time::sleep(Duration::from_millis(300)).await;

    a.save(&todo("before", "x")).await.unwrap();
    eventually(WAIT, "on the server", || async {
        server.record(ALICE.1, "todos", "before").await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        b.get::<Todo>("before").await.unwrap().is_none(),
        "no event without a subscription"
    );

    offline_sync_kit::remote::ChangeFeed::subscribe(&quiet, "todos", serde_json::Map::new());
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.save(&todo("after", "y")).await.unwrap();
    eventually(WAIT, "delivered by event once subscribed", || async {
        b.get::<Todo>("after").await.unwrap().is_some()
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: the remote's `event_mapper` being ignored. A mapper that takes
/// `item_created` for something other than a model change makes creates arrive only as the
/// update that follows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_config_event_mapper_decides_what_an_event_means() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let writer = ws_remote(server.addr, ALICE.1);
    let a = ws_client(&writer, &db_a, fast_options()).await;
    let mapped = ws_remote_with(server.addr, ALICE.1, |c| {
        c.event_mapper = offline_sync_kit::SyncEventMapper::new()
            .map("item_created", SyncEventType::ConnectionEstablished);
    });
    let b = ws_client(&mapped, &db_b, manual_options(ConflictStrategy::ServerWins)).await;
    connected(&writer).await;
    connected(&mapped).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut t = todo("m", "created");
    a.save(&t).await.unwrap();
    eventually(WAIT, "on the server", || async {
        server.record(ALICE.1, "todos", "m").await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        b.get::<Todo>("m").await.unwrap().is_none(),
        "item_created no longer means a new record"
    );
    t.title = "updated".into();
    a.save(&t).await.unwrap();
    eventually(WAIT, "the update event still applies", || async {
        b.get::<Todo>("m")
            .await
            .unwrap()
            .is_some_and(|r| r.title == "updated")
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: a request over the socket waiting forever for an answer that never comes.
/// A server that accepts the socket but never answers: the request fails after the remote's
/// `request_timeout` with an error saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_server_never_answers_times_out() {
    use futures_util::StreamExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        // Read everything, answer nothing.
        while let Some(Ok(_)) = ws.next().await {}
    });
    let remote = WebSocketRemote::connect(
        WebSocketConfig::new(format!("ws://{addr}/ws")),
        BTreeMap::new(),
        Duration::from_millis(300),
    );
    connected(&remote).await;
    let started = std::time::Instant::now();
    let err = offline_sync_kit::remote::Remote::health(&remote)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(err.to_string().contains("no answer within 300ms"), "{err}");
    remote.close();
    server.abort();
}

/// Guards against: transports disagreeing on what a failure does. Over the WebSocket, a push
/// answered 401 or 403 is retried (credentials are renewed from outside) and a 422 fails its
/// ops, exactly as over HTTP (`rest_interop`'s batch and per-op tests): one disposition table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_refused_401_or_403_over_the_socket_is_retried_and_422_fails() {
    use futures_util::{SinkExt, StreamExt};
    use std::sync::{Arc, Mutex};
    use tokio_tungstenite::tungstenite::Message;

    let answer = Arc::new(Mutex::new(422u16));
    let status = Arc::clone(&answer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A stand-in server: every request is answered with the current status.
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            let answer = match value["type"].as_str() {
                Some("ping") => serde_json::json!({"type": "pong"}),
                Some("request") => {
                    let status = *status.lock().unwrap();
                    serde_json::json!({"type": "response", "id": value["id"], "status": status,
                        "body": {"error": "no", "code": "refused"}})
                }
                _ => continue,
            };
            ws.send(Message::text(answer.to_string())).await.unwrap();
        }
    });
    let remote = ws_remote(addr, ALICE.1);
    let db = ClientDb::new();
    let mut options = manual_options(ConflictStrategy::ServerWins);
    options.direction = SyncDirection::PushOnly;
    let sync = ws_client(&remote, &db, options).await;
    connected(&remote).await;

    sync.save(&todo("refused", "x")).await.unwrap();
    assert!(sync.sync_all().await.is_err());
    let failed = sync.failed_ops().await.unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("422"),
        "{failed:?}"
    );

    for (code, id) in [(401u16, "no-token"), (403, "no-access")] {
        *answer.lock().unwrap() = code;
        sync.save(&todo(id, "y")).await.unwrap();
        let _ = sync.sync_all().await;
        let state = sync.record_state::<Todo>(id).await.unwrap();
        assert_eq!(state.ops.len(), 1, "{code}: {state:?}");
        assert_eq!(
            state.ops[0].state,
            offline_sync_kit::store::OpState::Pending,
            "{code}: {state:?}"
        );
        assert!(state.ops[0].attempts >= 1, "{code}: {state:?}");
    }
    assert_eq!(sync.failed_ops().await.unwrap().len(), 1, "only the 422");
    sync.shutdown().await.unwrap();
    remote.close();
    server.abort();
}
