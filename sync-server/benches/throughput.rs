//! Batch-push and pull throughput of `sync-server` over loopback, next to a raw baseline: an
//! axum handler that does a plain Diesel bulk insert / select of the same JSON, with no
//! versions, idempotency, auth, events or conflict checks.
//!
//! Run: `cargo bench -p sync-server --bench throughput` (SQLite; also Postgres when
//! `SYNC_TEST_POSTGRES_URL` is set). Optional: `SYNC_BENCH_RECORDS` per run (default 10000).

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::{PgConnection, SqliteConnection};
use serde_json::{json, Value};
use sync_server::SyncServer;

const PUSH_BATCH: usize = 500;
const PULL_PAGE: usize = 1000;
const TOKEN: &str = "bench-secret-token";
/// Interleaved rounds; the best of each is reported.
const ROUNDS: usize = 3;

diesel::table! {
    bench_raw (seq) {
        seq -> BigInt,
        id -> Text,
        data -> Text,
    }
}

#[derive(Insertable)]
#[diesel(table_name = bench_raw)]
struct NewRaw {
    id: String,
    data: String,
}

#[derive(Queryable)]
struct RawRow {
    seq: i64,
    data: String,
}

/// The raw baseline's database.
#[derive(Clone)]
enum RawDb {
    Sqlite(Pool<ConnectionManager<SqliteConnection>>),
    Pg(Pool<ConnectionManager<PgConnection>>),
}

impl RawDb {
    fn open(url: &str) -> Self {
        if url.starts_with("postgres") {
            let pool = Pool::builder()
                .max_size(8)
                .build(ConnectionManager::<PgConnection>::new(url))
                .unwrap();
            pool.get()
                .unwrap()
                .batch_execute(
                    "CREATE TABLE bench_raw (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, data TEXT NOT NULL)",
                )
                .unwrap();
            Self::Pg(pool)
        } else {
            let path = url.trim_start_matches("sqlite://").to_owned();
            let pool = Pool::builder()
                .max_size(4)
                .build(ConnectionManager::<SqliteConnection>::new(path))
                .unwrap();
            pool.get()
                .unwrap()
                .batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000;
                     CREATE TABLE bench_raw (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, data TEXT NOT NULL)",
                )
                .unwrap();
            Self::Sqlite(pool)
        }
    }

    fn clear(&self) {
        match self {
            Self::Sqlite(pool) => {
                diesel::delete(bench_raw::table)
                    .execute(&mut pool.get().unwrap())
                    .unwrap();
            }
            Self::Pg(pool) => {
                diesel::delete(bench_raw::table)
                    .execute(&mut pool.get().unwrap())
                    .unwrap();
            }
        }
    }

    fn insert(&self, rows: &[NewRaw]) {
        match self {
            Self::Sqlite(pool) => {
                let mut conn = pool.get().unwrap();
                conn.batch_execute("PRAGMA synchronous = NORMAL").unwrap();
                conn.immediate_transaction(|c| {
                    diesel::insert_into(bench_raw::table)
                        .values(rows)
                        .execute(c)
                })
                .unwrap();
            }
            Self::Pg(pool) => {
                let mut conn = pool.get().unwrap();
                conn.transaction(|c| {
                    diesel::insert_into(bench_raw::table)
                        .values(rows)
                        .execute(c)
                })
                .unwrap();
            }
        }
    }

    fn select(&self, since: i64, limit: i64) -> Vec<RawRow> {
        let query = bench_raw::table
            .filter(bench_raw::seq.gt(since))
            .order(bench_raw::seq.asc())
            .limit(limit)
            .select((bench_raw::seq, bench_raw::data));
        match self {
            Self::Sqlite(pool) => query.load(&mut pool.get().unwrap()).unwrap(),
            Self::Pg(pool) => query.load(&mut pool.get().unwrap()).unwrap(),
        }
    }
}

/// Baseline push: parse the same body, bulk insert each op's data.
async fn raw_push(State(db): State<RawDb>, body: Bytes) -> Response {
    let value: Value = serde_json::from_slice(&body).unwrap();
    let rows: Vec<NewRaw> = value["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| NewRaw {
            id: op["id"].as_str().unwrap().to_owned(),
            data: op["data"].to_string(),
        })
        .collect();
    let count = rows.len();
    tokio::task::spawn_blocking(move || db.insert(&rows))
        .await
        .unwrap();
    axum::Json(json!({ "inserted": count })).into_response()
}

#[derive(serde::Deserialize)]
struct PullQuery {
    since: i64,
    limit: i64,
}

/// Baseline pull: select a page and return the stored JSON as items.
async fn raw_pull(State(db): State<RawDb>, Query(q): Query<PullQuery>) -> Response {
    let rows = tokio::task::spawn_blocking(move || db.select(q.since, q.limit + 1))
        .await
        .unwrap();
    let has_more = rows.len() as i64 > q.limit;
    let rows = &rows[..rows.len().min(q.limit as usize)];
    let mut text = String::from("{\"items\":[");
    for (n, row) in rows.iter().enumerate() {
        if n > 0 {
            text.push(',');
        }
        text.push_str(&row.data);
    }
    let next = rows.last().map_or(q.since, |r| r.seq);
    text.push_str(&format!(
        "],\"next_cursor\":\"{next}\",\"has_more\":{has_more}}}"
    ));
    ([(CONTENT_TYPE, "application/json")], Body::from(text)).into_response()
}

fn record(n: usize) -> Value {
    json!({
        "title": format!("todo number {n}"),
        "description": "x".repeat(80),
        "is_completed": n.is_multiple_of(3),
        "priority": (n % 5) as i64,
        "tags": ["home", "errand"],
        "due": "2025-06-01T10:00:00Z",
    })
}

fn batch(start: usize, collection: &str, with_keys: bool) -> Value {
    let ops: Vec<Value> = (start..start + PUSH_BATCH)
        .map(|n| {
            let mut op = json!({"collection": collection, "op": "create", "id": format!("rec-{n:08}"), "data": record(n)});
            if with_keys {
                op["idempotency_key"] = json!(format!("{collection}-{n}"));
            }
            op
        })
        .collect();
    json!({ "ops": ops })
}

#[derive(Default)]
struct Figures {
    push: f64,
    pull: f64,
}

impl Figures {
    /// Keeps the better of each figure.
    fn best(&mut self, other: Figures) {
        self.push = self.push.max(other.push);
        self.pull = self.pull.max(other.pull);
    }
}

/// What is pushed and pulled.
struct Target<'a> {
    base: &'a str,
    push_path: &'a str,
    pull_path: &'a str,
    collection: &'a str,
    idempotency_keys: bool,
}

async fn measure(client: &reqwest::Client, target: Target<'_>, records: usize) -> Figures {
    let Target {
        base,
        push_path,
        pull_path,
        collection,
        idempotency_keys,
    } = target;
    let bodies: Vec<Vec<u8>> = (0..records / PUSH_BATCH)
        .map(|b| serde_json::to_vec(&batch(b * PUSH_BATCH, collection, idempotency_keys)).unwrap())
        .collect();
    let started = Instant::now();
    for body in bodies {
        let res = client
            .post(format!("{base}{push_path}"))
            .bearer_auth(TOKEN)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        let _ = res.bytes().await.unwrap();
    }
    let push = records as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut cursor = "0".to_owned();
    let mut pulled = 0;
    loop {
        let res = client
            .get(format!(
                "{base}{pull_path}?since={cursor}&limit={PULL_PAGE}"
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
        let page: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        pulled += page["items"].as_array().unwrap().len();
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(pulled, records, "pulled from {base}{pull_path}");
    let pull = pulled as f64 / started.elapsed().as_secs_f64();
    Figures { push, pull }
}

async fn run(label: &str, sync_url: &str, raw_url: &str, records: usize) {
    let server = SyncServer::builder()
        .database(sync_url)
        .token("bench", TOKEN)
        .build()
        .await
        .unwrap();
    let running = server
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();

    let raw = RawDb::open(raw_url);
    let app = Router::new()
        .route("/raw/push", post(raw_push))
        .route("/raw/pull", get(raw_pull))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(raw.clone());
    let raw_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raw_base = format!("http://{}", raw_listener.local_addr().unwrap());
    let raw_task = tokio::spawn(async move { axum::serve(raw_listener, app).await });

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    // Rounds interleave baseline and server so that load from elsewhere on the machine hits
    // both alike; each figure is the best round. Each round starts on an empty table /
    // collection of the same database.
    let url = running.url();
    let mut base = Figures::default();
    let mut sync = Figures::default();
    let mut unkeyed = Figures::default();
    for round in 0..ROUNDS {
        raw.clear();
        base.best(
            measure(
                &client,
                Target {
                    base: &raw_base,
                    push_path: "/raw/push",
                    pull_path: "/raw/pull",
                    collection: "todos",
                    idempotency_keys: false,
                },
                records,
            )
            .await,
        );
        let keyed = format!("todos{round}");
        sync.best(
            measure(
                &client,
                Target {
                    base: &url,
                    push_path: "/sync/push",
                    pull_path: &format!("/{keyed}"),
                    collection: &keyed,
                    idempotency_keys: true,
                },
                records,
            )
            .await,
        );
        let plain = format!("notes{round}");
        unkeyed.best(
            measure(
                &client,
                Target {
                    base: &url,
                    push_path: "/sync/push",
                    pull_path: &format!("/{plain}"),
                    collection: &plain,
                    idempotency_keys: false,
                },
                records,
            )
            .await,
        );
    }

    println!(
        "{label:<9} push (batches of {PUSH_BATCH}): sync-server {:>9.0} rec/s | raw baseline {:>9.0} rec/s | ratio {:.2}x",
        sync.push,
        base.push,
        base.push / sync.push
    );
    println!(
        "{label:<9} push without idempotency keys: sync-server {:>9.0} rec/s | ratio {:.2}x",
        unkeyed.push,
        base.push / unkeyed.push
    );
    println!(
        "{label:<9} pull (pages of {PULL_PAGE}):  sync-server {:>9.0} rec/s | raw baseline {:>9.0} rec/s | ratio {:.2}x",
        sync.pull,
        base.pull,
        base.pull / sync.pull
    );
    running.shutdown().await.unwrap();
    raw_task.abort();
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let records: usize = std::env::var("SYNC_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
        / PUSH_BATCH
        * PUSH_BATCH;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "{records} records of ~250 bytes JSON per run, one client over loopback, best of \
             {ROUNDS} interleaved runs; ratio = baseline / sync-server"
        );
        let dir = tempfile::tempdir().unwrap();
        let sync_db = format!("sqlite://{}", dir.path().join("sync.db").display());
        let raw_db = format!("sqlite://{}", dir.path().join("raw.db").display());
        run("sqlite", &sync_db, &raw_db, records).await;

        match std::env::var("SYNC_TEST_POSTGRES_URL") {
            Ok(base) => {
                let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::establish(&base).unwrap();
                admin
                    .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
                    .unwrap();
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
                run("postgres", &url, &url, records).await;
                admin
                    .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                    .unwrap();
            }
            Err(_) => println!(
                "postgres  skipped: set SYNC_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test)"
            ),
        }
    });
}
