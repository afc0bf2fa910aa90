//! The engine against a real Parse Server (npm `parse-server`, installed into
//! `target/npm-parse` on first use) on the test PostgreSQL, in a database of its own that the
//! test creates and drops; configured only through `RestRequests`, a `RestPull` and a
//! `RestBackend`. Started with `--allowCustomObjectId` (the client's ids) and without it (ids
//! the server assigns).
//!
//! Skipped, with the reason printed, when npm or `SYNC_TEST_POSTGRES_URL` is missing, unless
//! `SYNC_TEST_REQUIRE_NPM` is set (`.ci/run`): then a missing npm fails.
//!
//! Guards against: a REST configuration that cannot reach a real third-party backend: pulls
//! that cannot be expressed, a create duplicated when its answer is lost, ids the server
//! assigns breaking the updates and deletes queued behind a create.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use offline_sync_kit::prelude::*;
use offline_sync_kit::{
    CountAt, HttpRemote, ManualConnectivity, ModelConfig, NextPage, Paging, PullMode, RestBackend,
    RestPull, Since, TimeFormat, VersionSource,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use support::counting::Counting;
use support::npm::{Parse, APP_ID, MASTER_KEY};
use support::*;

/// A note as Parse Server keeps it: `objectId`, and `createdAt` / `updatedAt` that only the
/// server writes. `localId` keeps the local id of a record whose id the server assigned.
///
/// The whole Parse Server configuration is in the derive's attributes (the same values as
/// [`parse_pull`] and [`parse_backend`] build at run time; `derive_matches_the_runtime_values`
/// holds them equal); only the server-assigned ids are added at run time, by
/// [`ModelConfig::backend`], for the tests that start Parse without client ids.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(
    endpoint = "notes",
    rest(
        get(url = "classes/Note"),
        post(url = "classes/Note"),
        put(url = "classes/Note"),
        patch(url = "classes/Note", send_as = "PUT"),
        delete(url = "classes/Note")
    ),
    pull(
        since(
            field = "updatedAt",
            param = "where",
            template = r#"{"updatedAt":{"$gte":{"__type":"Date","iso":"{since}"}}}"#,
            format = "iso8601",
            initial = "1970-01-01T00:00:00Z"
        ),
        sort(param = "order", value = "updatedAt"),
        paging(keyset(limit = "limit", skip = "skip")),
        next_page(total_count_body = "count"),
        parameter(name = "count", value = "1"),
        records_at = "results"
    ),
    backend(
        idempotency_header = false,
        version = "none",
        conditional = false,
        conflict_statuses(),
        already_exists(statuses(400), code_at = "code", codes(137)),
        updated_at(field = "updatedAt", format = "iso8601"),
        server_fields("createdAt", "updatedAt")
    )
)]
#[serde(rename_all = "camelCase")]
struct Note {
    #[sync(id)]
    #[serde(rename = "objectId")]
    id: String,
    title: String,
    done: bool,
    #[serde(default)]
    local_id: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

fn note(id: &str, title: &str) -> Note {
    Note {
        id: id.into(),
        title: title.into(),
        done: false,
        local_id: None,
        created_at: None,
        updated_at: None,
    }
}

/// Parse Server's pull: `where` holds `updatedAt >= bound` as a Parse date, `order`, keyset
/// pages (`skip` the records of the bound's value already read, `limit`), and `count=1`
/// makes it answer the total of each page's query, which says whether more pages follow.
/// The records are under `results`.
fn parse_pull() -> PullMode {
    PullMode::from(
        RestPull::new()
            .since(
                Since::new("updatedAt", "where")
                    .template(r#"{"updatedAt":{"$gte":{"__type":"Date","iso":"{since}"}}}"#)
                    .format(TimeFormat::Iso8601)
                    // Without a `where`, Parse on PostgreSQL counts by estimate (0 at first).
                    .initial("1970-01-01T00:00:00Z"),
            )
            .sort("order", "updatedAt")
            .paging(Paging::Keyset {
                limit_param: "limit".into(),
                skip_param: "skip".into(),
            })
            .next_page(NextPage::TotalCount(CountAt::Body("count".into())))
            .parameter("count", "1")
            .records_at("results"),
    )
}

/// Parse Server's records: no versions (writes are unconditional), no idempotency keys, a
/// create of an existing `objectId` answered 400 with code 137, `createdAt` / `updatedAt`
/// kept by the server; with `server_ids` the server's `objectId` and the local id in
/// `localId`.
fn parse_backend() -> RestBackend {
    RestBackend::new()
        .idempotency_header(None)
        .version(VersionSource::None)
        .conditional(None)
        .conflict_statuses(&[])
        .already_exists(&[400], Some(("code", vec![json!(137)])))
        .updated_at("updatedAt", TimeFormat::Iso8601)
        .server_fields(&["createdAt", "updatedAt"])
}

/// The derive's configuration, and with `server_ids` the backend's own ids (a `RestBackend`
/// set at run time replaces the derive's whole).
fn parse_config(server_ids: bool) -> ModelConfig {
    if !server_ids {
        return ModelConfig::new();
    }
    let backend = Note::rest_backend()
        .expect("Note derives its backend")
        .server_ids(
            "objectId",
            "localId",
            ("where", r#"{"localId":"{local_id}"}"#),
        );
    ModelConfig::new().backend(backend)
}

/// Guards against: derive attributes that build other values than the same options set at
/// run time (a key dropped or misread on the way through the macro).
#[test]
fn derive_matches_the_runtime_values() {
    assert_eq!(Note::pull_mode(), Some(parse_pull()));
    assert_eq!(Note::rest_backend(), Some(parse_backend()));
}

/// A client of Parse Server at `url` (the server itself or a proxy in front of it), always
/// online, so that its requests are the test's only traffic.
async fn client(
    url: &str,
    db: &ClientDb,
    server_ids: bool,
    connectivity: ManualConnectivity,
) -> (SyncManager, Arc<AtomicU64>) {
    let remote = HttpRemote::builder(url)
        .header("X-Parse-Application-Id", APP_ID)
        .header("X-Parse-Master-Key", MASTER_KEY)
        .batch_push(None)
        .build()
        .unwrap();
    let pulled = Arc::new(AtomicU64::new(0));
    let mut options = fast_options();
    options.auto_sync = false;
    options.batch_size = 3;
    let sync = SyncManager::builder()
        .remote(Counting {
            inner: remote,
            pulled: Arc::clone(&pulled),
        })
        .connectivity(connectivity)
        .store(store_at(&db.path()).await)
        .model_with::<Note>(parse_config(server_ids))
        .options(options)
        .build()
        .await
        .unwrap();
    (sync, pulled)
}

/// Pushes until nothing is queued (backoffs of a few tens of ms), at most 100 rounds. Push
/// only: a pull could bring the server's copy of a create whose answer was lost, and the
/// replay is what is tested.
async fn sync_until_settled(sync: &SyncManager) {
    for _ in 0..100 {
        let _ = sync
            .synchronize(SyncRun::new(SyncDirection::PushOnly))
            .await;
        let status = sync.status().borrow().clone();
        if status.pending_changes == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("changes still queued: {:?}", sync.status().borrow());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_create_offline_then_sync_makes_exactly_one_copy() {
    let Some(parse) = Parse::start(true).await else {
        return;
    };
    let db = ClientDb::new();
    let online = ManualConnectivity::new(false);
    let (a, _) = client(&parse.url, &db, false, online.clone()).await;
    a.save(&note("n1", "made offline")).await.unwrap();
    assert_eq!(a.status().borrow().pending_changes, 1);
    online.set_online(true);
    sync_until_settled(&a).await;
    // A second sync sends nothing again.
    a.sync_all().await.unwrap();
    let copies = parse.notes_where("title", "made offline").await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0]["objectId"], "n1");
    // The server's fields came back and are stored.
    let local = a.get::<Note>("n1").await.unwrap().unwrap();
    assert!(local.created_at.is_some(), "{local:?}");
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_one_field_update_sends_a_delta_by_put() {
    let Some(parse) = Parse::start(true).await else {
        return;
    };
    let db = ClientDb::new();
    let (a, _) = client(&parse.url, &db, false, ManualConnectivity::new(true)).await;
    let mut n = note("n1", "keep me");
    a.save(&n).await.unwrap();
    sync_until_settled(&a).await;
    n = a.get::<Note>("n1").await.unwrap().unwrap();
    n.done = true;
    a.save(&n).await.unwrap();
    let report = a.sync_all().await.unwrap();
    assert_eq!(report.pushed, 1);
    assert_eq!(
        report.bytes_sent,
        br#"{"done":true}"#.len() as u64,
        "only the changed field was sent"
    );
    let on_server: Value = parse
        .request(reqwest::Method::GET, "classes/Note/n1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (on_server["title"].clone(), on_server["done"].clone()),
        (json!("keep me"), json!(true))
    );
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_delete_offline_reaches_the_server() {
    let Some(parse) = Parse::start(true).await else {
        return;
    };
    let db = ClientDb::new();
    let online = ManualConnectivity::new(true);
    let (a, _) = client(&parse.url, &db, false, online.clone()).await;
    a.save(&note("n1", "to delete")).await.unwrap();
    sync_until_settled(&a).await;
    online.set_online(false);
    a.delete::<Note>("n1").await.unwrap();
    assert_eq!(parse.notes_where("title", "to delete").await.len(), 1);
    online.set_online(true);
    sync_until_settled(&a).await;
    assert!(parse.notes_where("title", "to delete").await.is_empty());
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_a_change_by_another_client_is_pulled_and_only_changes_are_sent_again() {
    let Some(parse) = Parse::start(true).await else {
        return;
    };
    // Five notes made by another client of the backend.
    for n in 0..5 {
        let status = parse
            .request(reqwest::Method::POST, "classes/Note")
            .json(
                &json!({"objectId": format!("n{n}"), "title": format!("note {n}"), "done": false}),
            )
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 201);
    }
    let db = ClientDb::new();
    let (a, pulled) = client(&parse.url, &db, false, ManualConnectivity::new(true)).await;
    // Pages of 3 (batch_size): 3 + 2, the total count says when to stop.
    let report = a.pull::<Note>().await.unwrap();
    assert_eq!(report.pulled, 5);
    assert_eq!(pulled.swap(0, Ordering::SeqCst), 5);

    // The notes at the bound now (notes made in the same millisecond share it).
    let at_bound = |notes: &[Value]| -> u64 {
        let newest = notes
            .iter()
            .filter_map(|n| n["updatedAt"].as_str())
            .max()
            .unwrap()
            .to_owned();
        notes
            .iter()
            .filter(|n| n["updatedAt"] == newest.as_str())
            .count() as u64
    };
    let all = || async {
        let body: Value = parse
            .request(reqwest::Method::GET, "classes/Note")
            .query(&[("where", r#"{"title":{"$exists":true}}"#)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["results"].as_array().unwrap().clone()
    };
    let before = at_bound(&all().await);
    // The other client changes the oldest note (not at the bound), a moment later.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let status = parse
        .request(reqwest::Method::PUT, "classes/Note/n0")
        .json(&json!({"title": "changed elsewhere"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    a.pull::<Note>().await.unwrap();
    assert_eq!(
        a.get::<Note>("n0").await.unwrap().unwrap().title,
        "changed elsewhere"
    );
    // The bound is inclusive (`$gte`): the notes at the bound of the last pull come again with
    // the changed one, and nothing else.
    assert_eq!(pulled.swap(0, Ordering::SeqCst), before + 1);
    a.pull::<Note>().await.unwrap();
    assert_eq!(
        pulled.load(Ordering::SeqCst),
        at_bound(&all().await),
        "only the newest, again"
    );
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_a_lost_create_response_ends_with_one_copy_and_the_op_settled() {
    let Some(parse) = Parse::start(true).await else {
        return;
    };
    let proxy = FaultProxy::start(([127, 0, 0, 1], parse.port).into()).await;
    let db = ClientDb::new();
    let (a, _) = client(
        &format!("{}/parse", proxy.url()),
        &db,
        false,
        ManualConnectivity::new(true),
    )
    .await;
    a.save(&note("n1", "answer lost")).await.unwrap();
    proxy.fault_next_settled(Fault::CutAfterResponse, 1).await;
    let _ = a.synchronize(SyncRun::new(SyncDirection::PushOnly)).await;
    // Parse Server made it; the client does not know.
    assert_eq!(parse.notes_where("title", "answer lost").await.len(), 1);
    let state = a.record_state::<Note>("n1").await.unwrap();
    assert!(state.ops.len() == 1 && state.ops[0].sent, "{state:?}");
    // The replay is answered 137 ("exists"), the stored note matches what was sent: applied.
    sync_until_settled(&a).await;
    assert_eq!(parse.notes_where("title", "answer lost").await.len(), 1);
    let state = a.record_state::<Note>("n1").await.unwrap();
    assert!(state.ops.is_empty(), "{state:?}");
    assert!(state.meta.unwrap().synced);
    assert!(a.failed_ops().await.unwrap().is_empty());
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_server_assigned_ids_rekey_the_record_and_its_queued_changes() {
    let Some(parse) = Parse::start(false).await else {
        return;
    };
    let proxy = FaultProxy::start(([127, 0, 0, 1], parse.port).into()).await;
    let db = ClientDb::new();
    let online = ManualConnectivity::new(false);
    let (a, _) = client(&format!("{}/parse", proxy.url()), &db, true, online.clone()).await;
    let mut events = a.events();

    // Created offline under a local id; the server gives it its own.
    a.save(&note("local-1", "first")).await.unwrap();
    online.set_online(true);
    sync_until_settled(&a).await;
    let copies = parse.notes_where("localId", "local-1").await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    let server_id = copies[0]["objectId"].as_str().unwrap().to_owned();
    assert_ne!(server_id, "local-1");
    let event = next_event(&mut events, SyncEventType::RecordRekeyed, Some(&server_id)).await;
    assert!(
        matches!(&event, SyncEvent::RecordRekeyed { from, id, .. } if from == "local-1" && *id == server_id),
        "{event:?}"
    );
    assert_eq!(a.get::<Note>("local-1").await.unwrap(), None);
    let mut first = a.get::<Note>(&server_id).await.unwrap().unwrap();
    first.title = "first, edited".into();
    a.save(&first).await.unwrap();
    sync_until_settled(&a).await;
    assert_eq!(
        parse.notes_where("localId", "local-1").await[0]["title"],
        "first, edited"
    );

    // Creates whose answers are lost, with an update (and a delete) queued behind them: the
    // replays find the copies by their local ids, and the queued ops go to the server's ids.
    for (local, delete_too) in [("local-2", false), ("local-3", true)] {
        a.save(&note(local, local)).await.unwrap();
        proxy.fault_next_settled(Fault::CutAfterResponse, 1).await;
        let _ = a.synchronize(SyncRun::new(SyncDirection::PushOnly)).await;
        let state = a.record_state::<Note>(local).await.unwrap();
        assert!(
            state.ops.len() == 1 && state.ops[0].sent,
            "{local}: the answer was lost: {state:?}"
        );
        assert_eq!(
            parse.notes_where("localId", local).await.len(),
            1,
            "{local}: the server made it"
        );
        let mut edited = a.get::<Note>(local).await.unwrap().unwrap();
        edited.title = format!("{local}, edited");
        a.save(&edited).await.unwrap();
        if delete_too {
            a.delete::<Note>(local).await.unwrap();
        }
        let state = a.record_state::<Note>(local).await.unwrap();
        assert_eq!(
            state.ops.len(),
            2,
            "{local}: queued behind the create: {state:?}"
        );
        sync_until_settled(&a).await;
    }
    let seconds = parse.notes_where("localId", "local-2").await;
    assert_eq!(seconds.len(), 1, "{seconds:?}");
    assert_eq!(seconds[0]["title"], "local-2, edited");
    assert!(
        parse.notes_where("localId", "local-3").await.is_empty(),
        "the delete reached the server's copy"
    );
    assert!(a.failed_ops().await.unwrap().is_empty());
    let total: Value = parse
        .request(reqwest::Method::GET, "classes/Note")
        // Under a `where`: without one Parse on PostgreSQL counts by estimate.
        .query(&[
            ("count", "1"),
            ("limit", "0"),
            ("where", r#"{"title":{"$exists":true}}"#),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(total["count"], 2, "first and second, one copy each");
    a.shutdown().await.unwrap();
}
