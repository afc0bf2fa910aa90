//! The same engine, configured only through `RestRequests` and a pull mode,
//! against third-party-shaped REST APIs: json-server (npm) and an API shaped
//! like Appwrite's documents API.
//!
//! Guards against: REST configuration options that are parsed but never applied.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use offline_sync_kit::prelude::*;
use offline_sync_kit::{ModelConfig, PullMode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use support::npm::json_server;
use support::*;

/// A note for json-server: the app keeps `modifiedAt` (ms) so pulls can ask for changes since.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "notes")]
#[serde(rename_all = "camelCase")]
struct Note {
    #[sync(id)]
    id: String,
    title: String,
    done: bool,
    modified_at: i64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_with_json_server() {
    let Some((_child, url, _dir)) = json_server().await else {
        return;
    };
    let pull = PullMode::UpdatedSince {
        field: "modifiedAt".into(),
        since_param: "modifiedAt_gte".into(),
    };
    let config = ModelConfig::new().pull(pull);
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = SyncManager::builder()
        .base_url(&url)
        .store(store_at(&db_a.path()).await)
        .rest_only()
        .model_with::<Note>(config.clone())
        .options(fast_options())
        .build()
        .await
        .unwrap();
    let mut note = Note {
        id: "n1".into(),
        title: "first".into(),
        done: false,
        modified_at: now_ms(),
    };
    a.save(&note).await.unwrap();
    a.sync_all().await.unwrap();
    let http = reqwest::Client::new();
    let on_server: Value = http
        .get(format!("{url}/notes/n1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(on_server["title"], "first");

    // A delta update: only the changed fields travel (PATCH), the rest stays.
    note.done = true;
    note.modified_at = now_ms() + 1;
    a.save(&note).await.unwrap();
    let report = a.sync_all().await.unwrap();
    assert_eq!(report.pushed, 1);
    let full = serde_json::to_vec(&note).unwrap().len() as u64;
    assert!(
        report.bytes_sent < full,
        "a delta went out ({} B), not the whole note ({full} B)",
        report.bytes_sent
    );
    let on_server: Value = http
        .get(format!("{url}/notes/n1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(on_server["done"], true);
    assert_eq!(on_server["title"], "first");

    // Another client pulls by the updated-at field.
    let b = SyncManager::builder()
        .base_url(&url)
        .store(store_at(&db_b.path()).await)
        .rest_only()
        .model_with::<Note>(config)
        .options(fast_options())
        .build()
        .await
        .unwrap();
    b.pull::<Note>().await.unwrap();
    assert_eq!(b.get::<Note>("n1").await.unwrap(), Some(note.clone()));
    // A later change arrives on the next pull.
    note.title = "renamed".into();
    note.modified_at = now_ms() + 2;
    a.save(&note).await.unwrap();
    a.sync_all().await.unwrap();
    b.pull::<Note>().await.unwrap();
    assert_eq!(b.get::<Note>("n1").await.unwrap().unwrap().title, "renamed");

    // Delete.
    a.delete::<Note>("n1").await.unwrap();
    a.sync_all().await.unwrap();
    let status = http
        .get(format!("{url}/notes/n1"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A document as the Appwrite-shaped API knows it.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(
    endpoint = "documents",
    rest(
        get(
            url = "v1/databases/{databaseId}/collections/{collectionId}/documents",
            url_parameters(databaseId = "main", collectionId = "tasks"),
            response_data_key = "documents",
            header = "X-Appwrite-Project: demo"
        ),
        post(
            url = "v1/databases/{databaseId}/collections/{collectionId}/documents",
            url_parameters(databaseId = "main", collectionId = "tasks"),
            top_level_key = "data",
            supplemental = r#"{"documentId": "{id}"}"#,
            header = "X-Appwrite-Project: demo"
        ),
        patch(
            url = "v1/databases/{databaseId}/collections/{collectionId}/documents",
            url_parameters(databaseId = "main", collectionId = "tasks"),
            top_level_key = "data",
            header = "X-Appwrite-Project: demo"
        ),
        put(
            url = "v1/databases/{databaseId}/collections/{collectionId}/documents",
            url_parameters(databaseId = "main", collectionId = "tasks"),
            top_level_key = "data",
            header = "X-Appwrite-Project: demo"
        ),
        delete(
            url = "v1/databases/{databaseId}/collections/{collectionId}/documents",
            url_parameters(databaseId = "main", collectionId = "tasks"),
            header = "X-Appwrite-Project: demo"
        )
    )
)]
struct Task {
    #[sync(id)]
    #[serde(rename = "$id")]
    id: String,
    title: String,
    done: bool,
}

#[derive(Default)]
struct Documents {
    rows: Mutex<Vec<Map<String, Value>>>,
    requests: Mutex<Vec<String>>,
}

type Shared = Arc<Documents>;

fn check_project(headers: &HeaderMap) -> Result<(), StatusCode> {
    match headers
        .get("x-appwrite-project")
        .and_then(|v| v.to_str().ok())
    {
        Some("demo") => Ok(()),
        _ => Err(StatusCode::UNAUTHORIZED),
    }
}

async fn appwrite() -> (String, Shared) {
    let shared: Shared = Arc::default();
    async fn list(
        State(s): State<Shared>,
        headers: HeaderMap,
        Path((db, coll)): Path<(String, String)>,
        UrlQuery(q): UrlQuery<std::collections::HashMap<String, String>>,
    ) -> Result<Json<Value>, StatusCode> {
        check_project(&headers)?;
        assert_eq!((db.as_str(), coll.as_str()), ("main", "tasks"));
        let page: usize = q.get("_page").and_then(|p| p.parse().ok()).unwrap_or(1);
        let limit: usize = q.get("_limit").and_then(|p| p.parse().ok()).unwrap_or(25);
        let rows = s.rows.lock().unwrap();
        let docs: Vec<Value> = rows
            .iter()
            .skip((page - 1) * limit)
            .take(limit)
            .cloned()
            .map(Value::Object)
            .collect();
        Ok(Json(json!({"total": rows.len(), "documents": docs})))
    }
    async fn create(
        State(s): State<Shared>,
        headers: HeaderMap,
        Path((_db, _coll)): Path<(String, String)>,
        Json(body): Json<Value>,
    ) -> Result<(StatusCode, Json<Value>), StatusCode> {
        check_project(&headers)?;
        s.requests.lock().unwrap().push(format!("POST {body}"));
        let id = body["documentId"]
            .as_str()
            .ok_or(StatusCode::BAD_REQUEST)?
            .to_owned();
        let mut doc = body["data"]
            .as_object()
            .ok_or(StatusCode::BAD_REQUEST)?
            .clone();
        doc.insert("$id".into(), json!(id));
        doc.insert("$collectionId".into(), json!("tasks"));
        doc.insert("$updatedAt".into(), json!(chrono::Utc::now().to_rfc3339()));
        s.rows.lock().unwrap().push(doc.clone());
        Ok((StatusCode::CREATED, Json(Value::Object(doc))))
    }
    async fn one(
        State(s): State<Shared>,
        headers: HeaderMap,
        Path((_db, _coll, id)): Path<(String, String, String)>,
    ) -> Result<Json<Value>, StatusCode> {
        check_project(&headers)?;
        let rows = s.rows.lock().unwrap();
        rows.iter()
            .find(|d| d["$id"] == json!(id))
            .map(|d| Json(Value::Object(d.clone())))
            .ok_or(StatusCode::NOT_FOUND)
    }
    async fn update(
        State(s): State<Shared>,
        headers: HeaderMap,
        Path((_db, _coll, id)): Path<(String, String, String)>,
        Json(body): Json<Value>,
    ) -> Result<Json<Value>, StatusCode> {
        check_project(&headers)?;
        s.requests.lock().unwrap().push(format!("PATCH {body}"));
        let data = body["data"]
            .as_object()
            .ok_or(StatusCode::BAD_REQUEST)?
            .clone();
        let mut rows = s.rows.lock().unwrap();
        let doc = rows
            .iter_mut()
            .find(|d| d["$id"] == json!(id))
            .ok_or(StatusCode::NOT_FOUND)?;
        for (k, v) in data {
            doc.insert(k, v);
        }
        Ok(Json(Value::Object(doc.clone())))
    }
    async fn remove(
        State(s): State<Shared>,
        headers: HeaderMap,
        Path((_db, _coll, id)): Path<(String, String, String)>,
    ) -> Result<StatusCode, StatusCode> {
        check_project(&headers)?;
        let mut rows = s.rows.lock().unwrap();
        let before = rows.len();
        rows.retain(|d| d["$id"] != json!(id));
        if rows.len() == before {
            return Err(StatusCode::NOT_FOUND);
        }
        Ok(StatusCode::NO_CONTENT)
    }
    let app = Router::new()
        .route(
            "/v1/databases/{db}/collections/{coll}/documents",
            get(list).post(create),
        )
        .route(
            "/v1/databases/{db}/collections/{coll}/documents/{id}",
            get(one).patch(update).put(update).delete(remove),
        )
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, shared)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_with_an_appwrite_shaped_api() {
    let (url, shared) = appwrite().await;
    let config = ModelConfig::new().pull(PullMode::FullPaged);
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = SyncManager::builder()
        .base_url(&url)
        .store(store_at(&db_a.path()).await)
        .rest_only()
        .model_with::<Task>(config.clone())
        .options(fast_options())
        .build()
        .await
        .unwrap();
    let mut task = Task {
        id: "t1".into(),
        title: "write docs".into(),
        done: false,
    };
    a.save(&task).await.unwrap();
    a.sync_all().await.unwrap();
    assert_eq!(shared.rows.lock().unwrap().len(), 1);
    assert_eq!(shared.rows.lock().unwrap()[0]["title"], "write docs");

    task.done = true;
    a.save(&task).await.unwrap();
    a.sync_all().await.unwrap();
    let requests = shared.requests.lock().unwrap().clone();
    assert!(
        requests[0].starts_with("POST") && requests[0].contains(r#""documentId":"t1""#),
        "{requests:?}"
    );
    assert_eq!(
        requests[1], r#"PATCH {"data":{"done":true}}"#,
        "a wrapped delta"
    );

    let b = SyncManager::builder()
        .base_url(&url)
        .store(store_at(&db_b.path()).await)
        .rest_only()
        .model_with::<Task>(config)
        .options(fast_options())
        .build()
        .await
        .unwrap();
    b.pull::<Task>().await.unwrap();
    assert_eq!(b.get::<Task>("t1").await.unwrap(), Some(task.clone()));

    a.delete::<Task>("t1").await.unwrap();
    a.sync_all().await.unwrap();
    assert!(shared.rows.lock().unwrap().is_empty());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: a write the API accepted being sent again because its answer was not JSON
/// (an HTML or plain-text 2xx). On an API without idempotency keys that would apply it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_answer_that_is_not_json_still_acknowledges_the_write() {
    let posts = Arc::new(Mutex::new(0usize));
    let count = Arc::clone(&posts);
    let app = Router::new().route(
        "/notes",
        axum::routing::post(move || {
            let count = Arc::clone(&count);
            async move {
                *count.lock().unwrap() += 1;
                (
                    StatusCode::CREATED,
                    [("content-type", "text/html")],
                    "<html>created</html>",
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync = false;
    options.direction = offline_sync_kit::SyncDirection::PushOnly;
    let sync = SyncManager::builder()
        .base_url(format!("http://{addr}"))
        .rest_only()
        .store(store_at(&db.path()).await)
        .model::<Note>()
        .options(options)
        .build()
        .await
        .unwrap();
    sync.save(&Note {
        id: "n1".into(),
        title: "x".into(),
        done: false,
        modified_at: now_ms(),
    })
    .await
    .unwrap();
    let report = sync.sync_all().await.unwrap();
    assert_eq!((report.pushed, report.retried, report.failed), (1, 0, 0));
    let state = sync.record_state::<Note>("n1").await.unwrap();
    assert!(state.ops.is_empty() && state.meta.unwrap().synced);
    sync.sync_all().await.unwrap();
    assert_eq!(*posts.lock().unwrap(), 1, "sent once");
    sync.shutdown().await.unwrap();
    server.abort();
}

/// Guards against: a batch the server refuses for good being retried forever. A 413 or 422
/// for the whole `/sync/push` request fails its ops (kept, visible, retryable); a 401 is
/// retried, since credentials can be fixed from outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_for_good_fails_its_ops_and_a_401_is_retried() {
    let answer = Arc::new(Mutex::new(StatusCode::PAYLOAD_TOO_LARGE));
    let status = Arc::clone(&answer);
    let app = Router::new().route(
        "/sync/push",
        axum::routing::post(move || {
            let status = *status.lock().unwrap();
            async move { (status, Json(json!({"error": "no", "code": "refused"}))) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync = false;
    options.direction = offline_sync_kit::SyncDirection::PushOnly;
    let sync = SyncManager::builder()
        .base_url(format!("http://{addr}"))
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    sync.save(&todo("big", "x")).await.unwrap();
    assert!(sync.sync_all().await.is_err());
    let failed = sync.failed_ops().await.unwrap();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("413"),
        "{failed:?}"
    );
    assert_eq!(sync.status().borrow().failed_changes, 1);

    *answer.lock().unwrap() = StatusCode::UNAUTHORIZED;
    sync.save(&todo("auth", "y")).await.unwrap();
    assert!(sync.sync_all().await.is_err());
    let state = sync.record_state::<Todo>("auth").await.unwrap();
    assert_eq!(
        (state.ops[0].state, state.ops[0].attempts),
        (offline_sync_kit::store::OpState::Pending, 1)
    );
    sync.shutdown().await.unwrap();
    server.abort();
}

/// Guards against: transports disagreeing on what a failure does. With one REST call per
/// change, a 401 or 403 answering a create is retried like in batch mode (credentials are
/// renewed from outside; it used to fail the op for good), and a 422 fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_op_rest_retries_401_and_403_and_fails_422() {
    let answer = Arc::new(Mutex::new(StatusCode::UNPROCESSABLE_ENTITY));
    let status = Arc::clone(&answer);
    let app = Router::new().route(
        "/todos",
        axum::routing::post(move || {
            let status = *status.lock().unwrap();
            async move { (status, Json(json!({"error": "no"}))) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync = false;
    options.direction = offline_sync_kit::SyncDirection::PushOnly;
    let sync = SyncManager::builder()
        .base_url(format!("http://{addr}"))
        .rest_only()
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();

    sync.save(&todo("refused", "x")).await.unwrap();
    let _ = sync.sync_all().await;
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

    for (code, id) in [
        (StatusCode::UNAUTHORIZED, "no-token"),
        (StatusCode::FORBIDDEN, "no-access"),
    ] {
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
    server.abort();
}

/// Guards against: `timeout` and `retry_count` of a `RestRequest` that are parsed but never
/// applied. A read whose server answers 503 twice succeeds on the third try with
/// `retry_count(2)` and fails with `retry_count(0)`; a server slower than `timeout` fails the
/// read at the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_request_timeout_and_retry_count_are_applied() {
    let calls = Arc::new(Mutex::new(0usize));
    let seen = Arc::clone(&calls);
    let app = Router::new()
        .route(
            "/notes",
            get(move || {
                let seen = Arc::clone(&seen);
                async move {
                    let n = {
                        let mut calls = seen.lock().unwrap();
                        *calls += 1;
                        *calls
                    };
                    if n % 3 == 0 {
                        (
                            StatusCode::OK,
                            Json(
                                json!([{"id": "n1", "title": "t", "done": false, "modifiedAt": 1}]),
                            ),
                        )
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Json(json!({"error": "busy"})),
                        )
                    }
                }
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Json(json!([]))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let db = ClientDb::new();
    let sync = SyncManager::builder()
        .base_url(format!("http://{addr}"))
        .rest_only()
        .store(store_at(&db.path()).await)
        .model::<Note>()
        .options(fast_options())
        .build()
        .await
        .unwrap();
    let read = |request: RestRequest| {
        let sync = &sync;
        async move {
            sync.query_with_request(
                Query::<Note>::new(),
                FetchStrategy::LocalWithRemoteFallback,
                Some(request),
            )
            .await
        }
    };
    // Calls 1 and 2 answer 503, call 3 answers: two retries are enough.
    let got = read(RestRequest::new(RestMethod::Get).retry_count(2))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(*calls.lock().unwrap(), 3);
    let db2 = ClientDb::new();
    let fresh = SyncManager::builder()
        .base_url(format!("http://{addr}"))
        .rest_only()
        .store(store_at(&db2.path()).await)
        .model::<Note>()
        .options(fast_options())
        .build()
        .await
        .unwrap();
    // Call 4 answers 503 and no retry is allowed.
    assert!(fresh
        .query_with_request(
            Query::<Note>::new(),
            FetchStrategy::LocalWithRemoteFallback,
            Some(RestRequest::new(RestMethod::Get).retry_count(0)),
        )
        .await
        .is_err());
    assert_eq!(*calls.lock().unwrap(), 4);

    let started = std::time::Instant::now();
    let slow = fresh
        .query_with_request(
            Query::<Note>::new(),
            FetchStrategy::LocalWithRemoteFallback,
            Some(
                RestRequest::new(RestMethod::Get)
                    .url("/slow")
                    .timeout(Duration::from_millis(300)),
            ),
        )
        .await;
    assert!(slow.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    sync.shutdown().await.unwrap();
    fresh.shutdown().await.unwrap();
    server.abort();
}

/// A note for json-server whose id the server may assign: `localId` keeps the local id.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "notes")]
#[serde(rename_all = "camelCase")]
struct Memo {
    #[sync(id)]
    id: String,
    title: String,
    done: bool,
    modified_at: i64,
    #[serde(default)]
    local_id: Option<String>,
}

fn memo(id: &str, title: &str) -> Memo {
    Memo {
        id: id.into(),
        title: title.into(),
        done: false,
        modified_at: now_ms(),
        local_id: None,
    }
}

/// json-server 0.17 as a `RestPull` and a `RestBackend`: `modifiedAt_gte` (the field the app
/// keeps), `_sort`, `_page` + `_limit` followed by the `Link: rel="next"` header; no versions
/// or idempotency keys; a create of an existing id answered 500 ("Insert failed, duplicate
/// id"), so a 500 to a create is checked by reading the record; with `server_ids`, the
/// server's `id` and the local id in `localId`.
fn json_server_config(server_ids: bool) -> ModelConfig {
    let pull = offline_sync_kit::RestPull::new()
        .since(offline_sync_kit::Since::new("modifiedAt", "modifiedAt_gte"))
        .sort("_sort", "modifiedAt")
        .paging(offline_sync_kit::Paging::PageNumber {
            page_param: "_page".into(),
            size_param: "_limit".into(),
            first: 1,
        })
        .next_page(offline_sync_kit::NextPage::LinkHeader);
    let backend = offline_sync_kit::RestBackend::new()
        .idempotency_header(None)
        .version(offline_sync_kit::VersionSource::None)
        .conditional(None)
        .conflict_statuses(&[])
        .already_exists(&[500], None);
    let backend = if server_ids {
        backend.server_ids("id", "localId", ("localId", "{local_id}"))
    } else {
        backend
    };
    ModelConfig::new().pull(pull).backend(backend)
}

async fn json_client(
    url: &str,
    db: &ClientDb,
    server_ids: bool,
    online: offline_sync_kit::ManualConnectivity,
) -> (SyncManager, Arc<std::sync::atomic::AtomicU64>) {
    let pulled = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let remote = offline_sync_kit::HttpRemote::builder(url)
        .batch_push(None)
        .build()
        .unwrap();
    let mut options = fast_options();
    options.auto_sync = false;
    options.batch_size = 2;
    let sync = SyncManager::builder()
        .remote(support::counting::Counting {
            inner: remote,
            pulled: Arc::clone(&pulled),
        })
        .connectivity(online)
        .store(store_at(&db.path()).await)
        .model_with::<Memo>(json_server_config(server_ids))
        .options(options)
        .build()
        .await
        .unwrap();
    (sync, pulled)
}

async fn push_until_settled(sync: &SyncManager) {
    for _ in 0..100 {
        let _ = sync
            .synchronize(offline_sync_kit::SyncRun::new(
                offline_sync_kit::SyncDirection::PushOnly,
            ))
            .await;
        if sync.status().borrow().pending_changes == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("changes still queued: {:?}", sync.status().borrow());
}

async fn memos_where(url: &str, field: &str, value: &str) -> Vec<Value> {
    reqwest::Client::new()
        .get(format!("{url}/notes"))
        .query(&[(field, value)])
        .send()
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
}

/// The issue's checks against json-server 0.17 with the client's ids: a create made offline
/// lands once, a delete made offline reaches it, another client's change is pulled by
/// `modifiedAt_gte` through `Link` pages and an incremental pull gets only what changed
/// (counted at the remote), and a create whose answer a proxy drops ends as one copy with
/// the op settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_server_offline_writes_incremental_pulls_and_a_lost_create_answer() {
    use std::sync::atomic::Ordering;
    let Some((_child, url, _dir)) = json_server().await else {
        return;
    };
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = FaultProxy::start(([127, 0, 0, 1], port).into()).await;
    let online = offline_sync_kit::ManualConnectivity::new(false);
    let db = ClientDb::new();
    let (a, pulled) = json_client(&proxy.url(), &db, false, online.clone()).await;

    // Offline create, then sync: one copy.
    a.save(&memo("m1", "made offline")).await.unwrap();
    online.set_online(true);
    push_until_settled(&a).await;
    assert_eq!(memos_where(&url, "title", "made offline").await.len(), 1);

    // Offline delete.
    online.set_online(false);
    a.delete::<Memo>("m1").await.unwrap();
    online.set_online(true);
    push_until_settled(&a).await;
    assert!(memos_where(&url, "title", "made offline").await.is_empty());

    // Another client writes five notes (after the bound the reconnect's pull left); the pull
    // follows `Link` pages of 2.
    let http = reqwest::Client::new();
    for n in 0..5 {
        let status = http
            .post(format!("{url}/notes"))
            .json(&json!({"id": format!("o{n}"), "title": format!("other {n}"), "done": false, "modifiedAt": now_ms() + n}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 201);
    }
    pulled.store(0, Ordering::SeqCst);
    a.pull::<Memo>().await.unwrap();
    assert_eq!(pulled.swap(0, Ordering::SeqCst), 5);
    assert!(a.get::<Memo>("o4").await.unwrap().is_some());
    // It changes one; the next pull asks from the largest `modifiedAt` (inclusive): the
    // newest note again and the changed one.
    let status = http
        .patch(format!("{url}/notes/o1"))
        .json(&json!({"title": "changed elsewhere", "modifiedAt": now_ms() + 1000}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    a.pull::<Memo>().await.unwrap();
    assert_eq!(pulled.swap(0, Ordering::SeqCst), 2);
    assert_eq!(
        a.get::<Memo>("o1").await.unwrap().unwrap().title,
        "changed elsewhere"
    );

    // A create whose answer is lost: the replay is answered 500 (duplicate id), the record is
    // read back, it holds what was sent: applied, one copy.
    a.save(&memo("m2", "answer lost")).await.unwrap();
    proxy.fault_next_settled(Fault::CutAfterResponse, 1).await;
    let _ = a
        .synchronize(offline_sync_kit::SyncRun::new(
            offline_sync_kit::SyncDirection::PushOnly,
        ))
        .await;
    let state = a.record_state::<Memo>("m2").await.unwrap();
    assert!(state.ops.len() == 1 && state.ops[0].sent, "{state:?}");
    push_until_settled(&a).await;
    assert_eq!(memos_where(&url, "title", "answer lost").await.len(), 1);
    let state = a.record_state::<Memo>("m2").await.unwrap();
    assert!(state.ops.is_empty() && state.meta.unwrap().synced);
    assert!(a.failed_ops().await.unwrap().is_empty());
    a.shutdown().await.unwrap();
}

/// Ids json-server assigns (a create without `id`): the create's answer is lost and the
/// process restarts before it learns the server's id; the replay finds the copy by `localId`,
/// and the local row and the update queued behind the create go to the server's id; one copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_server_assigned_ids_rekey_the_record_and_its_queued_update() {
    let Some((_child, url, _dir)) = json_server().await else {
        return;
    };
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = FaultProxy::start(([127, 0, 0, 1], port).into()).await;
    let db = ClientDb::new();
    let (a, _) = json_client(
        &proxy.url(),
        &db,
        true,
        offline_sync_kit::ManualConnectivity::new(true),
    )
    .await;
    a.save(&memo("local-1", "answer lost")).await.unwrap();
    proxy.fault_next_settled(Fault::CutAfterResponse, 1).await;
    let _ = a
        .synchronize(offline_sync_kit::SyncRun::new(
            offline_sync_kit::SyncDirection::PushOnly,
        ))
        .await;
    let state = a.record_state::<Memo>("local-1").await.unwrap();
    assert!(state.ops.len() == 1 && state.ops[0].sent, "{state:?}");
    // The process stops before it learns the server's id, and starts again on its database.
    a.shutdown().await.unwrap();
    drop(a);
    let online = offline_sync_kit::ManualConnectivity::new(true);
    let (a, _) = json_client(&proxy.url(), &db, true, online).await;
    let mut edited = a.get::<Memo>("local-1").await.unwrap().unwrap();
    edited.title = "edited".into();
    a.save(&edited).await.unwrap();
    push_until_settled(&a).await;
    let copies = memos_where(&url, "localId", "local-1").await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0]["title"], "edited");
    // json-server numbers the ids it assigns; the engine keeps ids as text.
    let server_id = match &copies[0]["id"] {
        Value::Number(n) => n.to_string(),
        other => other.as_str().unwrap().to_owned(),
    };
    assert_ne!(server_id, "local-1");
    let local = a.get::<Memo>(&server_id).await.unwrap().unwrap();
    assert_eq!(
        (local.title.as_str(), local.local_id.as_deref()),
        ("edited", Some("local-1"))
    );
    assert_eq!(a.get::<Memo>("local-1").await.unwrap(), None);
    a.shutdown().await.unwrap();
}
