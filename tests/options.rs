//! Every `SyncOptions` field has an effect, observed here against a real
//! sync-server. Guards against: options that are documented but dead.
//!
//! A `Remote` implemented by the test (delegating to the real `HttpRemote`)
//! records each call, which also shows an application can plug in its own remote.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use offline_sync_kit::prelude::*;
use offline_sync_kit::remote::{ModelRoute, PushItem, PushKind, PushOutcome, RemotePage, Traffic};
use offline_sync_kit::store::RemoteRecord;
use offline_sync_kit::{HttpRemote, Remote, RemoteError};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

/// A remote that records what the engine asks of it and forwards to HTTP.
#[derive(Debug, Clone)]
struct Recording {
    http: HttpRemote,
    calls: Arc<Mutex<Vec<String>>>,
    /// While set, a push answers one outcome fewer than it was given (a broken remote).
    short: Arc<std::sync::atomic::AtomicBool>,
}

impl Recording {
    fn new(url: &str, token: &str) -> Recording {
        Recording {
            http: HttpRemote::builder(url)
                .bearer_token(token)
                .build()
                .unwrap(),
            calls: Arc::default(),
            short: Arc::default(),
        }
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }
}

#[async_trait]
impl Remote for Recording {
    fn max_batch(&self) -> usize {
        self.http.max_batch()
    }
    async fn push(
        &self,
        route: &ModelRoute,
        items: &[PushItem],
    ) -> Result<(Vec<PushOutcome>, Traffic), RemoteError> {
        let kinds: Vec<&str> = items
            .iter()
            .map(|i| match i.kind {
                PushKind::Create => "create",
                PushKind::Update => "update",
                PushKind::Replace => "replace",
                PushKind::Delete => "delete",
            })
            .collect();
        self.calls
            .lock()
            .unwrap()
            .push(format!("push {}", kinds.join(",")));
        let (mut outcomes, traffic) = self.http.push(route, items).await?;
        if self.short.load(std::sync::atomic::Ordering::SeqCst) {
            outcomes.pop();
        }
        Ok((outcomes, traffic))
    }
    async fn pull(
        &self,
        route: &ModelRoute,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RemotePage, RemoteError> {
        self.calls.lock().unwrap().push(format!("pull {limit}"));
        self.http.pull(route, cursor, limit).await
    }
    async fn fetch(
        &self,
        route: &ModelRoute,
        id: &str,
    ) -> Result<Option<RemoteRecord>, RemoteError> {
        self.calls.lock().unwrap().push(format!("fetch {id}"));
        self.http.fetch(route, id).await
    }
    async fn fetch_page(
        &self,
        route: &ModelRoute,
        params: &[(String, String)],
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<RemotePage, RemoteError> {
        self.calls.lock().unwrap().push("fetch_page".into());
        self.http.fetch_page(route, params, limit, offset).await
    }
    async fn health(&self) -> Result<(), RemoteError> {
        self.http.health().await
    }
}

async fn recorded_client(
    server: &Server,
    db: &ClientDb,
    options: SyncOptions,
) -> (SyncManager, Recording) {
    let remote = Recording::new(&server.url(), ALICE.1);
    let sync = SyncManager::builder()
        .remote(remote.clone())
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    (sync, remote)
}

fn manual() -> SyncOptions {
    let mut o = fast_options();
    o.auto_sync = false;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_sync_on_pushes_after_a_write_and_off_does_not() {
    let server = Server::start().await;
    let (db_on, db_off) = (ClientDb::new(), ClientDb::new());
    let (on, _) = recorded_client(&server, &db_on, fast_options()).await;
    let (off, off_remote) = recorded_client(&server, &db_off, manual()).await;
    on.save(&todo("auto", "pushed by itself")).await.unwrap();
    off.save(&todo("manual", "waits for sync")).await.unwrap();
    eventually(WAIT, "auto push", || async {
        server.record(ALICE.1, "todos", "auto").await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.record(ALICE.1, "todos", "manual").await.is_none());
    assert!(
        off_remote.calls().is_empty(),
        "no remote call without auto_sync"
    );
    off.sync_all().await.unwrap();
    assert!(server.record(ALICE.1, "todos", "manual").await.is_some());
    on.shutdown().await.unwrap();
    off.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_sync_debounce_gathers_a_burst_into_one_push() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync_debounce = Duration::from_millis(300);
    let (sync, remote) = recorded_client(&server, &db, options).await;
    for i in 0..5 {
        sync.save(&todo(&format!("burst{i}"), "x")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        remote.calls().is_empty(),
        "nothing sent inside the debounce window"
    );
    eventually(WAIT, "pushed after the quiet time", || async {
        sync.status().borrow().pending_changes == 0
    })
    .await;
    assert_eq!(remote.calls(), ["push create,create,create,create,create"]);
    sync.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_size_limits_ops_per_push_and_records_per_page() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let mut options = manual();
    options.batch_size = 3;
    let (sync, remote) = recorded_client(&server, &db, options).await;
    let todos: Vec<Todo> = (0..7).map(|i| todo(&format!("b{i}"), "x")).collect();
    sync.save_all(&todos).await.unwrap();
    sync.synchronize(SyncRun::new(SyncDirection::PushOnly))
        .await
        .unwrap();
    assert_eq!(
        remote.calls(),
        [
            "push create,create,create",
            "push create,create,create",
            "push create"
        ]
    );
    let db2 = ClientDb::new();
    let mut options = manual();
    options.batch_size = 3;
    let (reader, reader_remote) = recorded_client(&server, &db2, options).await;
    let report = reader.pull::<Todo>().await.unwrap();
    assert_eq!(report.pulled, 7);
    assert_eq!(reader_remote.calls(), ["pull 3", "pull 3", "pull 3"]);
    // A per-run override.
    reader_remote.clear();
    reader
        .synchronize(
            SyncRun::new(SyncDirection::PullOnly)
                .force_full()
                .batch_size(5),
        )
        .await
        .unwrap();
    assert_eq!(reader_remote.calls(), ["pull 5", "pull 5"]);
    sync.shutdown().await.unwrap();
    reader.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_delta_sync_sends_changed_fields_and_off_sends_full_records() {
    let server = Server::start().await;
    let (db_delta, db_full) = (ClientDb::new(), ClientDb::new());
    let mut full_options = manual();
    full_options.use_delta_sync = false;
    let (delta, delta_remote) = recorded_client(&server, &db_delta, manual()).await;
    let (full, full_remote) = recorded_client(&server, &db_full, full_options).await;
    let mut a = todo("delta-a", "a record with a long description");
    a.description = "x".repeat(400);
    let mut b = a.clone();
    b.id = "delta-b".into();
    delta.save(&a).await.unwrap();
    full.save(&b).await.unwrap();
    delta.sync_all().await.unwrap();
    full.sync_all().await.unwrap();
    delta_remote.clear();
    full_remote.clear();
    a.is_completed = true;
    b.is_completed = true;
    delta.save(&a).await.unwrap();
    full.save(&b).await.unwrap();
    let rd = delta
        .synchronize(SyncRun::new(SyncDirection::PushOnly))
        .await
        .unwrap();
    let rf = full
        .synchronize(SyncRun::new(SyncDirection::PushOnly))
        .await
        .unwrap();
    assert_eq!(delta_remote.calls(), ["push update"]);
    assert_eq!(full_remote.calls(), ["push replace"]);
    assert!(
        rd.bytes_sent * 4 < rf.bytes_sent,
        "delta {} bytes vs full {} bytes",
        rd.bytes_sent,
        rf.bytes_sent
    );
    assert_eq!(
        server.record(ALICE.1, "todos", "delta-a").await.unwrap()["isCompleted"],
        true
    );
    assert_eq!(
        server.record(ALICE.1, "todos", "delta-b").await.unwrap()["isCompleted"],
        true
    );
    delta.shutdown().await.unwrap();
    full.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_off_never_pulls() {
    let server = Server::start().await;
    let (db_w, db_r) = (ClientDb::new(), ClientDb::new());
    let (writer, _) = recorded_client(&server, &db_w, manual()).await;
    writer.save(&todo("remote", "x")).await.unwrap();
    writer.sync_all().await.unwrap();
    let mut options = manual();
    options.bidirectional = false;
    let (one_way, remote) = recorded_client(&server, &db_r, options).await;
    one_way.save(&todo("local", "y")).await.unwrap();
    one_way.sync_all().await.unwrap();
    assert!(
        remote.calls().iter().all(|c| c.starts_with("push")),
        "{:?}",
        remote.calls()
    );
    assert!(one_way.get::<Todo>("remote").await.unwrap().is_none());
    assert!(server.record(ALICE.1, "todos", "local").await.is_some());
    writer.shutdown().await.unwrap();
    one_way.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direction_orders_and_limits_the_halves() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let (sync, remote) = recorded_client(&server, &db, manual()).await;
    let run = SyncRun::new;

    sync.save(&todo("d1", "x")).await.unwrap();
    sync.synchronize(run(SyncDirection::PushThenPull))
        .await
        .unwrap();
    assert_eq!(remote.calls(), ["push create", "pull 200"]);

    remote.clear();
    sync.save(&todo("d2", "x")).await.unwrap();
    sync.synchronize(run(SyncDirection::PullThenPush))
        .await
        .unwrap();
    assert_eq!(remote.calls(), ["pull 200", "push create"]);

    remote.clear();
    sync.save(&todo("d3", "x")).await.unwrap();
    sync.synchronize(run(SyncDirection::PullOnly))
        .await
        .unwrap();
    assert_eq!(remote.calls(), ["pull 200"]);
    sync.synchronize(run(SyncDirection::PushOnly))
        .await
        .unwrap();
    assert_eq!(remote.calls(), ["pull 200", "push create"]);

    // The options' direction is what sync_all uses.
    remote.clear();
    let mut options = manual();
    options.direction = SyncDirection::PullThenPush;
    sync.update_options(options);
    sync.save(&todo("d4", "x")).await.unwrap();
    sync.sync_all().await.unwrap();
    assert_eq!(remote.calls(), ["pull 200", "push create"]);
    sync.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_max_attempts_moves_an_op_to_failed_instead_of_dropping_it() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    proxy.go_down();
    let db = ClientDb::new();
    let mut options = fast_options();
    options.retry.max_attempts = Some(3);
    options.retry.base = Duration::from_millis(20);
    options.retry.max = Duration::from_millis(40);
    options.retry.jitter = false;
    let sync = always_online_builder(&proxy.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    sync.save(&todo("gives-up", "x")).await.unwrap();
    eventually(WAIT, "failed after three attempts", || async {
        sync.failed_ops().await.unwrap().len() == 1
    })
    .await;
    let failed = sync.failed_ops().await.unwrap();
    assert!(
        failed[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("3 attempts"),
        "{failed:?}"
    );
    assert!(
        sync.get::<Todo>("gives-up").await.unwrap().is_some(),
        "local data kept"
    );
    proxy.heal();
    sync.retry_failed().await.unwrap();
    eventually(WAIT, "delivered after retry_failed", || async {
        server.record(ALICE.1, "todos", "gives-up").await.is_some()
    })
    .await;
    sync.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_backoff_spaces_attempts_and_honours_retry_after_floor() {
    // The policy's delays, as the engine uses them (no jitter).
    let mut policy = offline_sync_kit::RetryPolicy::default();
    policy.base = Duration::from_millis(100);
    policy.max = Duration::from_secs(2);
    policy.multiplier = 3.0;
    policy.jitter = false;
    policy.max_attempts = None;
    assert_eq!(policy.delay(1, None), Duration::from_millis(100));
    assert_eq!(policy.delay(3, None), Duration::from_millis(900));
    assert_eq!(policy.delay(9, None), Duration::from_secs(2));
    // A server's Retry-After is a floor up to the policy's max (issue 13: a server must not
    // freeze an op beyond the policy), so 1 s is honoured and 5 s is clamped to 2 s.
    assert_eq!(
        policy.delay(1, Some(Duration::from_secs(1))),
        Duration::from_secs(1)
    );
    assert_eq!(
        policy.delay(1, Some(Duration::from_secs(5))),
        Duration::from_secs(2)
    );

    // And the engine schedules the next attempt accordingly.
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    proxy.go_down();
    let db = ClientDb::new();
    let mut options = manual();
    options.retry = policy;
    options.retry.base = Duration::from_secs(30);
    options.retry.max = Duration::from_secs(60);
    let sync = always_online_builder(&proxy.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    sync.save(&todo("later", "x")).await.unwrap();
    let before = chrono::Utc::now();
    let _ = sync.sync_all().await;
    let op = sync
        .record_state::<Todo>("later")
        .await
        .unwrap()
        .ops
        .remove(0);
    let wait = op.next_attempt_at.unwrap() - before;
    assert!(
        wait >= chrono::Duration::seconds(29) && wait <= chrono::Duration::seconds(31),
        "{wait:?}"
    );
    assert_eq!(op.attempts, 1);
    sync.shutdown().await.unwrap();
}

/// `auto_migrate(false)`: a missing model table is an error at build, not created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_migrate_off_refuses_a_missing_table() {
    let db = ClientDb::new();
    let err = SyncManager::builder()
        .base_url("http://127.0.0.1:9")
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .auto_migrate(false)
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("todos"), "{err}");
    // With the default, the table is created.
    SyncManager::builder()
        .base_url("http://127.0.0.1:9")
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .build()
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
}

/// `fetch_strategy` decides where `get` and `query` read when no strategy is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_strategy_decides_where_get_and_query_read() {
    let server = Server::start().await;
    let (db_w, db) = (ClientDb::new(), ClientDb::new());
    let (writer, _) = recorded_client(&server, &db_w, manual()).await;
    writer
        .save(&todo("r1", "only on the server"))
        .await
        .unwrap();
    writer.sync_all().await.unwrap();

    // The default, LocalOnly: nothing local, and no network traffic.
    let (sync, remote) = recorded_client(&server, &db, manual()).await;
    remote.clear();
    assert!(sync.get::<Todo>("r1").await.unwrap().is_none());
    assert!(sync.query(Query::<Todo>::new()).await.unwrap().is_empty());
    assert!(remote.calls().is_empty(), "{:?}", remote.calls());

    // LocalWithRemoteFallback: local has nothing, so the remote answers (and the store keeps it).
    let mut options = manual();
    options.fetch_strategy = FetchStrategy::LocalWithRemoteFallback;
    sync.update_options(options.clone());
    let got = sync.get::<Todo>("r1").await.unwrap().unwrap();
    assert_eq!(got.title, "only on the server");
    assert_eq!(remote.calls(), ["fetch r1"]);
    // Now local has it: no second trip.
    remote.clear();
    assert!(sync.get::<Todo>("r1").await.unwrap().is_some());
    assert!(remote.calls().is_empty(), "{:?}", remote.calls());

    // RemoteFirst: the remote is asked even though local has data.
    options.fetch_strategy = FetchStrategy::RemoteFirst;
    sync.update_options(options);
    assert_eq!(sync.query(Query::<Todo>::new()).await.unwrap().len(), 1);
    assert_eq!(remote.calls(), ["fetch_page"]);
    writer.shutdown().await.unwrap();
    sync.shutdown().await.unwrap();
}

/// Guards against: a remote that answers fewer outcomes than changes leaving the unanswered
/// ones in flight for good. The whole chunk is a bad response: every op goes back for a retry,
/// and nothing stays in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_push_answer_puts_the_whole_chunk_back() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let (sync, remote) = recorded_client(&server, &db, manual()).await;
    sync.save(&todo("s1", "x")).await.unwrap();
    sync.save(&todo("s2", "y")).await.unwrap();
    remote
        .short
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = sync.sync_all().await.unwrap_err();
    assert!(err.to_string().contains("1 outcomes for 2"), "{err}");
    for id in ["s1", "s2"] {
        let state = sync.record_state::<Todo>(id).await.unwrap();
        assert_eq!(state.ops.len(), 1, "{id}");
        assert_eq!(
            (state.ops[0].state, state.ops[0].attempts),
            (offline_sync_kit::store::OpState::Pending, 1),
            "{id}"
        );
    }
    // Once the remote answers properly, the retries deliver both (the server replays the
    // keys it already applied).
    remote
        .short
        .store(false, std::sync::atomic::Ordering::SeqCst);
    eventually(WAIT, "both delivered", || async {
        let _ = sync.sync_all().await;
        sync.status().borrow().pending_changes == 0
    })
    .await;
    assert_eq!(server.records(ALICE.1, "todos").await.len(), 2);
    sync.shutdown().await.unwrap();
}
