//! Several users on one device (issue 14, point 1): a store belongs to one user, `SyncAccounts`
//! gives each user their own manager and store, and signing out or switching never leaks one
//! user's rows, ops or status into another's, nor sends anything of a signed-out user.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use offline_sync_kit::store::LocalStore;
use offline_sync_kit::{
    Credentials, Error, ManualConnectivity, SignOut, SqliteAccountStores, SyncAccounts,
    SyncDirection, SyncManager, SyncRun, SyncState, WebSocketConfig,
};
use support::{
    client_builder, eventually, fast_options, store_at, todo, ClientDb, FaultProxy, Server, Todo,
    ALICE, BOB,
};

fn accounts_at(dir: &std::path::Path, url: &str) -> SyncAccounts {
    let url = url.to_owned();
    SyncAccounts::new(SqliteAccountStores::new(dir), move |_user| {
        SyncManager::builder()
            .base_url(url.clone())
            .connectivity(ManualConnectivity::new(true))
            .options(fast_options())
            .model::<Todo>()
    })
}

async fn ids(manager: &SyncManager) -> Vec<String> {
    let mut ids: Vec<String> = manager
        .all::<Todo>()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    ids.sort();
    ids
}

async fn server_ids(server: &Server, token: &str) -> Vec<String> {
    let mut ids: Vec<String> = server
        .records(token, "todos")
        .await
        .iter()
        .filter(|r| r["deleted"] != serde_json::json!(true))
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Guards against: a store written by user A, opened again as user B (same file, B's token),
/// showing A's rows to B and pushing A's queued todo into B's server account.
#[tokio::test]
async fn a_store_of_one_user_is_refused_to_another_and_nothing_leaks() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let alice = client_builder(&server.url(), &db, ALICE.1)
        .await
        .connectivity(ManualConnectivity::new(false))
        .user_id(ALICE.0)
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    alice.save(&todo("a1", "alice's secret")).await.unwrap();
    alice.shutdown().await.unwrap();
    drop(alice);

    for user in [Some(BOB.0), None] {
        let builder = client_builder(&server.url(), &db, BOB.1)
            .await
            .connectivity(ManualConnectivity::new(true))
            .model::<Todo>();
        let builder = match user {
            Some(user) => builder.user_id(user),
            None => builder,
        };
        let err = builder.build().await.unwrap_err();
        match &err {
            Error::StoreOwnedByAnotherUser { owner, requested } => {
                assert_eq!(owner, ALICE.0);
                assert_eq!(requested.as_deref(), user);
            }
            other => panic!("expected StoreOwnedByAnotherUser, got {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        server_ids(&server, BOB.1).await.is_empty(),
        "bob got alice's data"
    );

    // Alice herself still opens it, with her todo queued, and it goes to her account.
    let alice = client_builder(&server.url(), &db, ALICE.1)
        .await
        .connectivity(ManualConnectivity::new(true))
        .user_id(ALICE.0)
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    assert_eq!(alice.status().borrow().pending_changes, 1);
    assert!(alice.sync_all().await.unwrap().is_success());
    assert_eq!(server_ids(&server, ALICE.1).await, vec!["a1"]);
    assert!(server_ids(&server, BOB.1).await.is_empty());
}

/// Guards against: a store from before owners were recorded (ops of user A, no owner row)
/// being taken over by user B.
#[tokio::test]
async fn a_store_from_before_owners_belongs_to_the_users_its_ops_name() {
    let db = ClientDb::new();
    let store = store_at(&db.path()).await;
    {
        // What a store of an earlier build holds: an op of alice, no owner.
        let manager = SyncManager::builder()
            .base_url("http://127.0.0.1:9")
            .store(store)
            .connectivity(ManualConnectivity::new(false))
            .model::<Todo>()
            .build()
            .await
            .unwrap();
        let store = manager.store();
        assert_eq!(store.claim_owner(None).unwrap(), None, "anonymous, unowned");
        manager.shutdown().await.unwrap();
    }
    let raw = DieselStoreProbe::open(&db.path());
    raw.exec("INSERT INTO _sync_outbox (model_type, record_id, user_id, op, idempotency_key, created_at) \
              VALUES ('todo', 'x', 'alice', 'create', 'k1', '2026-01-01T00:00:00.000000000Z')");
    let store = store_at(&db.path()).await;
    assert_eq!(
        store.claim_owner(Some(BOB.0)).unwrap().as_deref(),
        Some(ALICE.0)
    );
    assert_eq!(store.claim_owner(None).unwrap().as_deref(), Some(ALICE.0));
    assert_eq!(store.claim_owner(Some(ALICE.0)).unwrap(), None);
    // Now recorded: bob is still refused.
    assert_eq!(
        store.claim_owner(Some(BOB.0)).unwrap().as_deref(),
        Some(ALICE.0)
    );
}

/// Plain SQL on a store file, for the test above.
struct DieselStoreProbe(std::sync::Mutex<diesel::SqliteConnection>);

impl DieselStoreProbe {
    fn open(path: &std::path::Path) -> DieselStoreProbe {
        use diesel::Connection;
        DieselStoreProbe(std::sync::Mutex::new(
            diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap(),
        ))
    }

    fn exec(&self, sql: &str) {
        use diesel::RunQueryDsl;
        diesel::sql_query(sql)
            .execute(&mut *self.0.lock().unwrap())
            .unwrap();
    }
}

/// Two users on one device: rows, ops, queries and status are each their own, and each
/// user's changes reach that user's server account only.
#[tokio::test]
async fn two_users_never_see_each_others_rows_ops_or_status() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let accounts = accounts_at(dir.path(), &server.url());
    let alice_status = accounts.status_for_user(ALICE.0);
    assert_eq!(alice_status.borrow().state, SyncState::Paused, "signed out");

    let alice = accounts
        .sign_in(ALICE.0, Credentials::bearer(ALICE.1))
        .await
        .unwrap();
    alice.pause();
    alice.save(&todo("a1", "alice one")).await.unwrap();
    alice
        .save(&todo("shared-id", "alice's copy"))
        .await
        .unwrap();
    assert_eq!(accounts.current_user().as_deref(), Some(ALICE.0));

    let bob = accounts
        .switch_user(BOB.0, Credentials::bearer(BOB.1))
        .await
        .unwrap();
    assert_eq!(accounts.current_user().as_deref(), Some(BOB.0));
    assert_eq!(accounts.signed_in().await, vec![BOB.0.to_owned()]);
    assert!(ids(&bob).await.is_empty(), "bob sees alice's rows");
    assert_eq!(
        bob.status().borrow().pending_changes,
        0,
        "bob sees alice's ops"
    );
    assert!(bob.failed_ops().await.unwrap().is_empty());
    bob.save(&todo("b1", "bob one")).await.unwrap();
    bob.save(&todo("shared-id", "bob's copy")).await.unwrap();
    let report = accounts
        .synchronize_user(BOB.0, SyncRun::new(SyncDirection::PushThenPull))
        .await
        .unwrap();
    assert_eq!(report.pushed, 2);
    assert_eq!(server_ids(&server, BOB.1).await, vec!["b1", "shared-id"]);
    assert!(
        server_ids(&server, ALICE.1).await.is_empty(),
        "alice's ops went out while she was signed out"
    );

    // Alice's status is hers: paused while signed out, her two ops still counted.
    assert_eq!(alice_status.borrow().state, SyncState::Paused);
    assert_eq!(alice_status.borrow().pending_changes, 2);
    match accounts
        .synchronize_user(ALICE.0, SyncRun::new(SyncDirection::PushThenPull))
        .await
    {
        Err(Error::NotSignedIn { user }) => assert_eq!(user, ALICE.0),
        other => panic!("a signed-out user synced: {other:?}"),
    }

    let alice = accounts
        .switch_user(ALICE.0, Credentials::bearer(ALICE.1))
        .await
        .unwrap();
    assert_eq!(ids(&alice).await, vec!["a1", "shared-id"]);
    assert_eq!(
        alice.get::<Todo>("shared-id").await.unwrap().unwrap().title,
        "alice's copy"
    );
    assert!(alice.sync_all().await.unwrap().is_success());
    assert_eq!(server_ids(&server, ALICE.1).await, vec!["a1", "shared-id"]);
    let bobs = server.record(BOB.1, "todos", "shared-id").await.unwrap();
    assert_eq!(bobs["title"], "bob's copy");
    assert_eq!(alice_status.borrow().pending_changes, 0);
    assert_eq!(alice_status.borrow().state, SyncState::Completed);

    // Several accounts at once: bob signs in beside alice, each syncs their own.
    let bob = accounts
        .sign_in(BOB.0, Credentials::bearer(BOB.1))
        .await
        .unwrap();
    assert_eq!(
        accounts.signed_in().await,
        vec![ALICE.0.to_owned(), BOB.0.to_owned()]
    );
    assert_eq!(ids(&bob).await, vec!["b1", "shared-id"]);
    assert_eq!(accounts.status_for_user(BOB.0).borrow().pending_changes, 0);
}

/// Signing out with `WipeLocalData` leaves nothing of the user on the device; the other
/// user's data stays.
#[tokio::test]
async fn sign_out_with_wipe_leaves_no_row_of_that_user() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let accounts = accounts_at(dir.path(), &server.url());
    let bob = accounts
        .sign_in(BOB.0, Credentials::bearer(BOB.1))
        .await
        .unwrap();
    bob.save(&todo("b1", "bob keeps this")).await.unwrap();
    let alice = accounts
        .switch_user(ALICE.0, Credentials::bearer(ALICE.1))
        .await
        .unwrap();
    alice.pause();
    for n in 0..20 {
        alice
            .save(&todo(&format!("a{n}"), "WIPE-ME-alice-marker"))
            .await
            .unwrap();
    }
    assert!(accounts.has_local_data(ALICE.0).await.unwrap());
    accounts.sign_out(SignOut::WipeLocalData).await.unwrap();
    assert_eq!(accounts.current_user(), None);
    assert!(!accounts.has_local_data(ALICE.0).await.unwrap());
    // No file on the device holds a byte of alice's rows.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let marker = b"WIPE-ME-alice-marker";
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker),
            "a file still holds alice's rows"
        );
    }
    // Her old manager refuses to work; nothing of hers was or will be sent.
    assert!(matches!(
        alice.save(&todo("late", "after sign-out")).await,
        Err(Error::Shutdown)
    ));
    assert!(server_ids(&server, ALICE.1).await.is_empty());
    // Bob's data is still there; alice starts afresh.
    let bob = accounts
        .switch_user(BOB.0, Credentials::bearer(BOB.1))
        .await
        .unwrap();
    assert_eq!(ids(&bob).await, vec!["b1"]);
    let alice = accounts
        .switch_user(ALICE.0, Credentials::bearer(ALICE.1))
        .await
        .unwrap();
    assert!(ids(&alice).await.is_empty());
    assert_eq!(alice.status().borrow().pending_changes, 0);
}

/// A switch while a push runs: the run stops between two chunks, nothing half applied, and
/// the rest of the queue goes out with the owner's credentials at their next sign-in.
#[tokio::test]
async fn a_switch_during_a_running_sync_loses_nothing_and_leaks_nothing() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let accounts = accounts_at(dir.path(), &proxy.url());
    let alice = accounts
        .sign_in(ALICE.0, Credentials::bearer(ALICE.1))
        .await
        .unwrap();
    alice.pause();
    let all: Vec<Todo> = (0..100)
        .map(|n| todo(&format!("a{n:03}"), "queued"))
        .collect();
    alice.save_all(&all).await.unwrap();
    alice.resume();
    proxy.hold();
    let run = tokio::spawn({
        let accounts = accounts.clone();
        async move {
            accounts
                .synchronize_user(
                    ALICE.0,
                    SyncRun::new(SyncDirection::PushThenPull).batch_size(10),
                )
                .await
        }
    });
    // The first chunk reached the server; its answer is held back.
    eventually(
        Duration::from_secs(10),
        "the first chunk reached the server",
        || async { !server_ids(&server, ALICE.1).await.is_empty() },
    )
    .await;
    let switch = tokio::spawn({
        let accounts = accounts.clone();
        async move {
            accounts
                .switch_user(BOB.0, Credentials::bearer(BOB.1))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.release();
    let bob = switch.await.unwrap().unwrap();
    // The run ended (stopped early or finished), without an error of its own making.
    let report = run.await.unwrap();
    assert!(matches!(report, Ok(_) | Err(Error::Shutdown)), "{report:?}");
    let sent_so_far = server_ids(&server, ALICE.1).await.len();
    assert!(sent_so_far < 100, "the run did not stop at the switch");
    assert!(ids(&bob).await.is_empty());
    assert!(bob.sync_all().await.unwrap().is_success());
    assert!(ids(&bob).await.is_empty(), "bob pulled alice's records");
    assert!(
        server_ids(&server, BOB.1).await.is_empty(),
        "alice's ops went out as bob"
    );

    let alice = accounts
        .switch_user(ALICE.0, Credentials::bearer(ALICE.1))
        .await
        .unwrap();
    assert!(alice.sync_all().await.unwrap().is_success());
    assert_eq!(alice.status().borrow().pending_changes, 0);
    let expected: Vec<String> = all.iter().map(|t| t.id.clone()).collect();
    assert_eq!(server_ids(&server, ALICE.1).await, expected);
    assert_eq!(ids(&alice).await, expected);
}

/// A switch while a realtime session runs: the old user's socket closes, and what the server
/// then sends that user reaches neither the new user's store nor the old one's until the old
/// user signs in again (and then it arrives).
#[tokio::test]
async fn a_switch_during_a_realtime_session_closes_it_and_leaks_nothing() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let ws = format!("ws://{}/ws", server.addr);
    let accounts = SyncAccounts::new(SqliteAccountStores::new(dir.path()), move |_user| {
        SyncManager::builder()
            .base_url(url.clone())
            .connectivity(ManualConnectivity::new(true))
            .options(fast_options())
            .websocket(WebSocketConfig::new(ws.clone()))
            .model::<Todo>()
    });
    let alice = accounts
        .sign_in(ALICE.0, Credentials::bearer(ALICE.1))
        .await
        .unwrap();
    let realtime = alice.realtime().unwrap();
    realtime.connect().unwrap();
    eventually(
        Duration::from_secs(10),
        "alice's socket is open",
        || async { realtime.is_connected() },
    )
    .await;
    // Alice's other device writes; her realtime session here receives it.
    let other_db = ClientDb::new();
    let other = client_builder(&server.url(), &other_db, ALICE.1)
        .await
        .connectivity(ManualConnectivity::new(true))
        .user_id(ALICE.0)
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    other.save(&todo("r1", "before the switch")).await.unwrap();
    other.sync_all().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "r1 arrived in realtime",
        || async { alice.get::<Todo>("r1").await.ok().flatten().is_some() },
    )
    .await;

    let bob = accounts
        .switch_user(BOB.0, Credentials::bearer(BOB.1))
        .await
        .unwrap();
    assert!(!realtime.is_connected(), "alice's socket stayed open");
    let bob_realtime = bob.realtime().unwrap();
    bob_realtime.connect().unwrap();
    eventually(Duration::from_secs(10), "bob's socket is open", || async {
        bob_realtime.is_connected()
    })
    .await;
    other.save(&todo("r2", "after the switch")).await.unwrap();
    other.sync_all().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        ids(&bob).await.is_empty(),
        "alice's realtime change reached bob"
    );
    let alice_store = Arc::clone(&alice.store());
    {
        let r2 = alice_store.get(<Todo as offline_sync_kit::SyncModel>::SCHEMA, "r2");
        assert!(
            r2.unwrap().is_none(),
            "a signed-out session applied a change"
        );
    }
    drop(alice_store);

    let alice = accounts
        .switch_user(ALICE.0, Credentials::bearer(ALICE.1))
        .await
        .unwrap();
    alice.sync_all().await.unwrap();
    assert_eq!(ids(&alice).await, vec!["r1", "r2"]);
    other.shutdown().await.unwrap();
}

/// The status walks the states an application shows: idle, syncing, completed, failed,
/// paused; the progress fraction goes from 0 to 1.
#[tokio::test]
async fn the_status_states_follow_the_runs() {
    let server = Server::start_with_quota(4 * 1024).await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    // Runs only when the test asks: no background push racing its checks.
    let mut options = fast_options();
    options.auto_sync = false;
    let manager = client_builder(&proxy.url(), &db, ALICE.1)
        .await
        .connectivity(ManualConnectivity::new(true))
        .options(options)
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    let mut status = manager.status();
    assert_eq!(status.borrow().state, SyncState::Idle);
    assert_eq!(status.borrow().progress_fraction(), 0.0);
    manager.pause();
    assert_eq!(status.borrow().state, SyncState::Paused);
    manager.save(&todo("s1", "one")).await.unwrap();
    let report = manager.sync_all().await.unwrap();
    assert!(report.skipped);
    assert_eq!(status.borrow().state, SyncState::Paused);
    manager.resume();
    assert_eq!(status.borrow().state, SyncState::Idle);

    proxy.hold();
    let run = tokio::spawn({
        let manager = manager.clone();
        async move { manager.sync_all().await }
    });
    status
        .wait_for(|s| s.state == SyncState::Syncing)
        .await
        .unwrap();
    assert!(status.borrow().progress_fraction() < 1.0);
    proxy.release();
    run.await.unwrap().unwrap();
    assert_eq!(status.borrow().state, SyncState::Completed);
    assert_eq!(status.borrow().progress_fraction(), 1.0);

    // An op over the user's quota is refused for good: the run completed with a failure.
    let mut big = todo("s2", "too big");
    big.description = "x".repeat(8 * 1024);
    manager.save(&big).await.unwrap();
    let report = manager.sync_all().await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(status.borrow().state, SyncState::Failed);
    manager
        .discard_failed(&manager.failed_ops().await.unwrap()[0])
        .await
        .unwrap();

    // The server unreachable: the op is put back for a retry, and the run did not complete.
    manager.save(&todo("s3", "three")).await.unwrap();
    proxy.go_down();
    let report = manager.sync_all().await;
    assert!(
        report.is_err() || matches!(&report, Ok(r) if r.retried > 0),
        "{report:?}"
    );
    assert_eq!(status.borrow().state, SyncState::Failed);
    proxy.heal();
    assert!(manager.sync_all().await.unwrap().is_success());
    assert_eq!(status.borrow().state, SyncState::Completed);
}
