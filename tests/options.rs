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
use offline_sync_kit::protocol::OpKind;
use offline_sync_kit::remote::{
    ModelRoute, PushItem, PushOutcome, Remote, RemoteError, RemotePage, Traffic,
};
use offline_sync_kit::store::RemoteRecord;
use offline_sync_kit::HttpRemote;
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
                OpKind::Create => "create",
                OpKind::Update => "update",
                OpKind::Replace => "replace",
                OpKind::Delete => "delete",
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

/// Guards against: ops the worker finds ready when it looks (queued before it started, or
/// while its turn had not come) pushed at once, outside the debounce: the writes that follow
/// then go in a second push, and `auto_sync_debounce_gathers_a_burst_into_one_push` failed
/// whenever the worker's first look came after the burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_queued_before_the_worker_started_wait_for_the_debounce_too() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let (before, _) = recorded_client(&server, &db, manual()).await;
    for i in 0..2 {
        before.save(&todo(&format!("early{i}"), "x")).await.unwrap();
    }
    before.shutdown().await.unwrap();
    drop(before);

    let mut options = fast_options();
    options.auto_sync_debounce = Duration::from_millis(300);
    let (sync, remote) = recorded_client(&server, &db, options).await;
    for i in 0..3 {
        sync.save(&todo(&format!("late{i}"), "x")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        remote.calls().is_empty(),
        "nothing sent inside the debounce window: {:?}",
        remote.calls()
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

/// How a write reaches the server in the per-method option tests.
#[derive(Debug, Clone, Copy, PartialEq)]
enum WritePath {
    /// The default: sync-server's batch endpoint.
    Batch,
    /// `rest_only()`: one REST call per change.
    Rest,
}

/// A manual-sync client through `proxy` whose `Todo` has `request` as its one REST override.
async fn client_with_request(
    proxy: &FaultProxy,
    db: &ClientDb,
    path: WritePath,
    method: RestMethod,
    request: RestRequest,
) -> SyncManager {
    let mut options = manual();
    // A full update goes out as PUT only without deltas.
    options.use_delta_sync = method != RestMethod::Put;
    let mut builder = always_online_builder(&proxy.url(), db, ALICE.1)
        .await
        .options(options)
        .model_with::<Todo>(
            offline_sync_kit::ModelConfig::new().rest(RestRequests::new().with(request)),
        );
    if path == WritePath::Rest {
        builder = builder.rest_only();
    }
    builder.build().await.unwrap()
}

/// Queues an op that goes out with `method`: a create (POST), an update with deltas (PATCH)
/// or without (PUT) of a synced record, a delete (DELETE) of one.
async fn queue_op_of(sync: &SyncManager, method: RestMethod, id: &str) {
    sync.save(&todo(id, "first")).await.unwrap();
    if method == RestMethod::Post {
        return;
    }
    let report = sync.sync_all().await.unwrap();
    assert_eq!(report.pushed, 1, "{report:?}");
    match method {
        RestMethod::Delete => sync.delete::<Todo>(id).await.unwrap(),
        _ => sync.save(&todo(id, "second")).await.unwrap(),
    }
    let state = sync.record_state::<Todo>(id).await.unwrap();
    assert_eq!(state.ops.len(), 1, "{method}: {state:?}");
}

const WRITE_METHODS: [RestMethod; 4] = [
    RestMethod::Post,
    RestMethod::Patch,
    RestMethod::Put,
    RestMethod::Delete,
];

/// Guards against: `retry_count` of a write method that only worked in `rest_only()` mode (the
/// batch push ignored it, though the README's derive example sets `post(retry_count = 2)`).
/// For each write method, on both paths: the server's proxy answers 500 twice; an op whose
/// method has `retry_count(2)` is pushed in the same sync, while with the count on another
/// method it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_count_of_each_write_method_retries_its_requests_on_both_paths() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    for path in [WritePath::Batch, WritePath::Rest] {
        for method in WRITE_METHODS {
            for own in [true, false] {
                let configured = if own {
                    method
                } else if method == RestMethod::Post {
                    RestMethod::Delete
                } else {
                    RestMethod::Post
                };
                let db = ClientDb::new();
                let sync = client_with_request(
                    &proxy,
                    &db,
                    path,
                    method,
                    RestRequest::new(configured).retry_count(2),
                )
                .await;
                let id = format!("r-{path:?}-{method}-{own}").to_lowercase();
                queue_op_of(&sync, method, &id).await;
                proxy.fault_next_settled(Fault::Answer500, 2).await;
                let result = sync.sync_all().await;
                let pushed = matches!(&result, Ok(report) if report.pushed == 1);
                assert_eq!(
                    pushed, own,
                    "{path:?} {method} with retry_count(2) on {configured}: {result:?}"
                );
                proxy.fault_next(Fault::Forward, 0);
                sync.shutdown().await.unwrap();
            }
        }
    }
}

/// Guards against: `timeout` of a write method that did nothing on the batch path (its requests
/// waited the remote's 30 s default). For each write method, on both paths: with the server's
/// answers stalled, a sync whose op's method has `timeout(300 ms)` gives up on it well within
/// the 10 s this test allows, the op stays queued, and once the network heals the next sync
/// delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_of_each_write_method_bounds_its_requests_on_both_paths() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    for path in [WritePath::Batch, WritePath::Rest] {
        for method in WRITE_METHODS {
            let db = ClientDb::new();
            let sync = client_with_request(
                &proxy,
                &db,
                path,
                method,
                RestRequest::new(method).timeout(Duration::from_millis(300)),
            )
            .await;
            let id = format!("t-{path:?}-{method}").to_lowercase();
            queue_op_of(&sync, method, &id).await;
            proxy.fault_next_settled(Fault::Forward, 0).await;
            proxy.stall();
            // Push only: a pull would wait on the stalled server with the `get` default.
            let push = sync.synchronize(SyncRun::new(SyncDirection::PushOnly));
            let stalled = tokio::time::timeout(WAIT, push)
                .await
                .unwrap_or_else(|_| panic!("{path:?} {method}: the timeout was not applied"));
            assert!(
                !matches!(&stalled, Ok(report) if report.pushed > 0),
                "{path:?} {method}: {stalled:?}"
            );
            assert_eq!(sync.status().borrow().pending_changes, 1);
            proxy.heal();
            eventually(WAIT, "delivered after the network healed", || async {
                let _ = sync.sync_all().await;
                sync.status().borrow().pending_changes == 0
            })
            .await;
            let on_server = server.record(ALICE.1, "todos", &id).await;
            match method {
                RestMethod::Delete => assert!(on_server.is_none(), "{path:?} {method}"),
                RestMethod::Post => assert_eq!(on_server.unwrap()["title"], "first"),
                _ => assert_eq!(on_server.unwrap()["title"], "second"),
            }
            sync.shutdown().await.unwrap();
        }
    }
}

/// Guards against: one batch request for ops whose methods want different retries (a create
/// retried because of a delete's setting, or a delete's failure failing the create). A delete
/// and a create in one push, only `post` with `retry_count(2)`, the proxy answering 500 twice:
/// the delete's request fails (retried later by the policy), the create's is retried and
/// lands, both in the same sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_whose_methods_differ_in_retries_go_in_separate_batch_requests() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let sync = client_with_request(
        &proxy,
        &db,
        WritePath::Batch,
        RestMethod::Post,
        RestRequest::new(RestMethod::Post).retry_count(2),
    )
    .await;
    // No jitter and a backoff longer than the run: the failed delete is not due again within
    // this sync (a jittered delay near 0 would send it in the run's next round).
    let mut options = sync.options();
    options.retry.jitter = false;
    options.retry.base = Duration::from_secs(2);
    options.retry.max = Duration::from_secs(2);
    sync.update_options(options);
    sync.save(&todo("old", "to delete")).await.unwrap();
    sync.sync_all().await.unwrap();
    sync.delete::<Todo>("old").await.unwrap();
    sync.save(&todo("new", "to create")).await.unwrap();
    proxy.fault_next_settled(Fault::Answer500, 2).await;
    let report = sync.sync_all().await.unwrap();
    assert_eq!((report.pushed, report.retried), (1, 1), "{report:?}");
    assert!(server.record(ALICE.1, "todos", "new").await.is_some());
    assert!(server.record(ALICE.1, "todos", "old").await.is_some());
    let delete = sync.record_state::<Todo>("old").await.unwrap();
    assert_eq!(delete.ops[0].attempts, 1, "{delete:?}");
    proxy.fault_next(Fault::Forward, 0);
    eventually(WAIT, "the delete follows by the retry policy", || async {
        let _ = sync.sync_all().await;
        server.record(ALICE.1, "todos", "old").await.is_none()
    })
    .await;
    sync.shutdown().await.unwrap();
}

/// Guards against: `supplemental_top_level_data` of a `get` that was dropped (a GET has no
/// body). It goes out as query parameters: sync-server reads them as equality filters, so a
/// pull with `{"title": "keep"}` brings only those records. A value that cannot be a query
/// parameter is refused when the manager is built, and by `query_with_request`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_supplemental_entries_are_sent_as_query_parameters() {
    let server = Server::start().await;
    let (db_writer, db_reader) = (ClientDb::new(), ClientDb::new());
    let writer = client_builder(&server.url(), &db_writer, ALICE.1)
        .await
        .options(manual())
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    writer
        .save_all(&[todo("k1", "keep"), todo("s1", "skip"), todo("k2", "keep")])
        .await
        .unwrap();
    assert_eq!(writer.sync_all().await.unwrap().pushed, 3);

    let filter = |json: serde_json::Value| {
        RestRequest::new(RestMethod::Get)
            .supplemental_top_level_data(json.as_object().unwrap().clone())
    };
    let reader = client_builder(&server.url(), &db_reader, ALICE.1)
        .await
        .options(manual())
        .model_with::<Todo>(
            offline_sync_kit::ModelConfig::new()
                .rest(RestRequests::new().with(filter(serde_json::json!({"title": "keep"})))),
        )
        .build()
        .await
        .unwrap();
    let report = reader.sync_all().await.unwrap();
    assert_eq!(report.pulled, 2, "{report:?}");
    let mut ids: Vec<String> = reader
        .all::<Todo>()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["k1", "k2"]);
    // A per-call override replaces the entry: the remote read brings `s1` too.
    let got = reader
        .query_with_request(
            Query::<Todo>::new(),
            FetchStrategy::RemoteFirst,
            Some(filter(serde_json::json!({"title": "skip"}))),
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().any(|t| t.id == "s1"));

    let refused = client_builder(&server.url(), &ClientDb::new(), ALICE.1)
        .await
        .model_with::<Todo>(
            offline_sync_kit::ModelConfig::new()
                .rest(RestRequests::new().with(filter(serde_json::json!({"title": ["a"]})))),
        )
        .build()
        .await;
    match refused {
        Err(offline_sync_kit::Error::Config(message)) => {
            assert!(
                message.contains("`title`") && message.contains("query parameters"),
                "{message}"
            );
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    let refused = writer
        .query_with_request(
            Query::<Todo>::new(),
            FetchStrategy::RemoteFirst,
            Some(filter(serde_json::json!({"title": {"a": 1}}))),
        )
        .await;
    assert!(
        matches!(refused, Err(offline_sync_kit::Error::Config(_))),
        "{refused:?}"
    );
    writer.shutdown().await.unwrap();
    reader.shutdown().await.unwrap();
}

/// Guards against: an application that has to know to call `start_periodic_sync` (the seed
/// started it with `auto_sync`). `auto_start(true)` syncs at once when the manager is built (a
/// record already on the server arrives although the interval is an hour) and then every
/// interval; without it nothing is pulled until the application asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_start_syncs_when_built_and_then_periodically() {
    let server = Server::start().await;
    let (db_writer, db_hourly, db_often, db_off) = (
        ClientDb::new(),
        ClientDb::new(),
        ClientDb::new(),
        ClientDb::new(),
    );
    let writer = client_builder(&server.url(), &db_writer, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    writer.save(&todo("a1", "there before")).await.unwrap();
    writer.sync_all().await.unwrap();

    let mut hourly_options = fast_options();
    hourly_options.sync_interval = Duration::from_secs(3600);
    let hourly = client_builder(&server.url(), &db_hourly, ALICE.1)
        .await
        .options(hourly_options.clone())
        .model::<Todo>()
        .auto_start(true)
        .build()
        .await
        .unwrap();
    let off = client_builder(&server.url(), &db_off, ALICE.1)
        .await
        .options(hourly_options)
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    eventually(WAIT, "auto_start pulled at once", || async {
        hourly.get::<Todo>("a1").await.unwrap().is_some()
    })
    .await;

    let mut often_options = fast_options();
    often_options.sync_interval = Duration::from_millis(50);
    let often = client_builder(&server.url(), &db_often, ALICE.1)
        .await
        .options(often_options)
        .model::<Todo>()
        .auto_start(true)
        .build()
        .await
        .unwrap();
    writer.save(&todo("a2", "made later")).await.unwrap();
    writer.sync_all().await.unwrap();
    eventually(WAIT, "the periodic sync pulls later changes", || async {
        often.get::<Todo>("a2").await.unwrap().is_some()
    })
    .await;

    assert!(
        off.all::<Todo>().await.unwrap().is_empty(),
        "without auto_start nothing is pulled by itself"
    );
    assert!(off.status().borrow().last_sync_time.is_none());
    for sync in [writer, hourly, often, off] {
        sync.shutdown().await.unwrap();
    }
}
