//! REST configuration against small backends written here (axum on loopback): the pull
//! cursor's arithmetic, pull parameters and paging signals, methods per operation, versions
//! and conditional writes, tombstones, replays.
//!
//! Guards against: a REST option that is parsed but never applied, and a cursor or a
//! conflict that the engine gets wrong on a backend that is not sync-server.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query as UrlQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use offline_sync_kit::prelude::*;
use offline_sync_kit::store::Resolution;
use offline_sync_kit::{
    ConflictContext, ConflictResolver, ConflictStrategy, ManualConnectivity, ModelConfig, NextPage,
    Paging, PullMode, RestBackend, RestPull, Since, TimeFormat, VersionSource,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use support::*;

/// A record whose `mark` is the pull cursor's field: a number in some tests, a timestamp in
/// others (kept as JSON so one model serves both).
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "marks")]
struct Mark {
    #[sync(id)]
    id: String,
    title: String,
    #[sync(json)]
    mark: Value,
}

/// A read-only list API: `GET /marks?since=..` answers the records whose `mark` is at least
/// `since` (compared as the test says), and notes every `since` it was asked for.
#[derive(Default)]
struct Marks {
    rows: Mutex<Vec<Value>>,
    asked: Mutex<Vec<Option<String>>>,
}

async fn marks_api(rows: Vec<Value>) -> (String, Arc<Marks>) {
    let shared = Arc::new(Marks {
        rows: Mutex::new(rows),
        asked: Mutex::default(),
    });
    async fn list(
        State(s): State<Arc<Marks>>,
        UrlQuery(q): UrlQuery<HashMap<String, String>>,
    ) -> Json<Value> {
        let since = q.get("since").cloned();
        s.asked.lock().unwrap().push(since.clone());
        let rows = s.rows.lock().unwrap();
        // The backend compares by value: numbers as numbers, timestamps as instants.
        let key = |v: &Value| -> f64 {
            match v {
                Value::Number(n) => n.as_f64().unwrap(),
                Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.timestamp_nanos_opt().unwrap() as f64)
                    .unwrap_or_else(|_| s.parse().unwrap()),
                _ => 0.0,
            }
        };
        let bound = since.map(|s| key(&Value::String(s)));
        let mut out: Vec<Value> = rows
            .iter()
            .filter(|r| bound.is_none_or(|b| key(&r["mark"]) >= b))
            .cloned()
            .collect();
        out.sort_by(|a, b| key(&a["mark"]).total_cmp(&key(&b["mark"])));
        Json(Value::Array(out))
    }
    let app = Router::new()
        .route("/marks", get(list))
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, shared)
}

/// Pulls twice with the `UpdatedSince` mode over `rows` and returns the `since` of the second
/// pull.
async fn second_since(rows: Vec<Value>) -> Option<String> {
    let (url, shared) = marks_api(rows).await;
    let db = ClientDb::new();
    let pull = PullMode::UpdatedSince {
        field: "mark".into(),
        since_param: "since".into(),
    };
    let sync = SyncManager::builder()
        .base_url(&url)
        .store(store_at(&db.path()).await)
        .rest_only()
        .model_with::<Mark>(ModelConfig::new().pull(pull))
        .options(fast_options())
        .build()
        .await
        .unwrap();
    sync.pull::<Mark>().await.unwrap();
    sync.pull::<Mark>().await.unwrap();
    sync.shutdown().await.unwrap();
    let asked = shared.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(asked[0], None);
    asked[1].clone()
}

/// Guards against: the max-of-field cursor compared as text, where "9" > "10" and
/// "…:00Z" > "…:00.5Z": the next pull then asks again for what it already has, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_updated_since_cursor_is_the_largest_value_by_number_or_time() {
    let numbers = vec![
        json!({"id": "a", "title": "a", "mark": 9}),
        json!({"id": "b", "title": "b", "mark": 10}),
    ];
    assert_eq!(second_since(numbers).await.as_deref(), Some("10"));
    let numbers_as_text = vec![
        json!({"id": "a", "title": "a", "mark": "9"}),
        json!({"id": "b", "title": "b", "mark": "10"}),
    ];
    assert_eq!(second_since(numbers_as_text).await.as_deref(), Some("10"));
    let times = vec![
        json!({"id": "a", "title": "a", "mark": "2026-01-01T00:00:00Z"}),
        json!({"id": "b", "title": "b", "mark": "2026-01-01T00:00:00.500Z"}),
    ];
    assert_eq!(
        second_since(times).await.as_deref(),
        Some("2026-01-01T00:00:00.500Z")
    );
}

/// An item of the conditional-write backend below: `rev` (its change number) and `updatedAt`
/// are the server's; the version travels as the `ETag`.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "items")]
#[serde(rename_all = "camelCase")]
struct Item {
    #[sync(id)]
    id: String,
    title: String,
    done: bool,
    #[serde(default)]
    rev: i64,
    #[serde(default)]
    updated_at: Option<String>,
}

/// A REST backend with conditional writes (`ETag`, `If-Match`, 412 with no body, 428 without
/// the header), tombstones in its list (`state: "deleted"`), paged by a `Next-Page` header
/// holding the next URL. Every record change takes the next `rev`.
#[derive(Default)]
struct Items {
    rows: Mutex<Vec<Value>>,
    rev: Mutex<i64>,
    /// Statuses answered to writes, in order.
    writes: Mutex<Vec<u16>>,
    /// Records sent in list pages.
    listed: Mutex<usize>,
    /// Answer a stale write 409 with the current record under `current` (else 412, no body).
    conflict_with_record: std::sync::atomic::AtomicBool,
    /// Single reads answered.
    fetched: Mutex<usize>,
}

impl Items {
    fn next_rev(&self) -> i64 {
        let mut rev = self.rev.lock().unwrap();
        *rev += 1;
        *rev
    }
    fn live(&self, id: &str) -> Option<Value> {
        self.rows
            .lock()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id && r["state"] == "live")
            .cloned()
    }
}

mod items_api {
    use super::*;
    use axum::extract::Path;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};

    fn with_etag(status: StatusCode, row: &Value) -> Response {
        let tag = format!("\"{}\"", row["version"]);
        (status, [("etag", tag)], Json(row.clone())).into_response()
    }

    pub(super) async fn list(
        State(s): State<Arc<Items>>,
        UrlQuery(q): UrlQuery<HashMap<String, String>>,
    ) -> Response {
        let after: i64 = q.get("after").and_then(|v| v.parse().ok()).unwrap_or(0);
        let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(100);
        let skip: usize = q.get("skip").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut rows: Vec<Value> = s
            .rows
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r["rev"].as_i64().unwrap() > after)
            .cloned()
            .collect();
        rows.sort_by_key(|r| r["rev"].as_i64().unwrap());
        let page: Vec<Value> = rows.iter().skip(skip).take(limit).cloned().collect();
        *s.listed.lock().unwrap() += page.len();
        let mut headers = HeaderMap::new();
        if skip + page.len() < rows.len() {
            let next = format!(
                "/items?after={after}&limit={limit}&skip={}",
                skip + page.len()
            );
            headers.insert("next-page", next.parse().unwrap());
        }
        (headers, Json(Value::Array(page))).into_response()
    }

    pub(super) async fn one(State(s): State<Arc<Items>>, Path(id): Path<String>) -> Response {
        *s.fetched.lock().unwrap() += 1;
        match s.live(&id) {
            Some(row) => with_etag(StatusCode::OK, &row),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }

    pub(super) async fn create(State(s): State<Arc<Items>>, Json(body): Json<Value>) -> Response {
        let mut row = body.as_object().unwrap().clone();
        let id = row["id"].as_str().unwrap().to_owned();
        if s.live(&id).is_some() {
            s.writes.lock().unwrap().push(409);
            return (StatusCode::CONFLICT, Json(json!({"error": "exists"}))).into_response();
        }
        let rev = s.next_rev();
        row.insert("version".into(), json!(1));
        row.insert("rev".into(), json!(rev));
        row.insert("state".into(), json!("live"));
        row.insert(
            "updatedAt".into(),
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        let row = Value::Object(row);
        s.rows.lock().unwrap().push(row.clone());
        s.writes.lock().unwrap().push(201);
        with_etag(StatusCode::CREATED, &row)
    }

    /// `If-Match` is required and must name the current version.
    fn precondition(s: &Items, id: &str, headers: &HeaderMap) -> Result<Value, StatusCode> {
        let current = s.live(id).ok_or(StatusCode::NOT_FOUND)?;
        let Some(tag) = headers.get("if-match").and_then(|v| v.to_str().ok()) else {
            return Err(StatusCode::PRECONDITION_REQUIRED);
        };
        if tag != format!("\"{}\"", current["version"]) {
            return Err(StatusCode::PRECONDITION_FAILED);
        }
        Ok(current)
    }

    fn store(s: &Items, row: Value) {
        let mut rows = s.rows.lock().unwrap();
        let slot = rows.iter_mut().find(|r| r["id"] == row["id"]).unwrap();
        *slot = row;
    }

    pub(super) async fn update(
        State(s): State<Arc<Items>>,
        Path(id): Path<String>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Response {
        let current = match precondition(&s, &id, &headers) {
            Ok(row) => row,
            Err(StatusCode::PRECONDITION_FAILED)
                if s.conflict_with_record
                    .load(std::sync::atomic::Ordering::SeqCst) =>
            {
                s.writes.lock().unwrap().push(409);
                let current = s.live(&id).unwrap();
                return (
                    StatusCode::CONFLICT,
                    Json(json!({"error": "stale", "current": current})),
                )
                    .into_response();
            }
            Err(status) => {
                s.writes.lock().unwrap().push(status.as_u16());
                return status.into_response();
            }
        };
        let mut row = current.as_object().unwrap().clone();
        for (k, v) in body.as_object().unwrap() {
            assert!(
                !["rev", "updatedAt", "version", "state"].contains(&k.as_str()),
                "a server field was sent back: {k}"
            );
            row.insert(k.clone(), v.clone());
        }
        row.insert(
            "version".into(),
            json!(current["version"].as_i64().unwrap() + 1),
        );
        row.insert("rev".into(), json!(s.next_rev()));
        row.insert(
            "updatedAt".into(),
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        let row = Value::Object(row);
        store(&s, row.clone());
        s.writes.lock().unwrap().push(200);
        with_etag(StatusCode::OK, &row)
    }

    pub(super) async fn remove(
        State(s): State<Arc<Items>>,
        Path(id): Path<String>,
        headers: HeaderMap,
    ) -> Response {
        let current = match precondition(&s, &id, &headers) {
            Ok(row) => row,
            Err(status) => {
                s.writes.lock().unwrap().push(status.as_u16());
                return status.into_response();
            }
        };
        let mut row = current.as_object().unwrap().clone();
        row.insert("state".into(), json!("deleted"));
        row.insert(
            "version".into(),
            json!(current["version"].as_i64().unwrap() + 1),
        );
        row.insert("rev".into(), json!(s.next_rev()));
        store(&s, Value::Object(row));
        s.writes.lock().unwrap().push(204);
        StatusCode::NO_CONTENT.into_response()
    }
}

async fn items_backend() -> (String, Arc<Items>) {
    let shared = Arc::new(Items::default());
    let app = Router::new()
        .route("/items", get(items_api::list).post(items_api::create))
        .route(
            "/items/{id}",
            get(items_api::one)
                .patch(items_api::update)
                .delete(items_api::remove),
        )
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, shared)
}

/// The configuration of the items backend: ETag versions, quoted `If-Match`, 412 (and 409)
/// conflicts whose record is fetched, tombstones by `state`, `rev` and `updatedAt` kept by the
/// server, pages by `Next-Page`.
fn items_config() -> ModelConfig {
    let pull = RestPull::new()
        .since(Since::new("rev", "after"))
        .paging(Paging::NextUrl {
            limit_param: Some("limit".into()),
        })
        .next_page(NextPage::Header("Next-Page".into()));
    let backend = RestBackend::new()
        .idempotency_header(None)
        .version(VersionSource::ETag)
        .conditional(Some(("If-Match", "\"{version}\"")))
        .conflict_statuses(&[409, 412])
        .conflict_record_at(None)
        .tombstone("state", json!("deleted"))
        .updated_at("updatedAt", TimeFormat::Iso8601)
        .server_fields(&["rev", "updatedAt"]);
    ModelConfig::new().pull(pull).backend(backend)
}

async fn items_client(url: &str, db: &ClientDb, strategy: ConflictStrategy) -> SyncManager {
    let mut options = fast_options();
    options.conflict_strategy = strategy;
    options.auto_sync = false;
    options.batch_size = 2;
    SyncManager::builder()
        .base_url(url)
        .store(store_at(&db.path()).await)
        .rest_only()
        .connectivity(ManualConnectivity::new(true))
        .model_with::<Item>(items_config())
        .options(options)
        .build()
        .await
        .unwrap()
}

/// A resolver that keeps both titles.
#[derive(Debug)]
struct JoinTitles;

impl ConflictResolver for JoinTitles {
    fn resolve(&self, conflict: &ConflictContext<'_>) -> Resolution {
        let mut data = conflict.local.cloned().unwrap_or_default();
        let local = data["title"].as_str().unwrap_or_default().to_owned();
        let remote = conflict.remote.data["title"].as_str().unwrap_or_default();
        data.insert("title".into(), json!(format!("{remote} + {local}")));
        Resolution::Merged(data)
    }
}

/// Guards against: a concurrent edit silently overwritten on a backend with conditional
/// writes. B changes an item after A read it; A's write carries A's version in `If-Match`,
/// is refused with 412 (no body), the current item is fetched with its `ETag`, and each
/// strategy settles it as it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_edit_is_a_conflict_settled_by_each_strategy() {
    type Expect = fn(&Value, &Item);
    let cases: Vec<(&str, ConflictStrategy, bool, Expect)> = vec![
        (
            "server wins",
            ConflictStrategy::ServerWins,
            false,
            |server, local| {
                assert_eq!(server["title"], "from B");
                assert_eq!(local.title, "from B");
            },
        ),
        (
            "client wins",
            ConflictStrategy::ClientWins,
            false,
            |server, local| {
                assert_eq!(server["title"], "from A");
                assert_eq!(local.title, "from A");
            },
        ),
        (
            "last update wins",
            ConflictStrategy::LastUpdateWins,
            false,
            |server, local| {
                // A wrote after B's write reached the server.
                assert_eq!(server["title"], "from A");
                assert_eq!(local.title, "from A");
            },
        ),
        (
            "merge fields",
            ConflictStrategy::MergeFields,
            true,
            |server, local| {
                assert_eq!(
                    (server["title"].as_str(), server["done"].as_bool()),
                    (Some("from B"), Some(true))
                );
                assert_eq!((local.title.as_str(), local.done), ("from B", true));
            },
        ),
        (
            "custom",
            ConflictStrategy::Custom(Arc::new(JoinTitles)),
            false,
            |server, local| {
                assert_eq!(server["title"], "from B + from A");
                assert_eq!(local.title, "from B + from A");
            },
        ),
    ];
    for (name, strategy, a_edits_done, expect) in cases {
        let (url, shared) = items_backend().await;
        let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
        let a = items_client(&url, &db_a, strategy).await;
        let b = items_client(&url, &db_b, ConflictStrategy::ServerWins).await;
        let item = Item {
            id: "i1".into(),
            title: "first".into(),
            done: false,
            rev: 0,
            updated_at: None,
        };
        a.save(&item).await.unwrap();
        a.sync_all().await.unwrap();
        b.sync_all().await.unwrap();
        let mut theirs = b
            .get::<Item>("i1")
            .await
            .unwrap()
            .expect("B pulled the item");
        theirs.title = "from B".into();
        b.save(&theirs).await.unwrap();
        b.sync_all().await.unwrap();
        // A's edit is later than B's on the clock (for LastUpdateWins; not a timed assertion).
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let mut mine = a.get::<Item>("i1").await.unwrap().unwrap();
        if a_edits_done {
            mine.done = true;
        } else {
            mine.title = "from A".into();
        }
        a.save(&mine).await.unwrap();
        let report = a.sync_all().await.unwrap();
        assert!(
            report.conflicts >= 1,
            "{name}: {report:?}, writes {:?}, server {:?}",
            shared.writes.lock().unwrap(),
            shared.live("i1")
        );
        // Whatever a strategy pushes after the conflict is based on the version it fetched.
        a.sync_all().await.unwrap();
        let server = shared.live("i1").unwrap();
        let local = a.get::<Item>("i1").await.unwrap().unwrap();
        expect(&server, &local);
        let writes = shared.writes.lock().unwrap().clone();
        assert!(writes.contains(&412), "{name}: {writes:?}");
        assert!(
            !writes.contains(&428),
            "{name}: every write was conditional: {writes:?}"
        );
        let state = a.record_state::<Item>("i1").await.unwrap();
        assert!(state.ops.is_empty(), "{name}: {state:?}");
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }
}

/// Guards against: tombstones in a REST pull ignored, and "more pages" guessed from a full
/// page. The pull follows `Next-Page` until the header is gone (pages of 2 here), applies
/// the tombstone as a delete, and the next pull asks only for what changed after the largest
/// `rev`, so the server sends only the changed items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_pull_follows_next_page_applies_tombstones_and_asks_only_for_changes() {
    let (url, shared) = items_backend().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = items_client(&url, &db_a, ConflictStrategy::ServerWins).await;
    let b = items_client(&url, &db_b, ConflictStrategy::ServerWins).await;
    for n in 0..5 {
        a.save(&Item {
            id: format!("i{n}"),
            title: format!("item {n}"),
            done: false,
            rev: 0,
            updated_at: None,
        })
        .await
        .unwrap();
    }
    a.sync_all().await.unwrap();
    *shared.listed.lock().unwrap() = 0;
    let report = b.pull::<Item>().await.unwrap();
    assert_eq!(report.pulled, 5);
    assert_eq!(
        *shared.listed.lock().unwrap(),
        5,
        "three pages of 2, 2 and 1"
    );
    // The server's fields were stored.
    let got = b.get::<Item>("i4").await.unwrap().unwrap();
    assert_eq!(got.rev, 5);
    assert!(got.updated_at.is_some());

    a.delete::<Item>("i1").await.unwrap();
    let mut edited = a.get::<Item>("i3").await.unwrap().unwrap();
    edited.done = true;
    a.save(&edited).await.unwrap();
    a.sync_all().await.unwrap();
    *shared.listed.lock().unwrap() = 0;
    b.pull::<Item>().await.unwrap();
    assert_eq!(
        *shared.listed.lock().unwrap(),
        2,
        "only the tombstone and the edited item were sent"
    );
    assert_eq!(
        b.get::<Item>("i1").await.unwrap(),
        None,
        "the tombstone deleted it"
    );
    assert!(b.get::<Item>("i3").await.unwrap().unwrap().done);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Guards against: a REST configuration that cannot work surfacing at the first sync (or
/// never). Each of these is refused by `build()`, naming the model and what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configurations_that_cannot_work_are_refused_when_the_manager_is_built() {
    use offline_sync_kit::{CountAt, RestMethod, RestRequest, RestRequests};
    let cases: Vec<(&str, ModelConfig)> = vec![
        (
            "since parameter",
            ModelConfig::new().pull(PullMode::UpdatedSince {
                field: "rev".into(),
                since_param: String::new(),
            }),
        ),
        (
            "query parameter to send the bound",
            ModelConfig::new().pull(RestPull::new().since(Since::new("rev", ""))),
        ),
        (
            "would never be followed",
            ModelConfig::new().pull(RestPull::new().next_page(NextPage::LinkHeader)),
        ),
        (
            "cannot follow the signal",
            ModelConfig::new().pull(
                RestPull::new()
                    .paging(Paging::NextUrl { limit_param: None })
                    .next_page(NextPage::TotalCount(CountAt::Header(
                        "X-Total-Count".into(),
                    ))),
            ),
        ),
        (
            "needs versions",
            ModelConfig::new().backend(RestBackend::new().version(VersionSource::None)),
        ),
        (
            "`{version}`",
            ModelConfig::new().backend(RestBackend::new().conditional(Some(("If-Match", "*")))),
        ),
        (
            "`modifiedAt` is not a field",
            ModelConfig::new()
                .backend(RestBackend::new().updated_at("modifiedAt", TimeFormat::EpochMillis)),
        ),
        (
            "the server field `owner`",
            ModelConfig::new().backend(RestBackend::new().server_fields(&["owner"])),
        ),
        (
            "must be 4xx",
            ModelConfig::new().backend(RestBackend::new().conflict_statuses(&[500])),
        ),
        (
            "`{local_id}`",
            ModelConfig::new().backend(RestBackend::new().server_ids(
                "objectId",
                "title",
                ("where", "{}"),
            )),
        ),
        (
            "cannot be sent as DELETE",
            ModelConfig::new().rest(
                RestRequests::new()
                    .with(RestRequest::new(RestMethod::Patch).send_as(RestMethod::Delete)),
            ),
        ),
        (
            "cannot go with `server_ids`",
            ModelConfig::new()
                .rest(
                    RestRequests::new()
                        .with(RestRequest::new(RestMethod::Post).send_as(RestMethod::Put)),
                )
                .backend(RestBackend::new().server_ids("id", "title", ("title", "{local_id}"))),
        ),
    ];
    for (expected, config) in cases {
        let db = ClientDb::new();
        let err = SyncManager::builder()
            .base_url("http://127.0.0.1:9")
            .store(store_at(&db.path()).await)
            .rest_only()
            .model_with::<Item>(config)
            .build()
            .await
            .err()
            .unwrap_or_else(|| panic!("{expected}: built"));
        let text = err.to_string();
        assert!(
            matches!(err, offline_sync_kit::Error::Config(_)),
            "{expected}: {err:?}"
        );
        assert!(
            text.contains("model `item`") && text.contains(expected),
            "{expected}: {text}"
        );
    }
    // The working configuration of this file builds.
    let db = ClientDb::new();
    let sync = items_client("http://127.0.0.1:9", &db, ConflictStrategy::ServerWins).await;
    sync.shutdown().await.unwrap();
}

/// A list API that pages five records every way at once: by a token (`cursor`, the next in
/// `meta.next`), by offset (`skip`, total in `X-Total-Count`), by page number from 0 (`page`,
/// the next page's URL in `links.next`), or not at all. A `PUT /pages/{id}` creates a record
/// and notes its `X-Request-Id`.
#[derive(Default)]
struct Pages {
    requests: Mutex<usize>,
    created: Mutex<Vec<(String, Option<String>)>>,
}

async fn pages_api() -> (String, Arc<Pages>) {
    use axum::extract::Path;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let shared = Arc::new(Pages::default());
    async fn list(
        State(s): State<Arc<Pages>>,
        UrlQuery(q): UrlQuery<HashMap<String, String>>,
    ) -> axum::response::Response {
        *s.requests.lock().unwrap() += 1;
        let rows: Vec<Value> = (0..5)
            .map(|n| json!({"id": format!("r{n}"), "title": format!("record {n}"), "mark": n}))
            .collect();
        let num = |name: &str| q.get(name).map(|v| v.parse::<usize>().unwrap());
        let limit = num("limit").or(num("size")).unwrap_or(rows.len());
        if let Some(page) = num("page") {
            let slice: Vec<Value> = rows
                .iter()
                .skip(page * limit)
                .take(limit)
                .cloned()
                .collect();
            let next = ((page + 1) * limit < rows.len())
                .then(|| format!("/pages?page={}&size={limit}", page + 1));
            return Json(json!({"data": slice, "links": {"next": next}})).into_response();
        }
        let start = num("cursor").or(num("skip")).unwrap_or(0);
        let slice: Vec<Value> = rows.iter().skip(start).take(limit).cloned().collect();
        let end = start + slice.len();
        let next = (end < rows.len()).then(|| end.to_string());
        (
            [("x-total-count", rows.len().to_string())],
            Json(json!({"data": slice, "meta": {"next": next}})),
        )
            .into_response()
    }
    async fn put(
        State(s): State<Arc<Pages>>,
        Path(id): Path<String>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> axum::response::Response {
        let key = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert!(
            headers.get("idempotency-key").is_none(),
            "the default header was sent"
        );
        s.created.lock().unwrap().push((id, key));
        (StatusCode::CREATED, Json(body)).into_response()
    }
    let app = Router::new()
        .route("/pages", get(list))
        .route("/pages/{id}", axum::routing::put(put))
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, shared)
}

/// A record of the pages API.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "pages")]
struct Page {
    #[sync(id)]
    id: String,
    title: String,
    mark: i64,
}

/// Guards against: a paging scheme or signal that is configurable but not followed. Each
/// scheme reads the five records in pages of two and stops when its signal says so: three
/// requests, or one when there is no paging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_paging_scheme_follows_its_own_signal() {
    use offline_sync_kit::CountAt;
    let cases: Vec<(&str, RestPull, usize)> = vec![
        (
            "token in the body",
            RestPull::new()
                .paging(Paging::Cursor {
                    cursor_param: "cursor".into(),
                    limit_param: Some("limit".into()),
                })
                .next_page(NextPage::BodyCursor("meta.next".into())),
            3,
        ),
        (
            "offset and a total count header",
            RestPull::new()
                .paging(Paging::Offset {
                    offset_param: "skip".into(),
                    limit_param: "limit".into(),
                })
                .next_page(NextPage::TotalCount(CountAt::Header(
                    "X-Total-Count".into(),
                ))),
            3,
        ),
        (
            "page numbers from 0 and a next URL in the body",
            RestPull::new()
                .paging(Paging::PageNumber {
                    page_param: "page".into(),
                    size_param: "size".into(),
                    first: 0,
                })
                .next_page(NextPage::BodyUrl("links.next".into())),
            3,
        ),
        (
            "offset and full pages",
            RestPull::new()
                .paging(Paging::Offset {
                    offset_param: "skip".into(),
                    limit_param: "limit".into(),
                })
                .next_page(NextPage::FullPage),
            3,
        ),
        ("no paging", RestPull::new(), 1),
    ];
    for (name, pull, requests) in cases {
        let (url, shared) = pages_api().await;
        let db = ClientDb::new();
        let mut options = fast_options();
        options.auto_sync = false;
        options.batch_size = 2;
        let sync = SyncManager::builder()
            .base_url(&url)
            .store(store_at(&db.path()).await)
            .rest_only()
            .connectivity(ManualConnectivity::new(true))
            .model_with::<Page>(ModelConfig::new().pull(pull.records_at("data")))
            .options(options)
            .build()
            .await
            .unwrap();
        let report = sync.pull::<Page>().await.unwrap();
        assert_eq!(report.pulled, 5, "{name}");
        assert_eq!(*shared.requests.lock().unwrap(), requests, "{name}");
        assert_eq!(
            sync.get::<Page>("r4").await.unwrap().unwrap().mark,
            4,
            "{name}"
        );
        sync.shutdown().await.unwrap();
    }
}

/// Guards against: the method and the idempotency header of a write that are configurable
/// but not applied. A create sent as `PUT` to the item URL carries its key in `X-Request-Id`
/// (not the default header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_goes_by_put_with_the_configured_idempotency_header() {
    use offline_sync_kit::{RestMethod, RestRequest, RestRequests};
    let (url, shared) = pages_api().await;
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync = false;
    let config = ModelConfig::new()
        .rest(RestRequests::new().with(RestRequest::new(RestMethod::Post).send_as(RestMethod::Put)))
        .backend(RestBackend::new().idempotency_header(Some("X-Request-Id")));
    let sync = SyncManager::builder()
        .base_url(&url)
        .store(store_at(&db.path()).await)
        .rest_only()
        .connectivity(ManualConnectivity::new(true))
        .model_with::<Page>(config)
        .options(options)
        .build()
        .await
        .unwrap();
    sync.save(&Page {
        id: "p1".into(),
        title: "by put".into(),
        mark: 1,
    })
    .await
    .unwrap();
    let report = sync
        .synchronize(offline_sync_kit::SyncRun::new(
            offline_sync_kit::SyncDirection::PushOnly,
        ))
        .await
        .unwrap();
    assert_eq!(report.pushed, 1);
    let created = shared.created.lock().unwrap().clone();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0].0, "p1");
    let key = created[0]
        .1
        .clone()
        .expect("the key travels in X-Request-Id");
    let state = sync.record_state::<Page>("p1").await.unwrap();
    assert!(state.ops.is_empty() && !key.is_empty());
    sync.shutdown().await.unwrap();
}

/// A list of five records ordered by `mark` (`mark_gte`, `skip`, `limit`) in which the first
/// record is changed by someone else (its `mark` becomes 10) just before the second page is
/// answered.
async fn moving_api() -> (String, Arc<Mutex<Vec<Value>>>) {
    let rows = Arc::new(Mutex::new(
        (1..=5)
            .map(|n| json!({"id": format!("r{n}"), "title": format!("record {n}"), "mark": n}))
            .collect::<Vec<Value>>(),
    ));
    let requests = Arc::new(Mutex::new(0usize));
    let (rows2, requests2) = (Arc::clone(&rows), Arc::clone(&requests));
    let app = Router::new().route(
        "/pages",
        get(move |UrlQuery(q): UrlQuery<HashMap<String, String>>| {
            let (rows, requests) = (Arc::clone(&rows2), Arc::clone(&requests2));
            async move {
                let n = {
                    let mut r = requests.lock().unwrap();
                    *r += 1;
                    *r
                };
                let mut rows = rows.lock().unwrap();
                if n == 2 {
                    rows[0]["mark"] = json!(10);
                    rows[0]["title"] = json!("moved");
                }
                let num = |k: &str| q.get(k).map(|v| v.parse::<i64>().unwrap());
                let bound = num("mark_gte").unwrap_or(i64::MIN);
                let mut list: Vec<Value> = rows
                    .iter()
                    .filter(|r| r["mark"].as_i64().unwrap() >= bound)
                    .cloned()
                    .collect();
                list.sort_by_key(|r| r["mark"].as_i64().unwrap());
                let skip = num("skip").unwrap_or(0) as usize;
                let limit = num("limit").unwrap_or(100) as usize;
                Json(Value::Array(
                    list.into_iter().skip(skip).take(limit).collect(),
                ))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rows)
}

/// Guards against: a record skipped for good when another one changes during a pull of
/// several pages. Keyset paging (each page from the largest `mark` read, skipping the
/// records of that value already read) reads all five, the moved one with its change; offset
/// paging shifts the records behind the moved one and misses one, as `Paging`'s docs say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_paging_misses_no_record_that_moves_during_the_pass() {
    let keyset = Paging::Keyset {
        limit_param: "limit".into(),
        skip_param: "skip".into(),
    };
    let offset = Paging::Offset {
        offset_param: "skip".into(),
        limit_param: "limit".into(),
    };
    for (paging, all) in [(keyset, true), (offset, false)] {
        let (url, _rows) = moving_api().await;
        let db = ClientDb::new();
        let mut options = fast_options();
        options.auto_sync = false;
        options.batch_size = 2;
        let pull = RestPull::new()
            .since(Since::new("mark", "mark_gte"))
            .paging(paging.clone())
            .next_page(NextPage::FullPage);
        let sync = SyncManager::builder()
            .base_url(&url)
            .store(store_at(&db.path()).await)
            .rest_only()
            .connectivity(ManualConnectivity::new(true))
            .model_with::<Page>(ModelConfig::new().pull(pull))
            .options(options)
            .build()
            .await
            .unwrap();
        sync.pull::<Page>().await.unwrap();
        let moved = sync.get::<Page>("r1").await.unwrap().unwrap();
        assert_eq!(
            (moved.title.as_str(), moved.mark),
            ("moved", 10),
            "{paging:?}"
        );
        let have: Vec<String> = sync
            .query(Query::<Page>::new())
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        if all {
            assert_eq!(have.len(), 5, "{paging:?}: {have:?}");
        } else {
            assert_eq!(have.len(), 4, "{paging:?} misses one: {have:?}");
        }
        sync.shutdown().await.unwrap();
    }
}

/// Guards against: `conflict_record_at` parsed but not read. A backend that answers a stale
/// write 409 with the current record under `current` settles the conflict from that answer,
/// without reading the record again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_answer_with_the_record_at_the_configured_path_needs_no_read() {
    let (url, shared) = items_backend().await;
    shared
        .conflict_with_record
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let mut options = fast_options();
    options.conflict_strategy = ConflictStrategy::ServerWins;
    options.auto_sync = false;
    let mut config = items_config();
    config.backend = config.backend.map(|b| {
        b.conflict_statuses(&[409])
            .conflict_record_at(Some("current"))
    });
    let a = SyncManager::builder()
        .base_url(&url)
        .store(store_at(&db_a.path()).await)
        .rest_only()
        .connectivity(ManualConnectivity::new(true))
        .model_with::<Item>(config)
        .options(options)
        .build()
        .await
        .unwrap();
    let b = items_client(&url, &db_b, ConflictStrategy::ServerWins).await;
    a.save(&Item {
        id: "i1".into(),
        title: "first".into(),
        done: false,
        rev: 0,
        updated_at: None,
    })
    .await
    .unwrap();
    a.sync_all().await.unwrap();
    b.sync_all().await.unwrap();
    let mut theirs = b.get::<Item>("i1").await.unwrap().unwrap();
    theirs.title = "from B".into();
    b.save(&theirs).await.unwrap();
    b.sync_all().await.unwrap();
    let mut mine = a.get::<Item>("i1").await.unwrap().unwrap();
    mine.title = "from A".into();
    a.save(&mine).await.unwrap();
    *shared.fetched.lock().unwrap() = 0;
    let report = a
        .synchronize(offline_sync_kit::SyncRun::new(
            offline_sync_kit::SyncDirection::PushOnly,
        ))
        .await
        .unwrap();
    assert_eq!(report.conflicts, 1, "{report:?}");
    assert_eq!(
        *shared.fetched.lock().unwrap(),
        0,
        "the answer carried the record"
    );
    assert!(shared.writes.lock().unwrap().contains(&409));
    assert_eq!(a.get::<Item>("i1").await.unwrap().unwrap().title, "from B");
    assert_eq!(shared.live("i1").unwrap()["title"], "from B");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
