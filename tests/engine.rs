//! End-to-end tests of the sync engine against a real sync-server on loopback.
//! Each test names the failure of the replaced packages it guards against.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use offline_sync_kit::prelude::*;
use offline_sync_kit::store::OpState;
use offline_sync_kit::{
    ConflictStrategy, DeleteStrategy, Error, FetchStrategy, ManualConnectivity, ModelConfig,
    SaveStrategy, SyncDirection, SyncEventType, SyncRun,
};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

/// Guards against: a save marked synced although its push failed, and uploads
/// retried only on the next write. The record saved while the server is down
/// reaches it exactly once, by the retry timer alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_while_server_down_arrives_exactly_once_by_timer() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    proxy.go_down();
    let db = ClientDb::new();
    let sync = always_online_builder(&proxy.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();

    sync.save(&todo("t1", "milk")).await.unwrap();
    let state = sync.record_state::<Todo>("t1").await.unwrap();
    assert!(
        !state.meta.unwrap().synced,
        "not synced while the server is down"
    );
    eventually(WAIT, "a failed attempt is recorded", || async {
        sync.record_state::<Todo>("t1")
            .await
            .unwrap()
            .ops
            .first()
            .is_some_and(|op| op.attempts > 0)
    })
    .await;
    assert_eq!(sync.status().borrow().pending_changes, 1);

    proxy.heal();
    eventually(
        WAIT,
        "the timer retries and the record is synced",
        || async {
            let st = sync.record_state::<Todo>("t1").await.unwrap();
            if std::env::var("DEBUG_TEST").is_ok() {
                eprintln!("{:?} {:?}", chrono::Utc::now(), st.ops);
            }
            st.meta.is_some_and(|m| m.synced)
        },
    )
    .await;
    let records = server.records(ALICE.1, "todos").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["title"], "milk");
    assert_eq!(sync.status().borrow().pending_changes, 0);
    sync.shutdown().await.unwrap();
}

/// Guards against: duplicates from retries. 500 three times then 200 gives one
/// record; a response lost after the server committed gives one record thanks
/// to the idempotency key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_lost_responses_never_duplicate() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync = false;
    let sync = always_online_builder(&proxy.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();

    proxy.fault_next_settled(Fault::Answer500, 3).await;
    sync.save(&todo("a", "five hundred")).await.unwrap();
    for _ in 0..3 {
        let _ = sync.sync_all().await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    sync.sync_all().await.unwrap();
    eventually(WAIT, "synced after the 500s", || async {
        sync.record_state::<Todo>("a")
            .await
            .unwrap()
            .meta
            .is_some_and(|m| m.synced)
    })
    .await;

    proxy.fault_next_settled(Fault::CutAfterResponse, 1).await;
    sync.save(&todo("b", "lost response")).await.unwrap();
    assert!(
        sync.sync_all().await.is_err(),
        "the cut connection is a failed run"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let replay = sync.sync_all().await.unwrap();
    // Without the key the resent create would meet the record it made: a 409 and a conflict.
    assert_eq!(
        (replay.pushed, replay.conflicts),
        (1, 0),
        "the replay got the stored result: {replay:?}"
    );

    let records = server.records(ALICE.1, "todos").await;
    let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.iter().filter(|i| **i == "a").count(), 1);
    assert_eq!(ids.iter().filter(|i| **i == "b").count(), 1);
    assert_eq!(records.len(), 2);
    // The lost response was replayed, not applied twice: version 1 of "b" is the only one.
    let b = server.record(ALICE.1, "todos", "b").await.unwrap();
    let a = server.record(ALICE.1, "todos", "a").await.unwrap();
    assert!(b["version"].as_i64().unwrap() > a["version"].as_i64().unwrap());
    assert!(
        sync.record_state::<Todo>("b")
            .await
            .unwrap()
            .meta
            .unwrap()
            .synced
    );
    sync.shutdown().await.unwrap();
}

/// Guards against: failed operations silently dropped after 3 tries. A
/// permanently refused op is kept as failed with its error visible in the
/// record state, the status and an event; retry_failed delivers it once the
/// cause is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_op_is_kept_visible_and_retryable() {
    let mut server = Server::start_with(Some(12)).await;
    let db = ClientDb::new();
    let sync = client_builder(&server.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    let mut events = sync.events();

    let long_id = "an-id-longer-than-twelve";
    sync.save(&todo(long_id, "too long for this server"))
        .await
        .unwrap();
    let failed = next_event(&mut events, SyncEventType::SyncFailed, Some(long_id)).await;
    match failed {
        offline_sync_kit::SyncEvent::OpFailed { error, .. } => assert!(error.len() > 3),
        other => panic!("not an op failure: {other:?}"),
    }

    let state = sync.record_state::<Todo>(long_id).await.unwrap();
    let meta = state.meta.expect("local data kept");
    assert!(!meta.synced);
    assert!(
        meta.sync_error.is_some(),
        "error visible in the record state"
    );
    assert_eq!(sync.failed_ops().await.unwrap().len(), 1);
    eventually(WAIT, "status shows the failure", || async {
        sync.status().borrow().failed_changes == 1
    })
    .await;
    assert!(
        sync.get::<Todo>(long_id).await.unwrap().is_some(),
        "local data kept"
    );

    server.restart_with_max_id_len(64).await;
    assert_eq!(sync.retry_failed().await.unwrap(), 1);
    eventually(WAIT, "delivered after the fix", || async {
        sync.record_state::<Todo>(long_id)
            .await
            .unwrap()
            .meta
            .is_some_and(|m| m.synced)
    })
    .await;
    assert!(server.record(ALICE.1, "todos", long_id).await.is_some());
    assert_eq!(sync.status().borrow().failed_changes, 0);
    sync.shutdown().await.unwrap();
}

/// Guards against: a push that stops halfway leaving later ops stuck in flight, charged with
/// an attempt they never made, or counted as sent. The engine marks the next chunk while the
/// current one is on the wire; when the current one fails, the next goes back untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_stopping_halfway_releases_the_chunk_it_prepared() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync = false;
    options.batch_size = 2;
    let sync = always_online_builder(&proxy.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    let ids: Vec<String> = (0..6).map(|i| format!("h{i}")).collect();
    for id in &ids {
        sync.save(&todo(id, "x")).await.unwrap();
    }
    // The first chunk goes through; the second meets a server that is gone.
    proxy
        .fault_next_settled(Fault::OneResponseThenDown, 1)
        .await;
    assert!(sync.sync_all().await.is_err());
    let op_of = |id: &str| {
        let id = id.to_owned();
        let sync = &sync;
        async move {
            let state = sync.record_state::<Todo>(&id).await.unwrap();
            assert!(state.ops.len() <= 1, "{id}: {:?}", state.ops);
            state.ops.into_iter().next()
        }
    };
    for id in &ids[..2] {
        assert!(op_of(id).await.is_none(), "{id} was acknowledged");
    }
    for id in &ids[2..4] {
        let op = op_of(id).await.unwrap();
        assert_eq!(
            (op.state, op.attempts),
            (OpState::Pending, 1),
            "{id} was tried"
        );
    }
    for id in &ids[4..] {
        let op = op_of(id).await.unwrap();
        assert_eq!(
            (op.state, op.attempts),
            (OpState::Pending, 0),
            "{id} was never sent"
        );
    }
    // Never sent, so a local delete cancels the create: the server never hears of h4.
    sync.delete::<Todo>("h4").await.unwrap();
    let state = sync.record_state::<Todo>("h4").await.unwrap();
    assert!(state.ops.is_empty() && state.meta.is_none(), "{state:?}");

    proxy.heal();
    // h5 is due now; h2 and h3 once their backoff (at most 200 ms here) has passed.
    let (mut pushed, mut failed) = (0, 0);
    let deadline = std::time::Instant::now() + WAIT;
    while pushed < 3 && std::time::Instant::now() < deadline {
        let report = sync.sync_all().await.unwrap();
        pushed += report.pushed;
        failed += report.failed;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((pushed, failed), (3, 0));
    let mut on_server: Vec<String> = server
        .records(ALICE.1, "todos")
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    on_server.sort();
    assert_eq!(on_server, ["h0", "h1", "h2", "h3", "h5"]);
    sync.shutdown().await.unwrap();
}

/// Guards against: a connectivity check that only exists on paper. `ProbeConnectivity` asks
/// the server's health endpoint: a stopped server turns the client offline (runs are skipped,
/// not failures, and the save stays queued), and the server coming back turns it online, which
/// pushes the queued save without any call from the application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_connectivity_follows_the_server_and_syncs_when_it_returns() {
    let mut server = Server::start().await;
    let db = ClientDb::new();
    let sync = client_builder(&server.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .connectivity(offline_sync_kit::ProbeConnectivity::new(
            Duration::from_millis(50),
        ))
        .build()
        .await
        .unwrap();
    assert!(sync.is_online());
    server.stop().await;
    eventually(WAIT, "the probe sees the server gone", || async {
        !sync.is_online()
    })
    .await;
    sync.save(&todo("p1", "made while the server is down"))
        .await
        .unwrap();
    let report = sync.sync_all().await.unwrap();
    assert!(report.skipped, "{report:?}");
    assert_eq!(report.failed, 0);
    let state = sync.record_state::<Todo>("p1").await.unwrap();
    assert_eq!(
        state.ops[0].attempts, 0,
        "an offline run is no failed attempt"
    );

    server.restart().await;
    eventually(
        WAIT,
        "back online, the save is pushed by itself",
        || async { sync.is_online() && server.record(ALICE.1, "todos", "p1").await.is_some() },
    )
    .await;
    sync.shutdown().await.unwrap();
}

/// Guards against: `status.connected` staying true while the server is down because no
/// connectivity was configured. By default the manager follows the outcome of its requests
/// and a probe of the server's health (A, which saves during the outage), and the state of its
/// realtime socket (B, which does nothing): both go offline when the server stops, come back
/// when it restarts, and A's queue drains by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_follows_a_stopped_and_restarted_server_by_default() {
    let mut server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    let mut config = offline_sync_kit::WebSocketConfig::new(format!(
        "{}/ws",
        server.url().replacen("http://", "ws://", 1)
    ));
    config.reconnect_delay = Duration::from_millis(50);
    config.max_reconnect_delay = Duration::from_millis(200);
    let b = client_builder(&server.url(), &db_b, ALICE.1)
        .await
        .model::<Todo>()
        .websocket(config)
        .build()
        .await
        .unwrap();
    b.realtime().unwrap().connect().unwrap();
    eventually(WAIT, "B's socket is open", || async {
        b.realtime().unwrap().is_connected()
    })
    .await;
    a.save(&todo("before", "x")).await.unwrap();
    a.sync_all().await.unwrap();
    assert!(a.status().borrow().connected && b.status().borrow().connected);

    server.stop().await;
    a.save(&todo("during", "saved while the server is down"))
        .await
        .unwrap();
    eventually(WAIT, "A sees the server gone", || async {
        !a.status().borrow().connected
    })
    .await;
    eventually(WAIT, "B sees the server gone", || async {
        !b.status().borrow().connected
    })
    .await;
    assert_eq!(a.status().borrow().pending_changes, 1);

    server.restart().await;
    // A's probes back off while the server is away (up to `retry_max`, 5 s, with jitter), so
    // its first probe after the restart may come 5 s later; on a loaded machine 10 s was
    // once not enough for that and the run after it.
    eventually(2 * WAIT, "both come back", || async {
        a.status().borrow().connected && b.status().borrow().connected
    })
    .await;
    eventually(WAIT, "A's queue drains by itself", || async {
        a.status().borrow().pending_changes == 0
            && server.record(ALICE.1, "todos", "during").await.is_some()
    })
    .await;
    eventually(WAIT, "B gets the record", || async {
        b.get::<Todo>("during").await.unwrap().is_some()
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: deletes that never reach the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_made_offline_reaches_the_server() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let net = ManualConnectivity::new(true);
    let sync = client_builder(&proxy.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .connectivity(net.clone())
        .build()
        .await
        .unwrap();
    sync.save(&todo("d1", "to delete")).await.unwrap();
    sync.sync_all().await.unwrap();
    assert!(server.record(ALICE.1, "todos", "d1").await.is_some());

    net.set_online(false);
    proxy.go_down();
    sync.delete::<Todo>("d1").await.unwrap();
    assert!(
        sync.get::<Todo>("d1").await.unwrap().is_none(),
        "gone locally at once"
    );
    let report = sync.sync_all().await.unwrap();
    assert!(report.skipped, "offline runs are skipped, not failed");
    assert_eq!(sync.status().borrow().failed_changes, 0);

    proxy.heal();
    net.set_online(true);
    eventually(WAIT, "the delete reaches the server", || async {
        server.record(ALICE.1, "todos", "d1").await.is_none()
    })
    .await;
    eventually(WAIT, "nothing pending", || async {
        sync.status().borrow().pending_changes == 0
    })
    .await;
    sync.shutdown().await.unwrap();
}

/// Guards against: a pull cursor moved forward after a failed pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pull_does_not_move_the_cursor() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let writer_db = ClientDb::new();
    let writer = client_builder(&server.url(), &writer_db, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    for i in 0..5 {
        writer.save(&todo(&format!("p{i}"), "x")).await.unwrap();
    }
    writer.sync_all().await.unwrap();

    let db = ClientDb::new();
    let mut options = fast_options();
    options.batch_size = 2;
    let reader = always_online_builder(&proxy.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    let store = reader.store();
    // The first page arrives, then the server goes away before the second.
    proxy
        .fault_next_settled(Fault::OneResponseThenDown, 1)
        .await;
    assert!(reader.pull::<Todo>().await.is_err());
    let cursor = store.cursor(Todo::SCHEMA, None).unwrap();
    let after_first_page = reader.all::<Todo>().await.unwrap();
    assert_eq!(after_first_page.len(), 2, "the first page was applied");
    assert!(
        cursor.is_some(),
        "the cursor covers exactly the applied page"
    );

    proxy.heal();
    let report = reader.pull::<Todo>().await.unwrap();
    assert_eq!(
        report.pulled, 3,
        "the pull resumes after the applied page, nothing refetched or skipped"
    );
    assert_eq!(reader.all::<Todo>().await.unwrap().len(), 5);
    writer.shutdown().await.unwrap();
    reader.shutdown().await.unwrap();
}

/// Guards against: pulled rows overwriting unsynced local edits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_row_never_overwrites_a_pending_edit() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    let mut options = fast_options();
    options.auto_sync = false;
    options.conflict_strategy = ConflictStrategy::ClientWins;
    let b = client_builder(&server.url(), &db_b, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    a.save(&todo("c1", "from a")).await.unwrap();
    a.sync_all().await.unwrap();
    b.sync_all().await.unwrap();

    let mut edited = b.get::<Todo>("c1").await.unwrap().unwrap();
    edited.title = "b's unsynced edit".into();
    b.save(&edited).await.unwrap();

    let mut newer = a.get::<Todo>("c1").await.unwrap().unwrap();
    newer.title = "a's newer title".into();
    a.save(&newer).await.unwrap();
    a.sync_all().await.unwrap();

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
}

async fn two_clients_conflict(strategy: ConflictStrategy) -> (Todo, Todo, serde_json::Value) {
    two_clients_conflict_on(Server::start().await, strategy).await
}

async fn two_clients_conflict_on(
    server: Server,
    strategy: ConflictStrategy,
) -> (Todo, Todo, serde_json::Value) {
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let mut options = fast_options();
    options.auto_sync = false;
    options.conflict_strategy = strategy;
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .options(options.clone())
        .build()
        .await
        .unwrap();
    let b = client_builder(&server.url(), &db_b, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    a.save(&todo("m1", "original")).await.unwrap();
    a.sync_all().await.unwrap();
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

    a.sync_all().await.unwrap();
    let report = b.sync_all().await.unwrap();
    assert!(
        report.conflicts >= 1,
        "b meets a's newer version: {report:?}"
    );
    a.sync_all().await.unwrap();
    let ra = a.get::<Todo>("m1").await.unwrap().unwrap();
    let rb = b.get::<Todo>("m1").await.unwrap().unwrap();
    let rs = server.record(ALICE.1, "todos", "m1").await.unwrap();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    (ra, rb, rs)
}

/// Guards against: conflict policies that exist only in the docs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_server_wins() {
    let (a, b, server) = two_clients_conflict(ConflictStrategy::ServerWins).await;
    assert_eq!(b, a);
    assert_eq!(a.title, "title from a");
    assert_eq!(a.priority, 5);
    assert!(!a.is_completed, "b's edits are dropped");
    assert_eq!(server["title"], "title from a");
}

/// Guards against: a conflict whose current record the server left out of its push answer
/// (sync-server's `max_push_answer_bytes`, here 1 byte: every record after the first is
/// omitted). The client fetches those records and settles the conflicts as usual; it used to
/// take the whole answer as bad and retry the batch forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_whose_record_was_omitted_is_fetched_and_settled() {
    let server = Server::start_with_answer_budget(1).await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let mut options = fast_options();
    options.auto_sync = false;
    options.conflict_strategy = ConflictStrategy::MergeFields;
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .options(options.clone())
        .build()
        .await
        .unwrap();
    let b = client_builder(&server.url(), &db_b, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    let ids = ["o1", "o2", "o3"];
    for id in ids {
        a.save(&todo(id, "original")).await.unwrap();
    }
    a.sync_all().await.unwrap();
    b.sync_all().await.unwrap();
    for id in ids {
        let mut ea = a.get::<Todo>(id).await.unwrap().unwrap();
        ea.priority = 5;
        a.save(&ea).await.unwrap();
        let mut eb = b.get::<Todo>(id).await.unwrap().unwrap();
        eb.is_completed = true;
        b.save(&eb).await.unwrap();
    }
    a.sync_all().await.unwrap();
    let report = b.sync_all().await.unwrap();
    assert_eq!(report.conflicts, 3, "{report:?}");
    a.sync_all().await.unwrap();
    for id in ids {
        let ra = a.get::<Todo>(id).await.unwrap().unwrap();
        let rb = b.get::<Todo>(id).await.unwrap().unwrap();
        assert_eq!(ra, rb, "{id}");
        assert_eq!(
            (ra.priority, ra.is_completed),
            (5, true),
            "{id}: both edits merged"
        );
    }
    assert!(b.failed_ops().await.unwrap().is_empty());
    assert_eq!(b.status().borrow().pending_changes, 0);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: a ClientWins that lets the server copy through; both clients and the
/// server end with b's edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_client_wins() {
    let (a, b, server) = two_clients_conflict(ConflictStrategy::ClientWins).await;
    assert_eq!(b, a);
    assert_eq!(b.title, "title from b");
    assert!(b.is_completed);
    assert_eq!(b.priority, 1, "the client's whole record wins");
    assert_eq!(server["title"], "title from b");
}

/// Guards against: a LastUpdateWins that ignores write times; the later write (the server's
/// copy here) wins everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_last_update_wins() {
    let (a, b, server) = two_clients_conflict(ConflictStrategy::LastUpdateWins).await;
    assert_eq!(b, a);
    // The server's update_at (a's push) is later than b's local edit time? b edited after
    // a's local edit but before a's push: the server copy is newer.
    assert_eq!(server["title"], a.title.as_str());
}

/// Guards against: a MergeFields that picks one side wholesale; edits to different fields
/// are both kept, the same field is settled by its tie-break.
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

/// Guards against: a Custom strategy that is never consulted; the resolver's answer is
/// what both clients and the server end with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_custom_resolver() {
    let (a, b, server) =
        two_clients_conflict(ConflictStrategy::Custom(std::sync::Arc::new(UpperTitle))).await;
    assert_eq!(b, a);
    assert_eq!(a.title, "RESOLVED");
    assert_eq!(server["title"], "RESOLVED");
}

/// Guards against: "require remote" saves that keep the record when the server is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_remote_while_offline_keeps_nothing() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let net = ManualConnectivity::new(true);
    let mut options = fast_options();
    options.save_strategy = SaveStrategy::RequireRemote;
    let sync = client_builder(&proxy.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .connectivity(net.clone())
        .build()
        .await
        .unwrap();

    net.set_online(false);
    let err = sync.save(&todo("r1", "x")).await.unwrap_err();
    assert!(matches!(err, Error::Offline { .. }), "{err}");
    assert!(sync.get::<Todo>("r1").await.unwrap().is_none());

    // Online but the server is unreachable: the error comes back, nothing kept.
    net.set_online(true);
    proxy.go_down();
    assert!(sync.save(&todo("r1", "x")).await.is_err());
    assert!(sync.get::<Todo>("r1").await.unwrap().is_none());
    assert_eq!(sync.status().borrow().pending_changes, 0);

    proxy.heal();
    sync.save(&todo("r1", "x")).await.unwrap();
    let state = sync.record_state::<Todo>("r1").await.unwrap();
    assert!(
        state.meta.unwrap().synced,
        "already on the server when save returns"
    );
    assert!(state.ops.is_empty());
    assert!(server.record(ALICE.1, "todos", "r1").await.is_some());
    sync.shutdown().await.unwrap();
}

/// Guards against: a "wait for remote" delete that deletes locally although the server refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_remote_delete() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let mut options = fast_options();
    options.delete_strategy = DeleteStrategy::WaitForRemote;
    let sync = client_builder(&proxy.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    sync.save(&todo("w1", "x")).await.unwrap();
    sync.sync_all().await.unwrap();

    proxy.go_down();
    assert!(sync.delete::<Todo>("w1").await.is_err());
    assert!(
        sync.get::<Todo>("w1").await.unwrap().is_some(),
        "kept when the remote delete failed"
    );
    proxy.heal();
    sync.delete::<Todo>("w1").await.unwrap();
    assert!(sync.get::<Todo>("w1").await.unwrap().is_none());
    assert!(
        server.record(ALICE.1, "todos", "w1").await.is_none(),
        "deleted remotely before returning"
    );
    assert!(sync
        .record_state::<Todo>("w1")
        .await
        .unwrap()
        .ops
        .is_empty());
    sync.shutdown().await.unwrap();
}

/// Guards against: fetch strategies that all read locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_strategies() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    a.save(&todo("f1", "remote only")).await.unwrap();
    a.sync_all().await.unwrap();
    let mut options = fast_options();
    options.auto_sync = false;
    let b = client_builder(&server.url(), &db_b, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();

    let q = || Query::new().filter(Todo::fields().title.eq("remote only"));
    assert!(b
        .query_with(q(), FetchStrategy::LocalOnly)
        .await
        .unwrap()
        .is_empty());
    let fallback = b
        .query_with(q(), FetchStrategy::LocalWithRemoteFallback)
        .await
        .unwrap();
    assert_eq!(fallback.len(), 1, "remote used because local had nothing");

    // RemoteFirst sees a remote change that local does not have yet.
    let mut changed = a.get::<Todo>("f1").await.unwrap().unwrap();
    changed.priority = 9;
    a.save(&changed).await.unwrap();
    a.sync_all().await.unwrap();
    let local = b
        .query_with(q(), FetchStrategy::LocalWithRemoteFallback)
        .await
        .unwrap();
    assert_eq!(local[0].priority, 1, "local had data, so no remote read");
    let remote = b.query_with(q(), FetchStrategy::RemoteFirst).await.unwrap();
    assert_eq!(remote[0].priority, 9);

    // BackgroundSync answers locally now and refreshes after.
    changed.priority = 10;
    a.save(&changed).await.unwrap();
    a.sync_all().await.unwrap();
    let now = b
        .get_with::<Todo>("f1", FetchStrategy::BackgroundSync)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.priority, 9);
    eventually(WAIT, "background refresh", || async {
        b.get_with::<Todo>("f1", FetchStrategy::LocalOnly)
            .await
            .unwrap()
            .unwrap()
            .priority
            == 10
    })
    .await;

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: reads that fail outright when the network does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_first_falls_back_to_local_when_the_remote_fails() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let sync = client_builder(&proxy.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    sync.save(&todo("l1", "local")).await.unwrap();
    sync.sync_all().await.unwrap();
    proxy.go_down();
    let got = sync
        .get_with::<Todo>("l1", FetchStrategy::RemoteFirst)
        .await
        .unwrap();
    assert_eq!(got.unwrap().title, "local");
    sync.shutdown().await.unwrap();
}

/// Guards against: a periodic sync option that never schedules anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_sync_pulls_without_being_asked() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    let mut options = fast_options();
    options.sync_interval = Duration::from_millis(100);
    let b = client_builder(&server.url(), &db_b, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    b.start_periodic_sync();
    a.save(&todo("per", "periodic")).await.unwrap();
    a.sync_all().await.unwrap();
    eventually(WAIT, "b pulls periodically", || async {
        b.get::<Todo>("per").await.unwrap().is_some()
    })
    .await;
    b.stop_periodic_sync();
    a.save(&todo("per2", "after stop")).await.unwrap();
    a.sync_all().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        b.get::<Todo>("per2").await.unwrap().is_none(),
        "no pull after stop"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: pause flags that the sync loop ignores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let sync = client_builder(&server.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    sync.pause();
    assert!(sync.status().borrow().paused);
    sync.save(&todo("pz", "paused")).await.unwrap();
    let report = sync.sync_all().await.unwrap();
    assert!(report.skipped);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.record(ALICE.1, "todos", "pz").await.is_none(),
        "nothing pushed while paused"
    );
    sync.resume();
    eventually(WAIT, "pushed after resume", || async {
        server.record(ALICE.1, "todos", "pz").await.is_some()
    })
    .await;
    sync.shutdown().await.unwrap();
}

/// Guards against: reconnects that wait for the next write. Going online triggers a sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_to_online_triggers_sync() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    let net = ManualConnectivity::new(false);
    let b = client_builder(&server.url(), &db_b, ALICE.1)
        .await
        .model::<Todo>()
        .connectivity(net.clone())
        .build()
        .await
        .unwrap();
    let mut events = b.events();
    b.save(&todo("from-b", "made offline")).await.unwrap();
    a.save(&todo("from-a", "on the server")).await.unwrap();
    a.sync_all().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(server.record(ALICE.1, "todos", "from-b").await.is_none());

    net.set_online(true);
    next_event(&mut events, SyncEventType::ConnectionEstablished, None).await;
    eventually(WAIT, "b pushed and pulled", || async {
        server.record(ALICE.1, "todos", "from-b").await.is_some()
            && b.get::<Todo>("from-a").await.unwrap().is_some()
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: background work outliving the manager; `shutdown` leaves nothing running
/// and later calls are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_everything() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let sync = client_builder(&server.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    sync.start_periodic_sync();
    sync.shutdown().await.unwrap();
    assert!(matches!(
        sync.save(&todo("x", "y")).await,
        Err(Error::Shutdown)
    ));
    assert!(matches!(sync.sync_all().await, Err(Error::Shutdown)));
}

/// Guards against: remote calls of the replaced package missing here. The seed's remote calls:
/// a page straight from the server, a pull into the
/// store, a pull of one record, and a per-call request override.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_reads_fetch_items_pull_by_id_and_request_override() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    let todos: Vec<Todo> = (0..6)
        .map(|i| todo(&format!("r{i}"), &format!("title {i}")))
        .collect();
    a.save_all(&todos).await.unwrap();
    a.sync_all().await.unwrap();

    let mut options = fast_options();
    options.auto_sync = false;
    let b = client_builder(&server.url(), &db_b, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    let page: Vec<Todo> = b.fetch_items::<Todo>(None, 4, 0).await.unwrap();
    assert_eq!(page.len(), 4, "a page of the requested size");
    assert!(
        b.all::<Todo>().await.unwrap().is_empty(),
        "fetch_items does not store"
    );
    let all = b.fetch_items::<Todo>(None, 100, 0).await.unwrap();
    assert_eq!(all.len(), 6);

    let one = b.pull_by_id::<Todo>("r3").await.unwrap().unwrap();
    assert_eq!(one.title, "title 3");
    assert_eq!(
        b.all::<Todo>().await.unwrap().len(),
        1,
        "pull_by_id stores that record"
    );
    assert!(b.pull_by_id::<Todo>("missing").await.unwrap().is_none());

    // A per-call override of the GET request: a transformer that keeps two items.
    let request = RestRequest::new(RestMethod::Get).response_transformer(|mut body| {
        if let Some(items) = body.get_mut("items").and_then(|v| v.as_array_mut()) {
            items.truncate(2);
        }
        body
    });
    let got: Vec<Todo> = b
        .query_with_request(Query::new(), FetchStrategy::RemoteFirst, Some(request))
        .await
        .unwrap();
    assert_eq!(
        got.len(),
        3,
        "two fetched through the override plus r3 already stored"
    );
    assert_eq!(b.count(Query::<Todo>::new()).await.unwrap(), 3);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: failed operations vanishing. Discarding is the application's
/// explicit choice; the local data stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_failed_drops_only_the_op() {
    let server = Server::start_with(Some(8)).await;
    let db = ClientDb::new();
    let sync = client_builder(&server.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    sync.save(&todo("way-too-long-id", "refused"))
        .await
        .unwrap();
    eventually(WAIT, "refused", || async {
        sync.failed_ops().await.unwrap().len() == 1
    })
    .await;
    let op = sync.failed_ops().await.unwrap().remove(0);
    sync.discard_failed(&op).await.unwrap();
    assert!(sync.failed_ops().await.unwrap().is_empty());
    assert_eq!(sync.status().borrow().failed_changes, 0);
    assert_eq!(
        sync.get::<Todo>("way-too-long-id")
            .await
            .unwrap()
            .unwrap()
            .title,
        "refused"
    );
    assert!(sync
        .record_state::<Todo>("way-too-long-id")
        .await
        .unwrap()
        .ops
        .is_empty());
    sync.shutdown().await.unwrap();
}

/// Guards against: report fields that stay zero. `sync::<T>()` pushes and pulls that model,
/// and its report counts what moved both ways and how long it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_of_one_model_reports_traffic_both_ways_and_its_duration() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let mut options = fast_options();
    options.auto_sync = false;
    let a = client_builder(&server.url(), &db_a, ALICE.1)
        .await
        .model::<Todo>()
        .options(options.clone())
        .build()
        .await
        .unwrap();
    let b = client_builder(&server.url(), &db_b, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    b.save(&todo("from-b", "b")).await.unwrap();
    b.sync::<Todo>().await.unwrap();
    a.save(&todo("from-a", "a")).await.unwrap();
    let report = a.sync::<Todo>().await.unwrap();
    // Its own record comes back at the version it already has: not counted as pulled.
    assert_eq!((report.pushed, report.pulled), (1, 1), "{report:?}");
    assert!(
        report.bytes_sent > 0 && report.bytes_received > 0,
        "{report:?}"
    );
    assert!(report.duration > Duration::ZERO, "{report:?}");
    assert!(a.get::<Todo>("from-b").await.unwrap().is_some());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: a progress figure an app cannot rely on. During a run of 30 pushes in
/// chunks of 5, `status().progress` shows the run's total and a count that only grows, and it
/// is cleared afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_progress_counts_a_run_and_is_cleared_after_it() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync = false;
    options.batch_size = 5;
    options.direction = SyncDirection::PushOnly;
    let sync = client_builder(&server.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    let todos: Vec<Todo> = (0..30).map(|i| todo(&format!("p{i:02}"), "x")).collect();
    sync.save_all(&todos).await.unwrap();
    let mut status = sync.status();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    if let Some(p) = status.borrow_and_update().progress {
                        seen.push(p);
                    }
                }
                _ = &mut stop_rx => break,
            }
        }
        seen
    });
    let report = sync.sync_all().await.unwrap();
    assert_eq!(report.pushed, 30);
    stop_tx.send(()).unwrap();
    let seen = watcher.await.unwrap();
    // The run starts at 0 of 0, then knows its 30 ops.
    assert!(
        seen.iter().any(|p| p.total == 30),
        "progress was shown: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|p| (p.total == 0 && p.done == 0) || (p.total == 30 && p.done <= 30)),
        "{seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done), "{seen:?}");
    assert_eq!(sync.status().borrow().progress, None);
    sync.shutdown().await.unwrap();
}

/// Guards against: a write the server has no room for (its per-user storage quota) being
/// retried forever or lost. It fails alone, stays local and visible, and the writes around
/// it sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_over_the_servers_quota_fails_alone_and_stays_local() {
    let server = Server::start_with_quota(1100).await;
    let db = ClientDb::new();
    let sync = client_builder(&server.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    // Each big record is some 450 bytes on the server, the small one some 150: two big ones
    // fit in 1100, a third does not, and the small one after it does.
    for id in ["big1", "big2", "big3"] {
        sync.save(&todo(id, &"x".repeat(400))).await.unwrap();
    }
    sync.save(&todo("small", "s")).await.unwrap();
    eventually(WAIT, "the refused write failed", || async {
        sync.status().borrow().failed_changes == 1 && sync.status().borrow().pending_changes == 0
    })
    .await;
    let failed = sync.failed_ops().await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].record_id, "big3");
    let error = failed[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("quota"), "{error}");
    let mut on_server: Vec<String> = server
        .records(ALICE.1, "todos")
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    on_server.sort();
    assert_eq!(on_server, ["big1", "big2", "small"]);
    // Kept locally; a retry with still no room fails again rather than vanishing.
    assert!(sync.get::<Todo>("big3").await.unwrap().is_some());
    sync.retry_failed().await.unwrap();
    sync.synchronize(SyncRun::default()).await.unwrap();
    assert_eq!(sync.failed_ops().await.unwrap().len(), 1);
    assert_eq!(server.records(ALICE.1, "todos").await.len(), 3);
    sync.shutdown().await.unwrap();
}

/// A second model for the queue-priority tests: its changes go before `Todo`'s (priority 0).
#[derive(SyncModel, serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "alerts", priority = 5)]
struct Alert {
    #[sync(id)]
    id: String,
    text: String,
}

fn alert(id: &str) -> Alert {
    Alert {
        id: id.to_owned(),
        text: format!("alert {id}"),
    }
}

/// The server's version of record `id` in `collection` (versions come from one sequence, so
/// they give the order in which the server applied the writes).
async fn server_version(server: &Server, collection: &str, id: &str) -> i64 {
    server
        .record(ALICE.1, collection, id)
        .await
        .and_then(|r| r["version"].as_i64())
        .unwrap_or_else(|| panic!("{collection}/{id} is not on the server"))
}

/// Guards against: queue priorities that exist in the store but are never set (every op was
/// queued with priority 0, so the queue went in save order only). Behind a slow server (the
/// proxy keeps the answers back while the first push is out), changes queue up; the next round
/// sends them by priority across models: a save with its own priority 9 first, then the
/// `#[sync(priority = 5)]` model, then the priority-0 saves in the order they were made, even
/// though the high ones were saved last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_changes_are_pushed_first_across_models_behind_a_slow_server() {
    assert_eq!(<Alert as SyncModel>::PRIORITY, 5);
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let sync = client_builder(&proxy.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .model::<Alert>()
        .build()
        .await
        .unwrap();

    proxy.hold();
    sync.save(&todo("first", "goes out alone")).await.unwrap();
    eventually(
        WAIT,
        "the first push reached the server (its answer is held)",
        || async { server.record(ALICE.1, "todos", "first").await.is_some() },
    )
    .await;
    sync.save(&todo("low-1", "priority 0")).await.unwrap();
    sync.save(&todo("low-2", "priority 0")).await.unwrap();
    sync.save(&alert("alert")).await.unwrap();
    sync.save_with(
        &todo("urgent", "its own priority"),
        WriteOptions::new().priority(9),
    )
    .await
    .unwrap();
    let queued = sync.record_state::<Todo>("urgent").await.unwrap();
    assert_eq!(queued.ops[0].priority, 9);
    let queued = sync.record_state::<Alert>("alert").await.unwrap();
    assert_eq!(queued.ops[0].priority, 5);
    proxy.release();

    eventually(WAIT, "everything is pushed", || async {
        sync.status().borrow().pending_changes == 0
    })
    .await;
    let order = [
        server_version(&server, "todos", "first").await,
        server_version(&server, "todos", "urgent").await,
        server_version(&server, "alerts", "alert").await,
        server_version(&server, "todos", "low-1").await,
        server_version(&server, "todos", "low-2").await,
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "server versions of first, urgent (9), alert (5), low-1, low-2 (0): {order:?}"
    );
    sync.shutdown().await.unwrap();
}

/// Guards against: a per-model priority set in `ModelConfig` that loses to the derive's, and a
/// delete queued without its priority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_config_priority_replaces_the_derives_and_deletes_carry_theirs() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync = false;
    let sync = client_builder(&server.url(), &db, ALICE.1)
        .await
        .options(options)
        .model_with::<Todo>(ModelConfig::new().priority(3))
        .model_with::<Alert>(ModelConfig::new().priority(-1))
        .build()
        .await
        .unwrap();
    sync.save(&alert("a1")).await.unwrap();
    sync.save(&todo("t1", "before the alert")).await.unwrap();
    let state = sync.record_state::<Todo>("t1").await.unwrap();
    assert_eq!(state.ops[0].priority, 3);
    let state = sync.record_state::<Alert>("a1").await.unwrap();
    assert_eq!(state.ops[0].priority, -1);
    let report = sync.sync_all().await.unwrap();
    assert_eq!(report.pushed, 2);
    assert!(
        server_version(&server, "todos", "t1").await
            < server_version(&server, "alerts", "a1").await,
        "priority 3 before priority -1"
    );

    sync.delete_with::<Todo>("t1", WriteOptions::new().priority(7))
        .await
        .unwrap();
    let state = sync.record_state::<Todo>("t1").await.unwrap();
    assert_eq!(state.ops[0].priority, 7);
    sync.delete::<Alert>("a1").await.unwrap();
    let state = sync.record_state::<Alert>("a1").await.unwrap();
    assert_eq!(state.ops[0].priority, -1, "the model's priority");
    sync.save_all_with(
        &[todo("m1", "many"), todo("m2", "many")],
        WriteOptions::new().priority(4),
    )
    .await
    .unwrap();
    let state = sync.record_state::<Todo>("m2").await.unwrap();
    assert_eq!(state.ops[0].priority, 4);
    sync.shutdown().await.unwrap();
}

/// Guards against: `SyncStarted` / `SyncCompleted` events and `status.syncing` that nothing
/// checked. While a run waits on a slow server the status says it is syncing; the run emits
/// `SyncStarted`, then `SyncCompleted` with the report the call returned, and the status goes
/// back to not syncing with a last sync time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_emits_started_and_completed_and_shows_syncing_meanwhile() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync = false;
    let sync = client_builder(&proxy.url(), &db, ALICE.1)
        .await
        .options(options)
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    sync.save(&todo("s1", "synced by hand")).await.unwrap();
    assert!(!sync.status().borrow().syncing);
    assert!(sync.status().borrow().last_sync_time.is_none());
    let mut events = sync.events();

    proxy.hold();
    let running = tokio::spawn({
        let sync = sync.clone();
        async move { sync.sync_all().await }
    });
    let started = next_event(&mut events, SyncEventType::SyncStarted, None).await;
    assert_eq!(started, offline_sync_kit::SyncEvent::SyncStarted);
    eventually(WAIT, "the status shows the run", || async {
        let status = sync.status().borrow().clone();
        status.syncing && status.progress.is_some_and(|p| p.total == 1)
    })
    .await;
    proxy.release();
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.pushed, 1);
    assert!(report.is_success(), "{report:?}");
    match next_event(&mut events, SyncEventType::SyncCompleted, None).await {
        offline_sync_kit::SyncEvent::SyncCompleted { report: emitted } => {
            assert_eq!(emitted, report);
        }
        other => panic!("not a completion: {other:?}"),
    }
    let status = sync.status().borrow().clone();
    assert!(!status.syncing, "{status:?}");
    assert!(status.progress.is_none());
    assert!(status.last_sync_time.is_some());
    sync.shutdown().await.unwrap();
}

/// Guards against: a report that says nothing about refused ops, and a failed or skipped run
/// that looks like a success. Two of three saves are refused by the server (ids too long for
/// it): the report counts them, `is_success` is false; the next run, with nothing refused, is
/// a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_counts_refused_ops_and_is_no_success() {
    let server = Server::start_with(Some(12)).await;
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync = false;
    let sync = client_builder(&server.url(), &db, ALICE.1)
        .await
        .options(options)
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    sync.save(&todo("ok", "fits")).await.unwrap();
    sync.save(&todo("an-id-longer-than-twelve", "refused"))
        .await
        .unwrap();
    sync.save(&todo("another-id-over-twelve", "refused"))
        .await
        .unwrap();
    let report = sync.sync_all().await.unwrap();
    assert_eq!((report.pushed, report.failed), (1, 2), "{report:?}");
    assert_eq!(report.synced(), 1);
    assert!(!report.is_success(), "{report:?}");
    assert_eq!(sync.failed_ops().await.unwrap().len(), 2);

    let again = sync.sync_all().await.unwrap();
    assert_eq!(again.failed, 0, "failed ops stay failed, not refused again");
    assert!(again.is_success(), "{again:?}");
    sync.shutdown().await.unwrap();
}

/// Guards against: `synchronize` on a paused or offline manager that returns `Ok` and is taken
/// for a sync. The report is skipped and not a success; after resuming, and back online, the
/// same call is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_or_offline_runs_are_skipped_and_no_success() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let net = ManualConnectivity::new(true);
    let mut options = fast_options();
    options.auto_sync = false;
    let sync = client_builder(&server.url(), &db, ALICE.1)
        .await
        .options(options)
        .model::<Todo>()
        .connectivity(net.clone())
        .build()
        .await
        .unwrap();
    sync.save(&todo("k1", "waits")).await.unwrap();

    sync.pause();
    let report = sync
        .synchronize(SyncRun::new(SyncDirection::PushThenPull))
        .await
        .unwrap();
    assert!(report.skipped && !report.is_success(), "{report:?}");
    assert_eq!(report.pushed, 0);
    sync.resume();

    net.set_online(false);
    eventually(WAIT, "offline", || async { !sync.is_online() }).await;
    let report = sync.sync_all().await.unwrap();
    assert!(report.skipped && !report.is_success(), "{report:?}");
    assert_eq!(sync.status().borrow().pending_changes, 1);

    net.set_online(true);
    eventually(WAIT, "online", || async { sync.is_online() }).await;
    let report = sync
        .synchronize(SyncRun::new(SyncDirection::PushThenPull))
        .await
        .unwrap();
    assert!(!report.skipped && report.is_success(), "{report:?}");
    assert!(server.record(ALICE.1, "todos", "k1").await.is_some());
    sync.shutdown().await.unwrap();
}

/// Guards against: `fetch_items` parameters that never reach the server. Six records pushed by
/// one device; another reads pages straight from the server: after a cursor (`since`, the
/// version of the second record), skipping `offset` records, at most `limit`; nothing is
/// stored locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_items_reads_after_a_cursor_skipping_an_offset() {
    let server = Server::start().await;
    let (db_writer, db_reader) = (ClientDb::new(), ClientDb::new());
    let writer = client_builder(&server.url(), &db_writer, ALICE.1)
        .await
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    for n in 1..=6 {
        // One push each, so the versions follow the names.
        writer.save(&todo(&format!("f{n}"), "page")).await.unwrap();
        writer.sync_all().await.unwrap();
    }
    let mut options = fast_options();
    options.auto_sync = false;
    let reader = client_builder(&server.url(), &db_reader, ALICE.1)
        .await
        .options(options)
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    let ids = |items: Vec<Todo>| items.into_iter().map(|t| t.id).collect::<Vec<_>>();

    let after_second = server_version(&server, "todos", "f2").await.to_string();
    let page = reader
        .fetch_items::<Todo>(Some(&after_second), 2, 1)
        .await
        .unwrap();
    assert_eq!(ids(page), ["f4", "f5"], "after f2, skip f3, two");
    let page = reader
        .fetch_items::<Todo>(Some(&after_second), 10, 0)
        .await
        .unwrap();
    assert_eq!(ids(page), ["f3", "f4", "f5", "f6"]);
    let page = reader.fetch_items::<Todo>(None, 10, 4).await.unwrap();
    assert_eq!(ids(page), ["f5", "f6"]);
    assert!(
        reader.all::<Todo>().await.unwrap().is_empty(),
        "fetch_items does not store"
    );
    writer.shutdown().await.unwrap();
    reader.shutdown().await.unwrap();
}
