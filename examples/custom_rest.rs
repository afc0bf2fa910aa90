//! Syncing with a REST API that is not sync-server, configured through
//! `RestRequests` only: an API shaped like Appwrite's documents API (nested
//! URLs, a project header, bodies wrapped in `data` with the id beside it as
//! `documentId`, lists under `documents`, ids named `$id`, no versions).
//!
//! A small mock of that API runs in process; the example saves, edits, pulls
//! into a second client and deletes, and prints every request the API saw.
//!
//! ```text
//! cargo run --example custom_rest
//! ```

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use offline_sync_kit::prelude::*;
use offline_sync_kit::{ModelConfig, PullMode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A document of the `tasks` collection. The model says nothing about the API;
/// the `RestRequests` below do.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "tasks")]
struct Task {
    #[sync(id)]
    #[serde(rename = "$id")]
    id: String,
    title: String,
    done: bool,
}

/// Every method of the documents API, as run-time configuration.
fn appwrite_requests() -> RestRequests {
    let documents = "v1/databases/{databaseId}/collections/{collectionId}/documents";
    let base = |method| {
        RestRequest::new(method)
            .url(documents)
            .url_parameter("databaseId", "main")
            .url_parameter("collectionId", "tasks")
            .header("X-Appwrite-Project", "demo")
    };
    let mut document_id = Map::new();
    document_id.insert("documentId".into(), json!("{id}"));
    RestRequests::new()
        .with(base(RestMethod::Get).response_data_key("documents"))
        .with(
            base(RestMethod::Post)
                .top_level_key("data")
                .supplemental_top_level_data(document_id),
        )
        .with(base(RestMethod::Patch).top_level_key("data"))
        .with(base(RestMethod::Put).top_level_key("data"))
        .with(base(RestMethod::Delete))
}

// ---- the mock API -------------------------------------------------------------------------

#[derive(Default)]
struct Documents {
    rows: Mutex<Vec<Map<String, Value>>>,
    log: Mutex<Vec<String>>,
}

type Shared = Arc<Documents>;

impl Documents {
    fn rows(&self) -> std::sync::MutexGuard<'_, Vec<Map<String, Value>>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn log(&self, line: String) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn check_project(headers: &HeaderMap) -> Result<(), StatusCode> {
    match headers
        .get("x-appwrite-project")
        .and_then(|v| v.to_str().ok())
    {
        Some("demo") => Ok(()),
        _ => Err(StatusCode::UNAUTHORIZED),
    }
}

async fn list(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlQuery(q): UrlQuery<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    check_project(&headers)?;
    let page: usize = q.get("_page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let limit: usize = q.get("_limit").and_then(|p| p.parse().ok()).unwrap_or(25);
    s.log(format!("GET    documents?_page={page}&_limit={limit}"));
    let rows = s.rows();
    let docs: Vec<Value> = rows
        .iter()
        .skip(page.saturating_sub(1) * limit)
        .take(limit)
        .cloned()
        .map(Value::Object)
        .collect();
    Ok(Json(json!({"total": rows.len(), "documents": docs})))
}

async fn create(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), StatusCode> {
    check_project(&headers)?;
    s.log(format!("POST   documents {body}"));
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
    s.rows().push(doc.clone());
    Ok((StatusCode::CREATED, Json(Value::Object(doc))))
}

async fn update(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    check_project(&headers)?;
    s.log(format!("PATCH  documents/{id} {body}"));
    let data = body["data"]
        .as_object()
        .ok_or(StatusCode::BAD_REQUEST)?
        .clone();
    let mut rows = s.rows();
    let doc = rows
        .iter_mut()
        .find(|d| d["$id"] == json!(id))
        .ok_or(StatusCode::NOT_FOUND)?;
    doc.extend(data);
    Ok(Json(Value::Object(doc.clone())))
}

async fn one(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, StatusCode> {
    check_project(&headers)?;
    s.rows()
        .iter()
        .find(|d| d["$id"] == json!(id))
        .map(|d| Json(Value::Object(d.clone())))
        .ok_or(StatusCode::NOT_FOUND)
}

async fn remove(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, StatusCode> {
    check_project(&headers)?;
    s.log(format!("DELETE documents/{id}"));
    let mut rows = s.rows();
    let before = rows.len();
    rows.retain(|d| d["$id"] != json!(id));
    if rows.len() == before {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn start_mock() -> Result<(String, Shared), BoxError> {
    let shared: Shared = Arc::default();
    let app = Router::new()
        .route(
            "/v1/databases/main/collections/tasks/documents",
            get(list).post(create),
        )
        .route(
            "/v1/databases/main/collections/tasks/documents/{id}",
            get(one).patch(update).put(update).delete(remove),
        )
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            eprintln!("mock API stopped: {err}");
        }
    });
    Ok((url, shared))
}

// ---- the app ------------------------------------------------------------------------------

async fn client(url: &str, db: std::path::PathBuf) -> Result<SyncManager, BoxError> {
    let config = ModelConfig::new()
        .rest(appwrite_requests())
        // No versions or cursors in this API: page through everything.
        .pull(PullMode::FullPaged);
    Ok(SyncManager::builder()
        .base_url(url)
        .store(DieselStore::open_sqlite(db).await?)
        // One REST call per change (no sync-server batch endpoint here).
        .rest_only()
        .model_with::<Task>(config)
        // Sync when this example says so, so the log below is in order.
        .options({
            let mut options = SyncOptions::default();
            options.auto_sync = false;
            options
        })
        .build()
        .await?)
}

fn print_requests(api: &Documents) {
    for line in api.take_log() {
        println!("     API saw: {line}");
    }
}

pub(crate) async fn run() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let (url, api) = start_mock().await?;
    println!("Appwrite-shaped mock API at {url}");

    let a = client(&url, dir.path().join("a.db")).await?;
    let mut task = Task {
        id: "t1".into(),
        title: "write docs".into(),
        done: false,
    };
    a.save(&task).await?;
    let report = a.sync_all().await?;
    println!(
        "1. A created {:?} and synced (pushed {})",
        task.title, report.pushed
    );
    print_requests(&api);

    task.done = true;
    a.save(&task).await?;
    let report = a.sync_all().await?;
    println!(
        "2. A marked it done: only the changed field travels, wrapped in `data` (pushed {})",
        report.pushed
    );
    print_requests(&api);

    let b = client(&url, dir.path().join("b.db")).await?;
    let report = b.pull::<Task>().await?;
    let on_b = b.get::<Task>("t1").await?;
    println!(
        "3. B pulled {} record(s) from `documents`: {on_b:?}",
        report.pulled
    );
    print_requests(&api);
    if on_b.as_ref() != Some(&task) {
        return Err("B's copy differs from A's".into());
    }

    a.delete::<Task>("t1").await?;
    a.sync_all().await?;
    println!(
        "4. A deleted it; the API has {} document(s) left",
        api.rows().len()
    );
    print_requests(&api);

    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("custom_rest failed: {err}");
            ExitCode::FAILURE
        }
    }
}
