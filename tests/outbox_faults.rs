//! The outbox under faults: each test is one minimal scenario in which an acknowledged write
//! was lost or a record's queue stopped draining, reproduced with a real sync-server and a
//! fault proxy on loopback (ARCHITECTURE.md, "Outbox states").

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use offline_sync_kit::store::{
    Ack, ClaimedOp, DeleteOutcome, LocalStore, LocalWrite, OutboxCounts, OutboxOp, RecordState,
    RemoteApplied, RemoteRecord, Resolution, SaveOutcome, StoreQuery, StoreResult, StoredRecord,
};
use offline_sync_kit::{ConflictStrategy, DieselStore, ModelSchema, SyncManager, SyncModel};
use serde_json::{json, Value};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

fn manual_options(strategy: ConflictStrategy) -> offline_sync_kit::SyncOptions {
    let mut options = fast_options();
    options.auto_sync = false;
    options.conflict_strategy = strategy;
    options
}

/// Syncs only when asked, always online: these scenarios fault the requests they make.
async fn manual_client(url: &str, db: &ClientDb, strategy: ConflictStrategy) -> SyncManager {
    always_online_builder(url, db, ALICE.1)
        .await
        .model::<Todo>()
        .options(manual_options(strategy))
        .build()
        .await
        .unwrap()
}

/// Syncs until a run succeeds with nothing left to send (retry delays are short).
async fn sync_until_quiet(sync: &SyncManager) {
    for _ in 0..50 {
        if let Ok(report) = sync.sync_all().await {
            let status = sync.status().borrow().clone();
            if report.failed == 0 && status.pending_changes == 0 && status.failed_changes == 0 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let failed = sync.failed_ops().await.unwrap();
    panic!(
        "the queue never drained: {:?}, failed ops {failed:?}",
        sync.status().borrow()
    );
}

async fn push_raw(server: &Server, ops: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{}/sync/push", server.url()))
        .bearer_auth(ALICE.1)
        .json(&json!({ "ops": ops }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Scenario 1. The create's push is cut part-way (it may have reached the server, which
/// never got it whole), then the record is deleted and saved again. The create may have been
/// sent, so the delete is sent too; the delete of a record the server never had must not fail
/// (it used to be `422 no record`, failed for good, and the new create waited behind it
/// forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_of_a_record_the_server_never_got_does_not_block_the_record() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let sync = manual_client(&proxy.url(), &db, ConflictStrategy::ServerWins).await;

    sync.save(&todo("x", "first")).await.unwrap();
    proxy.fault_next_settled(Fault::CutRequest, 1).await;
    assert!(sync.sync_all().await.is_err(), "the cut push fails the run");
    assert!(
        server.record(ALICE.1, "todos", "x").await.is_none(),
        "the server never got the cut create"
    );
    let state = sync.record_state::<Todo>("x").await.unwrap();
    assert!(
        state.ops.len() == 1 && state.ops[0].sent,
        "the cut create counts as possibly sent: {state:?}"
    );
    sync.delete::<Todo>("x").await.unwrap();
    let _ = sync.sync_all().await;
    let failed = sync.failed_ops().await.unwrap();
    assert!(
        failed.is_empty(),
        "the delete of a record the server never had reached its goal, it is not failed: {failed:?}"
    );
    sync.save(&todo("x", "again")).await.unwrap();
    sync_until_quiet(&sync).await;

    let on_server = server.record(ALICE.1, "todos", "x").await;
    assert_eq!(
        on_server.as_ref().map(|r| r["title"].clone()),
        Some(json!("again")),
        "the last save reached the server: {on_server:?}"
    );
    assert!(sync.failed_ops().await.unwrap().is_empty());
    sync.shutdown().await.unwrap();
}

/// Scenario 1, server side: a delete whose record is absent, or already a tombstone at the
/// op's base version, has reached its goal and is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_applies_a_delete_of_an_absent_or_deleted_record() {
    let server = Server::start().await;
    let absent = push_raw(
        &server,
        json!([{ "idempotency_key": "k-absent", "collection": "todos", "op": "delete", "id": "nope" }]),
    )
    .await;
    assert_eq!(absent["results"][0]["status"], "applied", "{absent}");

    let made = push_raw(
        &server,
        json!([{ "idempotency_key": "k1", "collection": "todos", "op": "create", "id": "y",
                 "data": { "id": "y", "title": "t", "description": "", "isCompleted": false,
                           "priority": 1, "tags": [], "due": null } }]),
    )
    .await;
    let v1 = made["results"][0]["version"].as_i64().unwrap();
    let gone = push_raw(
        &server,
        json!([{ "idempotency_key": "k2", "collection": "todos", "op": "delete", "id": "y", "base_version": v1 }]),
    )
    .await;
    let v2 = gone["results"][0]["version"].as_i64().unwrap();
    let again = push_raw(
        &server,
        json!([{ "idempotency_key": "k3", "collection": "todos", "op": "delete", "id": "y", "base_version": v2 }]),
    )
    .await;
    assert_eq!(again["results"][0]["status"], "applied", "{again}");
    assert_eq!(again["results"][0]["version"], json!(v2), "nothing changed");

    // REST: DELETE of a tombstone is a 404 (nothing at that URL), which per-op REST clients
    // take as the delete having reached its goal.
    let response = reqwest::Client::new()
        .delete(format!("{}/todos/y", server.url()))
        .bearer_auth(ALICE.1)
        .header("Idempotency-Key", "k4")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// Scenario 2. `{t1,b1}` is synced; `{t2,b1}` is applied by the server but its answer is lost;
/// `{t2,b3}` is saved. The op that may have reached the server must be sent again as it was
/// (same key, same base), so the server recognises the replay; the newer edit follows it.
/// Before, the two were merged under a new key with the old base: a 409 against the client's
/// own write, and ServerWins dropped `b3`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_that_may_have_been_sent_is_not_changed_by_a_later_edit() {
    for strategy in [
        ConflictStrategy::ServerWins,
        ConflictStrategy::LastUpdateWins,
    ] {
        let server = Server::start().await;
        let proxy = FaultProxy::start(server.addr).await;
        let db = ClientDb::new();
        let sync = manual_client(&proxy.url(), &db, strategy.clone()).await;

        let mut t = todo("r", "t1");
        t.description = "b1".into();
        sync.save(&t).await.unwrap();
        sync.sync_all().await.unwrap();

        t.title = "t2".into();
        sync.save(&t).await.unwrap();
        proxy.fault_next_settled(Fault::CutAfterResponse, 1).await;
        assert!(sync.sync_all().await.is_err(), "the answer was lost");
        let on_server = server.record(ALICE.1, "todos", "r").await.unwrap();
        assert_eq!(on_server["title"], "t2", "the server applied it");

        t.description = "b3".into();
        sync.save(&t).await.unwrap();
        sync_until_quiet(&sync).await;

        let on_server = server.record(ALICE.1, "todos", "r").await.unwrap();
        assert_eq!(
            (on_server["title"].clone(), on_server["description"].clone()),
            (json!("t2"), json!("b3")),
            "{strategy:?}: the last acknowledged save is on the server"
        );
        let local = sync.get::<Todo>("r").await.unwrap().unwrap();
        assert_eq!(local.description, "b3", "{strategy:?}: and on the device");
        sync.shutdown().await.unwrap();
    }
}

/// Scenario 2 through a pull: the same lost answer, but the next run pulls first. The pulled
/// record is the client's own write; it must not be settled as somebody else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_meeting_our_own_unanswered_write_keeps_the_edit_queued_behind_it() {
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let sync = manual_client(&proxy.url(), &db, ConflictStrategy::ServerWins).await;

    let mut t = todo("r", "t1");
    t.description = "b1".into();
    sync.save(&t).await.unwrap();
    sync.sync_all().await.unwrap();
    t.title = "t2".into();
    sync.save(&t).await.unwrap();
    proxy.fault_next_settled(Fault::CutAfterResponse, 1).await;
    assert!(sync.sync_all().await.is_err());
    t.description = "b3".into();
    sync.save(&t).await.unwrap();

    sync.pull::<Todo>().await.unwrap();
    sync_until_quiet(&sync).await;
    let on_server = server.record(ALICE.1, "todos", "r").await.unwrap();
    assert_eq!(
        (on_server["title"].clone(), on_server["description"].clone()),
        (json!("t2"), json!("b3"))
    );
    assert_eq!(sync.get::<Todo>("r").await.unwrap().unwrap(), t);
    sync.shutdown().await.unwrap();
}

/// A store that runs a hook right after `ready_ops` answers: the app saving between the
/// moment the push chose its ops and the moment it marked them in flight.
type Hook = Box<dyn FnOnce(&DieselStore) + Send>;

struct EditAfterReady {
    inner: DieselStore,
    hook: Mutex<Option<Hook>>,
}

impl std::fmt::Debug for EditAfterReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EditAfterReady").finish_non_exhaustive()
    }
}

impl EditAfterReady {
    fn take_hook(&self) -> Option<Hook> {
        self.hook.lock().unwrap().take()
    }
}

impl LocalStore for EditAfterReady {
    fn prepare_model(&self, schema: &'static ModelSchema, auto: bool) -> StoreResult<()> {
        self.inner.prepare_model(schema, auto)
    }
    fn get(&self, schema: &'static ModelSchema, id: &str) -> StoreResult<Option<StoredRecord>> {
        self.inner.get(schema, id)
    }
    fn query(
        &self,
        schema: &'static ModelSchema,
        q: &StoreQuery,
    ) -> StoreResult<Vec<StoredRecord>> {
        self.inner.query(schema, q)
    }
    fn count(&self, schema: &'static ModelSchema, q: &StoreQuery) -> StoreResult<u64> {
        self.inner.count(schema, q)
    }
    fn save(&self, write: &LocalWrite<'_>) -> StoreResult<SaveOutcome> {
        self.inner.save(write)
    }
    fn save_batch(&self, writes: &[LocalWrite<'_>]) -> StoreResult<Vec<SaveOutcome>> {
        self.inner.save_batch(writes)
    }
    fn delete(
        &self,
        schema: &'static ModelSchema,
        id: &str,
        user: Option<&str>,
        priority: i32,
        enqueue: bool,
    ) -> StoreResult<DeleteOutcome> {
        self.inner.delete(schema, id, user, priority, enqueue)
    }
    fn ready_ops(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> StoreResult<Vec<OutboxOp>> {
        let ready = self.inner.ready_ops(now, limit)?;
        if let Some(hook) = self.take_hook() {
            hook(&self.inner);
        }
        Ok(ready)
    }
    fn next_retry_at(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        self.inner.next_retry_at(now)
    }
    fn claim_ops(&self, schema: &'static ModelSchema, seqs: &[i64]) -> StoreResult<Vec<ClaimedOp>> {
        self.inner.claim_ops(schema, seqs)
    }
    fn release_inflight(&self, seqs: &[i64]) -> StoreResult<()> {
        self.inner.release_inflight(seqs)
    }
    fn ack_ops(&self, schema: &'static ModelSchema, acks: &[Ack]) -> StoreResult<()> {
        self.inner.ack_ops(schema, acks)
    }
    fn fail_op(&self, seq: i64, error: &str) -> StoreResult<()> {
        self.inner.fail_op(seq, error)
    }
    fn reschedule_op(
        &self,
        seq: i64,
        at: chrono::DateTime<chrono::Utc>,
        error: &str,
    ) -> StoreResult<()> {
        self.inner.reschedule_op(seq, at, error)
    }
    fn requeue_inflight(&self) -> StoreResult<u64> {
        self.inner.requeue_inflight()
    }
    fn failed_ops(&self) -> StoreResult<Vec<OutboxOp>> {
        self.inner.failed_ops()
    }
    fn retry_failed(&self, seq: Option<i64>) -> StoreResult<u64> {
        self.inner.retry_failed(seq)
    }
    fn discard_op(&self, seq: i64) -> StoreResult<()> {
        self.inner.discard_op(seq)
    }
    fn apply_remote(
        &self,
        schema: &'static ModelSchema,
        user: Option<&str>,
        records: &[RemoteRecord],
        cursor: Option<&str>,
    ) -> StoreResult<RemoteApplied> {
        self.inner.apply_remote(schema, user, records, cursor)
    }
    fn resolve_conflict(
        &self,
        schema: &'static ModelSchema,
        remote: &RemoteRecord,
        resolution: &Resolution,
    ) -> StoreResult<()> {
        self.inner.resolve_conflict(schema, remote, resolution)
    }
    fn cursor(
        &self,
        schema: &'static ModelSchema,
        user: Option<&str>,
    ) -> StoreResult<Option<String>> {
        self.inner.cursor(schema, user)
    }
    fn reset_cursor(&self, schema: &'static ModelSchema, user: Option<&str>) -> StoreResult<()> {
        self.inner.reset_cursor(schema, user)
    }
    fn record_state(&self, schema: &'static ModelSchema, id: &str) -> StoreResult<RecordState> {
        self.inner.record_state(schema, id)
    }
    fn counts(&self) -> StoreResult<OutboxCounts> {
        self.inner.counts()
    }
    fn metadata(&self, user: Option<&str>, key: &str) -> StoreResult<Option<String>> {
        self.inner.metadata(user, key)
    }
    fn set_metadata(&self, user: Option<&str>, key: &str, value: &str) -> StoreResult<()> {
        self.inner.set_metadata(user, key, value)
    }
    fn claim_owner(&self, user: Option<&str>) -> StoreResult<Option<String>> {
        self.inner.claim_owner(user)
    }
    fn known_versions(
        &self,
        schema: &'static ModelSchema,
    ) -> StoreResult<offline_sync_kit::store::KnownVersions> {
        self.inner.known_versions(schema)
    }
    fn op_counts_by_model(&self) -> StoreResult<Vec<(String, u64, u64)>> {
        self.inner.op_counts_by_model()
    }
    fn forget_records(&self, schema: &'static ModelSchema, ids: &[String]) -> StoreResult<u64> {
        self.inner.forget_records(schema, ids)
    }
    fn quarantine(
        &self,
        schema: &'static ModelSchema,
        records: &[offline_sync_kit::store::QuarantinedRecord],
    ) -> StoreResult<()> {
        self.inner.quarantine(schema, records)
    }
    fn quarantined(
        &self,
        schema: &'static ModelSchema,
    ) -> StoreResult<Vec<offline_sync_kit::store::QuarantinedRecord>> {
        self.inner.quarantined(schema)
    }
    fn release_quarantined(
        &self,
        schema: &'static ModelSchema,
        keys: &[String],
    ) -> StoreResult<u64> {
        self.inner.release_quarantined(schema, keys)
    }
}

/// Scenario 3. An edit saved after the push chose its ops but before it marked them in
/// flight must be in what is sent, or stay queued; the acknowledgement must not write the
/// server's copy over it. Before, the request was built from the copy read first (the old
/// changed fields and key), and the ack deleted the op that carried the newer edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_between_choosing_and_marking_an_op_is_not_lost() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let store = Arc::new(EditAfterReady {
        inner: store_at(&db.path()).await,
        hook: Mutex::new(None),
    });
    let sync = SyncManager::builder()
        .base_url(server.url())
        .store_arc(Arc::clone(&store) as Arc<dyn LocalStore>)
        .bearer_token(ALICE.1)
        .options(manual_options(ConflictStrategy::ServerWins))
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    let mut t = todo("r", "t1");
    sync.save(&t).await.unwrap();
    sync.sync_all().await.unwrap();

    t.title = "t2".into();
    sync.save(&t).await.unwrap();
    let mut edited = t.clone();
    edited.description = "saved meanwhile".into();
    let data = match serde_json::to_value(&edited).unwrap() {
        Value::Object(map) => map,
        _ => unreachable!(),
    };
    *store.hook.lock().unwrap() = Some(Box::new(move |inner: &DieselStore| {
        inner
            .save(&LocalWrite {
                schema: Todo::SCHEMA,
                id: "r",
                data: &data,
                user_id: None,
                priority: 0,
                enqueue: true,
                version: None,
            })
            .unwrap();
    }));
    sync.sync_all().await.unwrap();
    sync_until_quiet(&sync).await;

    assert_eq!(
        sync.get::<Todo>("r").await.unwrap().unwrap(),
        edited,
        "device"
    );
    let on_server = server.record(ALICE.1, "todos", "r").await.unwrap();
    assert_eq!(
        (on_server["title"].clone(), on_server["description"].clone()),
        (json!("t2"), json!("saved meanwhile")),
        "server"
    );
    sync.shutdown().await.unwrap();
}

/// Scenario 4. A save after a delete of the same record is a re-create, whether the delete's
/// answer was lost or acknowledged; sync-server takes a create over its own tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_after_a_delete_re_creates_the_record() {
    for lost_answer in [true, false] {
        let server = Server::start().await;
        let proxy = FaultProxy::start(server.addr).await;
        let db = ClientDb::new();
        let sync = manual_client(&proxy.url(), &db, ConflictStrategy::ServerWins).await;
        sync.save(&todo("x", "one")).await.unwrap();
        sync.sync_all().await.unwrap();
        sync.delete::<Todo>("x").await.unwrap();
        if lost_answer {
            proxy.fault_next_settled(Fault::CutAfterResponse, 1).await;
            assert!(sync.sync_all().await.is_err());
        } else {
            sync.sync_all().await.unwrap();
        }
        assert!(
            server.record(ALICE.1, "todos", "x").await.is_none() || {
                let r = server.record(ALICE.1, "todos", "x").await.unwrap();
                r["deleted"] == json!(true)
            }
        );
        sync.save(&todo("x", "two")).await.unwrap();
        sync_until_quiet(&sync).await;
        let on_server = server.record(ALICE.1, "todos", "x").await;
        assert_eq!(
            on_server
                .as_ref()
                .map(|r| (r["title"].clone(), r.get("deleted").cloned())),
            Some((json!("two"), None)),
            "lost answer {lost_answer}: {on_server:?}"
        );
        assert_eq!(sync.get::<Todo>("x").await.unwrap().unwrap().title, "two");
        sync.shutdown().await.unwrap();
    }

    // On the wire: a create over a tombstone with a base version that is not the tombstone's.
    let server = Server::start().await;
    let data = json!({ "id": "z", "title": "t", "description": "", "isCompleted": false,
                       "priority": 1, "tags": [], "due": null });
    push_raw(&server, json!([{ "idempotency_key": "c1", "collection": "todos", "op": "create", "id": "z", "data": data }])).await;
    push_raw(
        &server,
        json!([{ "idempotency_key": "d1", "collection": "todos", "op": "delete", "id": "z" }]),
    )
    .await;
    let again = push_raw(
        &server,
        json!([{ "idempotency_key": "c2", "collection": "todos", "op": "create", "id": "z",
                 "base_version": 1, "data": data }]),
    )
    .await;
    assert_eq!(again["results"][0]["status"], "applied", "{again}");
}

/// Scenario 5. `last_error` stays set while failed ops exist; a later successful run of other
/// records used to clear it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_error_stays_while_failed_ops_exist() {
    let server = Server::start_with(Some(12)).await;
    let db = ClientDb::new();
    let sync = manual_client(&server.url(), &db, ConflictStrategy::ServerWins).await;
    sync.save(&todo("an-id-longer-than-twelve", "refused"))
        .await
        .unwrap();
    let _ = sync.sync_all().await;
    assert_eq!(sync.failed_ops().await.unwrap().len(), 1);
    assert!(sync.status().borrow().last_error.is_some());

    sync.save(&todo("short", "fine")).await.unwrap();
    let report = sync.sync_all().await.unwrap();
    assert_eq!((report.pushed, report.failed), (1, 0));
    let status = sync.status().borrow().clone();
    assert_eq!(status.failed_changes, 1);
    assert!(
        status.last_error.is_some(),
        "the failed op's error is still the last error: {status:?}"
    );

    let failed = sync.failed_ops().await.unwrap();
    sync.discard_failed(&failed[0]).await.unwrap();
    sync.sync_all().await.unwrap();
    assert_eq!(
        sync.status().borrow().last_error,
        None,
        "cleared once none is left"
    );
    let _ = WAIT;
    sync.shutdown().await.unwrap();
}
