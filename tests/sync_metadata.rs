//! Sync metadata and checksums (issue 14, points 3 to 5): the local metadata the engine keeps,
//! sync-server's per-user devices and collection checksums, their comparison, clearing either,
//! and `verify`, which finds and repairs a record changed behind the client's back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use diesel::{Connection, RunQueryDsl};
use offline_sync_kit::{
    ConflictStrategy, ManualConnectivity, MetadataComparison, SyncManager, SyncState,
};
use support::{client_builder, fast_options, todo, ClientDb, FaultProxy, Server, Todo, ALICE};

async fn client(url: &str, db: &ClientDb) -> SyncManager {
    let mut options = fast_options();
    options.auto_sync = false;
    options.conflict_strategy = ConflictStrategy::ServerWins;
    client_builder(url, db, ALICE.1)
        .await
        .connectivity(ManualConnectivity::new(true))
        .options(options)
        .user_id(ALICE.0)
        .model::<Todo>()
        .build()
        .await
        .unwrap()
}

fn server_db(server: &Server) -> diesel::SqliteConnection {
    let path = server.dir.path().join("server.db");
    diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap()
}

#[tokio::test]
async fn local_metadata_fields_change_as_syncs_run() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let a = client(&proxy.url(), &db).await;
    let before = a.sync_metadata().await.unwrap();
    assert!(before.is_never_synced());
    assert!(!before.has_conflicts());
    assert_eq!(before.user_id.as_deref(), Some(ALICE.0));
    assert_eq!(before.device_id, a.device_id());
    assert!(!before.device_id.is_empty());
    assert_eq!(before.status, SyncState::Idle);
    let todos = &before.entities["todo"];
    assert_eq!(todos.collection, "todos");
    assert_eq!((todos.count, todos.pending, todos.known), (0, 0, 0));
    assert_eq!(todos.last_pulled_cursor, None);
    assert_eq!(todos.last_pulled_at, None);
    assert_eq!(todos.checksum, "0000000000000000");
    assert_eq!(before.last_sync_duration, None);

    a.save(&todo("t1", "one")).await.unwrap();
    a.save(&todo("t2", "two")).await.unwrap();
    let queued = a.sync_metadata().await.unwrap();
    assert_eq!(queued.entities["todo"].count, 2);
    assert_eq!(queued.entities["todo"].pending, 2);
    assert_eq!(
        queued.data_hash, before.data_hash,
        "nothing the remote versioned yet"
    );

    assert!(a.sync_all().await.unwrap().is_success());
    let synced = a.sync_metadata().await.unwrap();
    assert!(!synced.is_never_synced());
    assert!(synced.last_sync_time.is_some());
    assert_eq!(synced.last_successful_sync_time, synced.last_sync_time);
    assert!(synced.last_sync_duration.is_some());
    assert_eq!(synced.status, SyncState::Completed);
    assert_eq!(synced.last_error, None);
    let todos = &synced.entities["todo"];
    assert_eq!((todos.count, todos.pending, todos.known), (2, 0, 2));
    assert!(todos.last_pulled_cursor.is_some());
    assert!(todos.last_pulled_at.is_some());
    assert_ne!(todos.checksum, "0000000000000000");
    assert_ne!(synced.data_hash, before.data_hash);
    // The checksum equals the server's, and both sides compare in sync.
    let remote = a.remote_sync_metadata().await.unwrap();
    assert_eq!(remote.collections["todos"].checksum, todos.checksum);
    assert_eq!(remote.collections["todos"].records, 2);
    assert_eq!(synced.compare(&remote), MetadataComparison::InSync);

    // A conflict is counted.
    let other_db = ClientDb::new();
    let b = client(&server.url(), &other_db).await;
    b.sync_all().await.unwrap();
    let mut theirs = b.get::<Todo>("t1").await.unwrap().unwrap();
    theirs.title = "theirs".into();
    b.save(&theirs).await.unwrap();
    b.sync_all().await.unwrap();
    let mut mine = a.get::<Todo>("t1").await.unwrap().unwrap();
    mine.title = "mine".into();
    a.save(&mine).await.unwrap();
    let report = a.sync_all().await.unwrap();
    assert_eq!(report.conflicts, 1, "{report:?}");
    let conflicted = a.sync_metadata().await.unwrap();
    assert_eq!(conflicted.conflict_count, 1);
    assert!(conflicted.has_conflicts());

    // A failed run: the error, the retries, and the last success unchanged.
    a.save(&todo("t3", "three")).await.unwrap();
    proxy.go_down();
    let _ = a.sync_all().await;
    let failed = a.sync_metadata().await.unwrap();
    assert!(
        failed.last_error.is_some() || failed.retry_count > 0,
        "{failed:?}"
    );
    assert_eq!(failed.status, SyncState::Failed);
    assert_eq!(
        failed.last_successful_sync_time,
        conflicted.last_successful_sync_time
    );
    assert!(failed.last_sync_time > conflicted.last_sync_time);
    assert_eq!(failed.entities["todo"].pending, 1);
    proxy.heal();

    // Custom values are the application's; clearing the sync metadata keeps them.
    a.set_custom_metadata("theme", "dark").await.unwrap();
    assert_eq!(a.sync_metadata().await.unwrap().custom["theme"], "dark");
    a.clear_sync_metadata().await.unwrap();
    let cleared = a.sync_metadata().await.unwrap();
    assert!(cleared.is_never_synced());
    assert_eq!(cleared.conflict_count, 0);
    assert_eq!(cleared.entities["todo"].last_pulled_cursor, None);
    assert_eq!(cleared.custom["theme"], "dark");
    assert_eq!(cleared.device_id, before.device_id, "the device id stays");
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn remote_metadata_lists_both_devices_of_a_user_and_compares() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client(&server.url(), &db_a).await;
    let b = client(&server.url(), &db_b).await;
    assert_ne!(a.device_id(), b.device_id());
    a.save(&todo("t1", "from a")).await.unwrap();
    a.sync_all().await.unwrap();
    b.sync_all().await.unwrap();
    let remote = b.remote_sync_metadata().await.unwrap();
    assert_eq!(remote.user, ALICE.0);
    let mut ids: Vec<&str> = remote.devices.iter().map(|d| d.id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = vec![a.device_id(), b.device_id()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    for device in &remote.devices {
        assert!(
            device.last_successful_sync.is_some(),
            "device {} finished a sync",
            device.id
        );
    }
    assert!(remote.last_successful_sync.is_some());
    // The device list is kept locally too.
    assert_eq!(b.sync_metadata().await.unwrap().devices.len(), 2);

    assert_eq!(
        a.sync_metadata().await.unwrap().compare(&remote),
        MetadataComparison::InSync
    );
    a.save(&todo("t2", "offline on a")).await.unwrap();
    let remote = a.remote_sync_metadata().await.unwrap();
    assert_eq!(
        a.sync_metadata().await.unwrap().compare(&remote),
        MetadataComparison::LocalNewer
    );
    a.sync_all().await.unwrap();
    let remote = b.remote_sync_metadata().await.unwrap();
    assert_eq!(
        b.sync_metadata().await.unwrap().compare(&remote),
        MetadataComparison::RemoteNewer
    );
    b.save(&todo("t3", "offline on b")).await.unwrap();
    assert_eq!(
        b.sync_metadata().await.unwrap().compare(&remote),
        MetadataComparison::Diverged
    );

    // A forgets its server-side record; B's listing no longer has it.
    assert!(a.clear_remote_sync_metadata().await.unwrap());
    assert!(
        !a.clear_remote_sync_metadata().await.unwrap(),
        "already gone"
    );
    let remote = b.remote_sync_metadata().await.unwrap();
    let ids: Vec<&str> = remote.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, vec![b.device_id()]);
}

#[tokio::test]
async fn clear_sync_metadata_makes_the_next_sync_full() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let remote = Requests::to(&server.url());
    let items = std::sync::Arc::clone(&remote.items);
    let count = || items.swap(0, std::sync::atomic::Ordering::SeqCst);
    let a = counted_client(remote, &db_a).await;
    let b = client(&server.url(), &db_b).await;
    let many: Vec<Todo> = (0..50).map(|n| todo(&format!("t{n:02}"), "x")).collect();
    b.save_all(&many).await.unwrap();
    b.sync_all().await.unwrap();
    assert_eq!(a.sync_all().await.unwrap().pulled, 50);
    assert_eq!(count(), 50);
    b.save(&todo("late", "one more")).await.unwrap();
    b.sync_all().await.unwrap();
    let incremental = a.sync_all().await.unwrap();
    assert_eq!(incremental.pulled, 1, "incremental");
    assert_eq!(count(), 1, "the server sent only the change");
    a.clear_sync_metadata().await.unwrap();
    // Records already here at the same version are not counted as pulled; the server sent
    // every one of them again.
    a.sync_all().await.unwrap();
    assert_eq!(count(), 51, "full after clearing");
    assert_eq!(a.sync_metadata().await.unwrap().entities["todo"].known, 51);
}

#[tokio::test]
async fn verify_finds_and_repairs_records_changed_behind_the_clients_back() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let a = client(&server.url(), &db).await;
    for n in 1..=5 {
        a.save(&todo(&format!("t{n}"), "first")).await.unwrap();
    }
    a.sync_all().await.unwrap(); // versions 1 to 5
    for n in 1..=5 {
        a.save(&todo(&format!("t{n}"), "as synced")).await.unwrap();
    }
    a.sync_all().await.unwrap(); // versions 6 to 10
    let clean = a.verify::<Todo>().await.unwrap();
    assert!(clean.in_sync() && clean.differing.is_empty() && !clean.repaired);
    assert_eq!(clean.remote_records, 5);

    // Written to the server's database directly: no event, no cursor move the client sees.
    let mut conn = server_db(&server);
    // (As a restore from an older backup would: an older version, below the client's
    // cursor, so that no incremental pull brings it.)
    diesel::sql_query(
        "UPDATE sync_records SET data = json_set(data, '$.title', 'changed behind'), \
         version = 3 WHERE id = 't3'",
    )
    .execute(&mut conn)
    .unwrap();
    diesel::sql_query("DELETE FROM sync_records WHERE id = 't5'")
        .execute(&mut conn)
        .unwrap();
    drop(conn);
    // An incremental sync does not see either change.
    assert_eq!(a.sync_all().await.unwrap().pulled, 0);
    assert_eq!(
        a.get::<Todo>("t3").await.unwrap().unwrap().title,
        "as synced"
    );

    // A record with a local change queued is not compared (its local state is ahead).
    let mut t1 = a.get::<Todo>("t1").await.unwrap().unwrap();
    t1.title = "edited here".into();
    a.pause();
    a.save(&t1).await.unwrap();
    // Paused: found, but not repaired (a repair is a pull).
    let report = a.verify::<Todo>().await.unwrap();
    assert_eq!(report.differing, vec!["t3", "t5"], "{report:?}");
    assert_eq!(report.skipped_pending, 1);
    assert!(!report.repaired && !report.in_sync());
    assert!(
        a.get::<Todo>("t5").await.unwrap().is_some(),
        "nothing changed"
    );
    a.resume();
    let report = a.verify::<Todo>().await.unwrap();
    assert_eq!(report.differing, vec!["t3", "t5"], "{report:?}");
    assert!(report.repaired);
    assert!(report.in_sync(), "{report:?}");
    assert_eq!(
        a.get::<Todo>("t3").await.unwrap().unwrap().title,
        "changed behind"
    );
    assert!(a.get::<Todo>("t5").await.unwrap().is_none());
    assert_eq!(
        a.get::<Todo>("t1").await.unwrap().unwrap().title,
        "edited here",
        "the queued edit stays"
    );
    assert!(a
        .verify_all()
        .await
        .unwrap()
        .iter()
        .all(|r| r.in_sync() && !r.repaired));
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Forwards to an [`HttpRemote`], counting pull requests, the records they brought, and
/// metadata requests.
#[derive(Debug, Default)]
struct Requests {
    inner: Option<offline_sync_kit::HttpRemote>,
    pulls: std::sync::Arc<std::sync::atomic::AtomicU64>,
    items: std::sync::Arc<std::sync::atomic::AtomicU64>,
    metadata: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Requests {
    fn to(url: &str) -> Requests {
        Requests {
            inner: Some(
                offline_sync_kit::HttpRemote::builder(url)
                    .bearer_token(ALICE.1)
                    .build()
                    .unwrap(),
            ),
            ..Requests::default()
        }
    }

    fn http(&self) -> &offline_sync_kit::HttpRemote {
        self.inner.as_ref().expect("a remote")
    }
}

#[async_trait::async_trait]
impl offline_sync_kit::remote::Remote for Requests {
    fn max_batch(&self) -> usize {
        self.http().max_batch()
    }
    async fn push(
        &self,
        route: &offline_sync_kit::remote::ModelRoute,
        items: &[offline_sync_kit::remote::PushItem],
    ) -> Result<
        (
            Vec<offline_sync_kit::remote::PushOutcome>,
            offline_sync_kit::remote::Traffic,
        ),
        offline_sync_kit::remote::RemoteError,
    > {
        self.http().push(route, items).await
    }
    async fn pull(
        &self,
        route: &offline_sync_kit::remote::ModelRoute,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<offline_sync_kit::remote::RemotePage, offline_sync_kit::remote::RemoteError> {
        self.pulls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let page = self.http().pull(route, cursor, limit).await?;
        self.items.fetch_add(
            page.records.len() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
        Ok(page)
    }
    async fn fetch(
        &self,
        route: &offline_sync_kit::remote::ModelRoute,
        id: &str,
    ) -> Result<Option<offline_sync_kit::store::RemoteRecord>, offline_sync_kit::remote::RemoteError>
    {
        self.http().fetch(route, id).await
    }
    async fn fetch_page(
        &self,
        route: &offline_sync_kit::remote::ModelRoute,
        params: &[(String, String)],
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<offline_sync_kit::remote::RemotePage, offline_sync_kit::remote::RemoteError> {
        self.http().fetch_page(route, params, limit, offset).await
    }
    async fn health(&self) -> Result<(), offline_sync_kit::remote::RemoteError> {
        self.http().health().await
    }
    fn has_sync_metadata(&self) -> bool {
        self.http().has_sync_metadata()
    }
    async fn sync_metadata(
        &self,
    ) -> Result<offline_sync_kit::RemoteSyncMetadata, offline_sync_kit::remote::RemoteError> {
        self.metadata
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.http().sync_metadata().await
    }
    async fn digest_page(
        &self,
        route: &offline_sync_kit::remote::ModelRoute,
        after: &str,
        limit: usize,
    ) -> Result<offline_sync_kit::protocol::DigestPage, offline_sync_kit::remote::RemoteError> {
        self.http().digest_page(route, after, limit).await
    }
}

/// Alice's manager on `db` over the counting `remote`, syncing only when asked.
async fn counted_client(remote: Requests, db: &ClientDb) -> SyncManager {
    let mut options = fast_options();
    options.auto_sync = false;
    SyncManager::builder()
        .remote(remote)
        .store(support::store_at(&db.path()).await)
        .connectivity(ManualConnectivity::new(true))
        .options(options)
        .user_id(ALICE.0)
        .model::<Todo>()
        .build()
        .await
        .unwrap()
}

/// An idle sync (nothing pending, checksums equal) is one metadata request and no pull,
/// whatever the data size; a collection whose checksum differs is pulled.
#[tokio::test]
async fn an_idle_sync_is_one_metadata_request_and_no_pull() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let pulls = Arc::new(AtomicU64::new(0));
    let metadata = Arc::new(AtomicU64::new(0));
    let remote = Requests {
        pulls: Arc::clone(&pulls),
        metadata: Arc::clone(&metadata),
        ..Requests::to(&server.url())
    };
    let a = counted_client(remote, &db_a).await;
    let b = client(&server.url(), &db_b).await;
    let many: Vec<Todo> = (0..300).map(|n| todo(&format!("t{n:03}"), "x")).collect();
    b.save_all(&many).await.unwrap();
    b.sync_all().await.unwrap();

    // First sync: no cursor yet, so no metadata request; pages pulled.
    assert_eq!(a.sync_all().await.unwrap().pulled, 300);
    assert_eq!(metadata.load(Ordering::SeqCst), 0);
    let first_pulls = pulls.load(Ordering::SeqCst);
    assert!(first_pulls >= 1);

    // Idle: one metadata request, no pull.
    for n in 1..=3 {
        let report = a.sync_all().await.unwrap();
        assert!(report.is_success() && report.pulled == 0);
        assert_eq!(metadata.load(Ordering::SeqCst), n);
        assert_eq!(
            pulls.load(Ordering::SeqCst),
            first_pulls,
            "an idle sync pulled"
        );
    }

    // A change elsewhere: the checksums differ, the collection is pulled.
    b.save(&todo("new", "one more")).await.unwrap();
    b.sync_all().await.unwrap();
    assert_eq!(a.sync_all().await.unwrap().pulled, 1);
    assert_eq!(pulls.load(Ordering::SeqCst), first_pulls + 1);
    let meta = a.sync_metadata().await.unwrap();
    let remote = a.remote_sync_metadata().await.unwrap();
    assert_eq!(meta.entities["todo"].known, 301);
    assert_eq!(meta.compare(&remote), MetadataComparison::InSync);

    // Idle again.
    let before = pulls.load(Ordering::SeqCst);
    a.sync_all().await.unwrap();
    assert_eq!(pulls.load(Ordering::SeqCst), before);
    b.shutdown().await.unwrap();
}
