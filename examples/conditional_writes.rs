//! A REST backend with conditional writes, configured entirely by the derive's attributes:
//! versions travel as quoted `ETag`s, every update and delete carries `If-Match`, a stale one
//! is refused with `412 Precondition Failed` (no body: the engine fetches the current record),
//! deleted records stay in the list as tombstones (`state: "deleted"`), and the list is paged
//! by a `Next-Page` header holding the next page's URL, from the largest `rev` already seen.
//!
//! A small backend of that shape runs in process. Two devices edit the same item at once:
//! the second write is refused, not applied over the first, and `MergeFields` keeps both
//! changes; a delete reaches the other device as a tombstone.
//!
//! ```text
//! cargo run --example conditional_writes
//! ```

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An item. `rev` (the backend's change counter, the pull's bound) and `updatedAt` are kept
/// by the server: received and stored, never sent back.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(
    endpoint = "items",
    pull(
        since(field = "rev", param = "after"),
        paging(next_url(limit = "limit")),
        next_page(header = "Next-Page")
    ),
    backend(
        idempotency_header = false,
        version = "etag",
        conditional(header = "If-Match", template = "\"{version}\""),
        conflict_statuses(409, 412),
        conflict_record_at = false,
        tombstone(field = "state", value = "deleted"),
        updated_at(field = "updatedAt", format = "iso8601"),
        server_fields("rev", "updatedAt")
    )
)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    #[sync(id)]
    pub id: String,
    pub title: String,
    pub done: bool,
    #[serde(default)]
    pub rev: i64,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// The backend's records (with `version`, `rev`, `state`) and its change counter.
#[derive(Default)]
struct Backend {
    rows: Mutex<Vec<Map<String, Value>>>,
    rev: Mutex<i64>,
    /// Writes refused because their `If-Match` was stale.
    refused: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Backend {
    fn next_rev(&self) -> i64 {
        let mut rev = lock(&self.rev);
        *rev += 1;
        *rev
    }

    fn live(&self, id: &str) -> Option<Map<String, Value>> {
        lock(&self.rows)
            .iter()
            .find(|r| r.get("id").and_then(Value::as_str) == Some(id) && r["state"] == "live")
            .cloned()
    }

    fn replace(&self, row: Map<String, Value>) {
        let mut rows = lock(&self.rows);
        if let Some(slot) = rows.iter_mut().find(|r| r.get("id") == row.get("id")) {
            *slot = row;
        }
    }

    fn stamp(&self, row: &mut Map<String, Value>, version: i64, state: &str) {
        row.insert("version".into(), json!(version));
        row.insert("rev".into(), json!(self.next_rev()));
        row.insert("state".into(), json!(state));
        row.insert(
            "updatedAt".into(),
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
    }
}

fn version_of(row: &Map<String, Value>) -> i64 {
    row.get("version").and_then(Value::as_i64).unwrap_or(0)
}

/// A record with its version as a quoted `ETag`.
fn tagged(status: StatusCode, row: Map<String, Value>) -> Response {
    let tag = format!("\"{}\"", version_of(&row));
    (status, [("etag", tag)], Json(Value::Object(row))).into_response()
}

/// `GET /items?after=<rev>&limit=<n>[&skip=<k>]`: records changed after `rev`, tombstones
/// included, by `rev`; `Next-Page` names the next page while there is one.
async fn list(
    State(b): State<Arc<Backend>>,
    UrlQuery(q): UrlQuery<HashMap<String, String>>,
) -> Response {
    let number = |key: &str, default: u64| match q.get(key) {
        None => Some(default),
        Some(v) => v.parse::<u64>().ok(),
    };
    let (Some(after), Some(limit), Some(skip)) =
        (number("after", 0), number("limit", 100), number("skip", 0))
    else {
        return (StatusCode::BAD_REQUEST, "after, limit and skip are numbers").into_response();
    };
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let (limit, skip) = (
        usize::try_from(limit.clamp(1, 1000)).unwrap_or(1000),
        usize::try_from(skip).unwrap_or(usize::MAX),
    );
    let mut rows: Vec<Map<String, Value>> = lock(&b.rows)
        .iter()
        .filter(|r| r.get("rev").and_then(Value::as_i64).unwrap_or(0) > after)
        .cloned()
        .collect();
    rows.sort_by_key(|r| r.get("rev").and_then(Value::as_i64).unwrap_or(0));
    let page: Vec<Value> = rows
        .iter()
        .skip(skip)
        .take(limit)
        .cloned()
        .map(Value::Object)
        .collect();
    let mut headers = HeaderMap::new();
    let read = skip.saturating_add(page.len());
    if read < rows.len() {
        let next = format!("/items?after={after}&limit={limit}&skip={read}");
        if let Ok(value) = next.parse() {
            headers.insert("next-page", value);
        }
    }
    (headers, Json(Value::Array(page))).into_response()
}

async fn one(State(b): State<Arc<Backend>>, Path(id): Path<String>) -> Response {
    match b.live(&id) {
        Some(row) => tagged(StatusCode::OK, row),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn create(State(b): State<Arc<Backend>>, Json(body): Json<Value>) -> Response {
    let Value::Object(mut row) = body else {
        return (StatusCode::BAD_REQUEST, "a record is a JSON object").into_response();
    };
    let Some(id) = row.get("id").and_then(Value::as_str).map(str::to_owned) else {
        return (StatusCode::BAD_REQUEST, "a record has an `id`").into_response();
    };
    if b.live(&id).is_some() {
        return StatusCode::CONFLICT.into_response();
    }
    b.stamp(&mut row, 1, "live");
    lock(&b.rows).retain(|r| r.get("id").and_then(Value::as_str) != Some(id.as_str()));
    lock(&b.rows).push(row.clone());
    tagged(StatusCode::CREATED, row)
}

/// The current record if `If-Match` names its version; 428 without the header, 412 when
/// stale.
fn precondition(
    b: &Backend,
    id: &str,
    headers: &HeaderMap,
) -> Result<Map<String, Value>, StatusCode> {
    let current = b.live(id).ok_or(StatusCode::NOT_FOUND)?;
    let tag = headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .ok_or(StatusCode::PRECONDITION_REQUIRED)?;
    if tag != format!("\"{}\"", version_of(&current)) {
        *lock(&b.refused) += 1;
        return Err(StatusCode::PRECONDITION_FAILED);
    }
    Ok(current)
}

async fn update(
    State(b): State<Arc<Backend>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut row = match precondition(&b, &id, &headers) {
        Ok(row) => row,
        Err(status) => return status.into_response(),
    };
    let Value::Object(changes) = body else {
        return (StatusCode::BAD_REQUEST, "changes are a JSON object").into_response();
    };
    for (key, value) in changes {
        if !["version", "rev", "state", "updatedAt", "id"].contains(&key.as_str()) {
            row.insert(key, value);
        }
    }
    let version = version_of(&row).saturating_add(1);
    b.stamp(&mut row, version, "live");
    b.replace(row.clone());
    tagged(StatusCode::OK, row)
}

async fn remove(
    State(b): State<Arc<Backend>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut row = match precondition(&b, &id, &headers) {
        Ok(row) => row,
        Err(status) => return status.into_response(),
    };
    let version = version_of(&row).saturating_add(1);
    b.stamp(&mut row, version, "deleted");
    b.replace(row);
    StatusCode::NO_CONTENT.into_response()
}

/// Starts the backend on a loopback port; returns its URL and its state.
async fn start_backend() -> Result<(String, Arc<Backend>), BoxError> {
    let backend = Arc::new(Backend::default());
    let app = Router::new()
        .route("/items", get(list).post(create))
        .route("/items/{id}", get(one).patch(update).delete(remove))
        .with_state(Arc::clone(&backend));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            eprintln!("backend stopped: {err}");
        }
    });
    Ok((url, backend))
}

async fn device(url: &str, db: std::path::PathBuf) -> Result<SyncManager, BoxError> {
    let mut options = SyncOptions::default();
    options.auto_sync = false;
    options.batch_size = 2;
    options.conflict_strategy = ConflictStrategy::MergeFields;
    Ok(SyncManager::builder()
        .base_url(url)
        .store(DieselStore::open_sqlite(db).await?)
        .rest_only()
        .connectivity(offline_sync_kit::ManualConnectivity::new(true))
        // No `ModelConfig`: the pull and the backend come from `#[sync(pull, backend)]`.
        .model::<Item>()
        .options(options)
        .build()
        .await?)
}

/// What the walk-through ended with.
#[derive(Debug)]
pub struct Outcome {
    /// Items the second device's first pull read (in pages of two).
    pub pulled: u64,
    /// Writes the backend refused as stale.
    pub refused: u64,
    /// Conflicts the first device reported.
    pub conflicts: u64,
    /// The edited item on the backend after both edits: (title, done).
    pub merged: (String, bool),
    /// Whether the second device still has the item the first one deleted.
    pub deleted_item_on_b: bool,
}

/// Runs the walk-through against a backend it starts; prints each step.
pub async fn run() -> Result<Outcome, BoxError> {
    let (url, backend) = start_backend().await?;
    let dir = tempfile::tempdir()?;
    let a = device(&url, dir.path().join("a.db")).await?;
    let b = device(&url, dir.path().join("b.db")).await?;

    for n in 1..=3 {
        a.save(&Item {
            id: format!("i{n}"),
            title: format!("item {n}"),
            done: false,
            rev: 0,
            updated_at: None,
        })
        .await?;
    }
    let report = a.sync_all().await?;
    println!("1. A created 3 items (pushed {})", report.pushed);

    let pulled = b.pull::<Item>().await?.pulled;
    println!("2. B pulled {pulled} items, following `Next-Page` in pages of 2");

    // Both devices edit i1 from the same version: B renames it, A marks it done.
    let mut on_b = b.get::<Item>("i1").await?.ok_or("i1 is missing on B")?;
    on_b.title = "item 1 (renamed on B)".into();
    b.save(&on_b).await?;
    b.sync_all().await?;
    println!("3. B renamed i1; the backend took it with B's If-Match");

    let mut on_a = a.get::<Item>("i1").await?.ok_or("i1 is missing on A")?;
    on_a.done = true;
    a.save(&on_a).await?;
    let report = a.sync_all().await?;
    let refused = *lock(&backend.refused);
    println!(
        "4. A marked i1 done from the older version: refused {refused} time(s) with 412, \
         {} conflict(s) merged field by field and written again",
        report.conflicts
    );
    let conflicts = report.conflicts;

    let merged = backend.live("i1").ok_or("i1 is gone from the backend")?;
    let merged = (
        merged
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        merged.get("done").and_then(Value::as_bool).unwrap_or(false),
    );
    println!("5. On the backend: title {:?}, done {}", merged.0, merged.1);

    a.delete::<Item>("i2").await?;
    a.sync_all().await?;
    b.pull::<Item>().await?;
    let deleted_item_on_b = b.get::<Item>("i2").await?.is_some();
    println!("6. A deleted i2; B pulled the tombstone: i2 on B {deleted_item_on_b}");

    a.shutdown().await?;
    b.shutdown().await?;
    Ok(Outcome {
        pulled,
        refused,
        conflicts,
        merged,
        deleted_item_on_b,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("conditional_writes failed: {err}");
            ExitCode::FAILURE
        }
    }
}
