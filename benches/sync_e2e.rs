//! End-to-end sync throughput of the framework against an in-process `sync-server` on SQLite
//! over loopback, next to a raw baseline that moves the same records with reqwest + Diesel and
//! no framework (issue 5).
//!
//! ```text
//! cargo bench -p offline-sync-kit --bench sync_e2e
//! SYNC_BENCH_N=20000 cargo bench -p offline-sync-kit --bench sync_e2e     # fewer records
//! SYNC_BENCH_BIG=1 cargo bench -p offline-sync-kit --bench sync_e2e       # + 1,000,000-record pull
//! SYNC_BENCH_BIG_N=300000 ...                                              # other size for that pull
//! ```
//!
//! Every client phase runs in a child process (this binary re-invoked with `child <mode> ...`)
//! so its peak RSS (`VmHWM`) counts neither the server (which lives in the parent) nor the other
//! phases. The push children first fill their local store (untimed), then reset the high-water
//! mark (`/proc/self/clear_refs` = 5) and time the transfer alone.
//!
//! - framework push: records saved with `save_all` in chunks, then `sync_all()` (push only,
//!   `batch_size` 500) is timed;
//! - raw push: the same rows read from a plain SQLite table with Diesel, POSTed to `/sync/push`
//!   in batches of 500 with the same op JSON;
//! - framework pull: `pull::<Todo>()` into a fresh store (`batch_size` 1000 = page size);
//! - raw pull: `GET /todos?since=&limit=1000` pages, each page inserted with Diesel into a plain
//!   table in one transaction.
//!
//! The bare limit: with `SYNC_BENCH_LIMITS_BIN` set to a built binary of
//! `../shared/peers/limits` (its own `cargo build --release`), the bench runs it after its own
//! phases, with `HTTP_N` = N, and prints the framework's push and pull beside its bare pair
//! (a plain table read by reqwest -> a bare axum + Diesel upsert server; pages into a plain
//! table), so the ratios of issue 18 come from one run.
//!
//! Bytes: the `SyncReport` counts HTTP bodies (a compressed request body as sent, a response
//! body as decoded). The framework phases also go through a counting TCP relay in the parent
//! (`WireMeter`), which counts what crosses the socket both ways, headers and compression
//! included: the "on the wire" figures. The raw baseline sends and asks for plain JSON, as
//! `../shared/peers/limits` does.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sync_server::{RunningServer, SyncServer};

const USER: &str = "alice";
const TOKEN: &str = "alice-secret-token";
const PUSH_BATCH: usize = 500;
const PULL_PAGE: usize = 1000;
const SEED_CHUNK: usize = 1000;

/// The DESIGN.md model. Its `rest(post(...))` attribute is left out: it configures the per-op
/// REST calls, which the batch endpoint (`/sync/push`) used here does not go through.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(model_type = "todo", endpoint = "todos", table = "todos")]
#[serde(rename_all = "camelCase")]
struct Todo {
    #[sync(id)]
    id: String,
    title: String,
    #[serde(default)]
    description: String,
    is_completed: bool,
    #[sync(index)]
    priority: i32,
    #[sync(json)]
    tags: Vec<String>,
    due: Option<chrono::DateTime<chrono::Utc>>,
}

/// A record shaped like the peer harnesses' (`../shared/peers/README.md`, "Rows and docs"):
/// a random UUIDv4 id, a 31-character title and a ~100-character description of random words,
/// a flag, a number, two more UUIDs and three millisecond times. The `Todo` records above
/// repeat most of their text, which flatters compression; the bytes compared with PouchDB
/// are taken on these.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(model_type = "item", endpoint = "items", table = "items")]
#[serde(rename_all = "camelCase")]
struct Item {
    #[sync(id)]
    id: String,
    title: String,
    description: String,
    completed: bool,
    priority: i32,
    owner_id: String,
    list_id: String,
    due_at: i64,
    created_at: i64,
    updated_at: i64,
}

/// xorshift64*, seeded: the same records every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            8 + (b >> 62),
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }

    fn words(&mut self, len: usize) -> String {
        const WORDS: [&str; 32] = [
            "buy", "milk", "call", "mom", "fix", "the", "sink", "book", "flight", "to", "Lisbon",
            "write", "report", "for", "Q3", "review", "pull", "request", "water", "plants",
            "renew", "passport", "pay", "rent", "plan", "trip", "clean", "garage", "order",
            "parts", "send", "invoice",
        ];
        let mut out = String::new();
        while out.len() < len {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(WORDS[(self.next() % WORDS.len() as u64) as usize]);
        }
        out.truncate(len);
        out
    }
}

fn items(n: usize, seed: u64) -> Vec<Item> {
    let mut rng = Rng(seed | 1);
    let base = 1_767_225_600_000i64;
    (0..n)
        .map(|_| {
            let created = base + (rng.next() % 86_400_000) as i64;
            Item {
                id: rng.uuid(),
                title: rng.words(31),
                description: rng.words(100),
                completed: rng.next().is_multiple_of(2),
                priority: (rng.next() % 5) as i32,
                owner_id: rng.uuid(),
                list_id: rng.uuid(),
                due_at: created + (rng.next() % 604_800_000) as i64,
                created_at: created,
                updated_at: created,
            }
        })
        .collect()
}

fn todo(n: usize, prefix: &str) -> Todo {
    Todo {
        id: format!("{prefix}-{n:08}"),
        title: format!("Task number {n}"),
        description: "Something to do, described in a sentence or two.".into(),
        is_completed: n.is_multiple_of(3),
        priority: (n % 5) as i32,
        tags: vec!["home".into(), "errands".into()],
        due: Some("2025-06-01T12:00:00Z".parse().unwrap()),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw baseline: a plain table, Diesel, reqwest.

diesel::table! {
    raw_todos (id) {
        id -> Text,
        title -> Text,
        description -> Text,
        is_completed -> Bool,
        priority -> Integer,
        tags -> Text,
        due -> Nullable<Text>,
        version -> BigInt,
    }
}

#[derive(Debug, Queryable, Insertable)]
#[diesel(table_name = raw_todos)]
struct RawRow {
    id: String,
    title: String,
    description: String,
    is_completed: bool,
    priority: i32,
    tags: String,
    due: Option<String>,
    version: i64,
}

/// A record as the wire has it (model JSON plus the server's `version`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireTodo {
    id: String,
    title: String,
    #[serde(default)]
    description: String,
    is_completed: bool,
    priority: i32,
    tags: Vec<String>,
    due: Option<String>,
    #[serde(default, skip_serializing)]
    version: i64,
}

#[derive(Debug, Serialize)]
struct WireOp<'a> {
    idempotency_key: String,
    collection: &'a str,
    op: &'a str,
    id: String,
    data: WireTodo,
}

#[derive(Debug, Deserialize)]
struct WirePage {
    items: Vec<WireTodo>,
    next_cursor: String,
    has_more: bool,
}

fn open_raw(path: &Path) -> SqliteConnection {
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    // The same pragmas the framework's store uses.
    conn.batch_execute(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;
         CREATE TABLE IF NOT EXISTS raw_todos (
             id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL, description TEXT NOT NULL,
             is_completed BOOL NOT NULL, priority INTEGER NOT NULL, tags TEXT NOT NULL,
             due TEXT, version BIGINT NOT NULL DEFAULT 0)",
    )
    .unwrap();
    conn
}

fn raw_row(t: &Todo) -> RawRow {
    RawRow {
        id: t.id.clone(),
        title: t.title.clone(),
        description: t.description.clone(),
        is_completed: t.is_completed,
        priority: t.priority,
        tags: serde_json::to_string(&t.tags).unwrap(),
        due: t.due.map(|d| d.to_rfc3339()),
        version: 0,
    }
}

/// The raw baseline's client: plain JSON both ways, whatever reqwest features the build has.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .no_zstd()
        .no_brotli()
        .no_deflate()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Process memory.

fn status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets `VmHWM` to the current RSS (Linux >= 4.0), so only what follows counts.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ---------------------------------------------------------------------------------------------
// Child phases. Each prints one `RESULT {json}` line.

#[derive(Debug, Default, Serialize, Deserialize)]
struct PhaseResult {
    records: u64,
    secs: f64,
    bytes_sent: u64,
    bytes_received: u64,
    /// Peak RSS of the timed part (after the reset), KiB.
    peak_kb: u64,
    /// RSS when the timed part started, KiB.
    start_kb: u64,
    /// Untimed preparation (local seeding), records/s.
    seed_rate: f64,
    hwm_reset: bool,
}

async fn framework_client(url: &str, db: &Path, options: SyncOptions) -> SyncManager {
    SyncManager::builder()
        .base_url(url)
        .store(DieselStore::open_sqlite(db).await.unwrap())
        .bearer_token(TOKEN)
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap()
}

fn push_options() -> SyncOptions {
    let mut options = SyncOptions::default();
    options.auto_sync = false;
    options.direction = SyncDirection::PushOnly;
    options.batch_size = PUSH_BATCH;
    options
}

async fn child_push(url: &str, db: &Path, n: usize) -> PhaseResult {
    let sync = framework_client(url, db, push_options()).await;
    // Let the worker take its first look at the (empty) queue, so it is asleep when the records
    // arrive and the timed `sync_all` is what pushes them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    for chunk_start in (0..n).step_by(SEED_CHUNK) {
        let chunk: Vec<Todo> = (chunk_start..(chunk_start + SEED_CHUNK).min(n))
            .map(|i| todo(i, "fw"))
            .collect();
        sync.save_all(&chunk).await.unwrap();
    }
    let seed_rate = n as f64 / started.elapsed().as_secs_f64();
    let hwm_reset = reset_peak_rss();
    let start_kb = status_kb("VmRSS");
    let started = Instant::now();
    let report = sync.sync_all().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let peak_kb = status_kb("VmHWM");
    if report.pushed != n as u64 || report.failed != 0 {
        eprintln!("warning: framework push report {report:?} (expected {n} pushed)");
    }
    sync.shutdown().await.unwrap();
    PhaseResult {
        records: report.pushed,
        secs,
        bytes_sent: report.bytes_sent,
        bytes_received: report.bytes_received,
        peak_kb,
        start_kb,
        seed_rate,
        hwm_reset,
    }
}

async fn child_pull(url: &str, db: &Path, page: usize) -> PhaseResult {
    let mut options = SyncOptions::default();
    options.auto_sync = false;
    options.batch_size = page;
    let sync = framework_client(url, db, options).await;
    let hwm_reset = reset_peak_rss();
    let start_kb = status_kb("VmRSS");
    let started = Instant::now();
    let report = sync.pull::<Todo>().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let peak_kb = status_kb("VmHWM");
    let stored = sync.count::<Todo>(Query::new()).await.unwrap();
    if stored != report.pulled {
        eprintln!(
            "warning: framework pull stored {stored} records, report says {}",
            report.pulled
        );
    }
    sync.shutdown().await.unwrap();
    PhaseResult {
        records: stored,
        secs,
        bytes_sent: report.bytes_sent,
        bytes_received: report.bytes_received,
        peak_kb,
        start_kb,
        seed_rate: 0.0,
        hwm_reset,
    }
}

async fn child_raw_push(url: &str, db: &Path, n: usize) -> PhaseResult {
    let mut conn = open_raw(db);
    let started = Instant::now();
    for chunk_start in (0..n).step_by(SEED_CHUNK) {
        let rows: Vec<RawRow> = (chunk_start..(chunk_start + SEED_CHUNK).min(n))
            .map(|i| raw_row(&todo(i, "raw")))
            .collect();
        conn.immediate_transaction(|c| {
            diesel::insert_into(raw_todos::table)
                .values(&rows)
                .execute(c)
        })
        .unwrap();
    }
    let seed_rate = n as f64 / started.elapsed().as_secs_f64();
    let client = http_client();
    let push_url = format!("{url}/sync/push");
    let hwm_reset = reset_peak_rss();
    let start_kb = status_kb("VmRSS");
    let started = Instant::now();
    let (mut sent, mut received, mut applied) = (0u64, 0u64, 0u64);
    let mut last = String::new();
    loop {
        let rows: Vec<RawRow> = raw_todos::table
            .filter(raw_todos::id.gt(&last))
            .order(raw_todos::id.asc())
            .limit(PUSH_BATCH as i64)
            .load(&mut conn)
            .unwrap();
        let Some(tail) = rows.last() else { break };
        last = tail.id.clone();
        let ops: Vec<WireOp<'_>> = rows
            .into_iter()
            .map(|r| WireOp {
                idempotency_key: uuid::Uuid::new_v4().to_string(),
                collection: "todos",
                op: "create",
                id: r.id.clone(),
                data: WireTodo {
                    id: r.id,
                    title: r.title,
                    description: r.description,
                    is_completed: r.is_completed,
                    priority: r.priority,
                    tags: serde_json::from_str(&r.tags).unwrap(),
                    due: r.due,
                    version: 0,
                },
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "ops": ops })).unwrap();
        sent += body.len() as u64;
        let response = client
            .post(&push_url)
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let bytes = response.bytes().await.unwrap();
        received += bytes.len() as u64;
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        applied += value["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "applied")
            .count() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    PhaseResult {
        records: applied,
        secs,
        bytes_sent: sent,
        bytes_received: received,
        peak_kb: status_kb("VmHWM"),
        start_kb,
        seed_rate,
        hwm_reset,
    }
}

async fn child_raw_pull(url: &str, db: &Path) -> PhaseResult {
    let mut conn = open_raw(db);
    let client = http_client();
    let hwm_reset = reset_peak_rss();
    let start_kb = status_kb("VmRSS");
    let started = Instant::now();
    let (mut received, mut stored) = (0u64, 0u64);
    let mut since: Option<String> = None;
    loop {
        let mut request = client
            .get(format!("{url}/todos"))
            .bearer_auth(TOKEN)
            .query(&[("limit", PULL_PAGE.to_string())]);
        if let Some(since) = &since {
            request = request.query(&[("since", since)]);
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let bytes = response.bytes().await.unwrap();
        received += bytes.len() as u64;
        let page: WirePage = serde_json::from_slice(&bytes).unwrap();
        let rows: Vec<RawRow> = page
            .items
            .into_iter()
            .map(|t| RawRow {
                id: t.id,
                title: t.title,
                description: t.description,
                is_completed: t.is_completed,
                priority: t.priority,
                tags: serde_json::to_string(&t.tags).unwrap(),
                due: t.due,
                version: t.version,
            })
            .collect();
        stored += conn
            .immediate_transaction(|c| {
                diesel::insert_into(raw_todos::table)
                    .values(&rows)
                    .execute(c)
            })
            .unwrap() as u64;
        if !page.has_more {
            break;
        }
        since = Some(page.next_cursor);
    }
    let secs = started.elapsed().as_secs_f64();
    PhaseResult {
        records: stored,
        secs,
        bytes_sent: 0,
        bytes_received: received,
        peak_kb: status_kb("VmHWM"),
        start_kb,
        seed_rate: 0.0,
        hwm_reset,
    }
}

fn child_main(args: &[String]) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mode, url, db) = (&args[0], &args[1], PathBuf::from(&args[2]));
    let number: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(0);
    let result = runtime.block_on(async {
        match mode.as_str() {
            "push" => child_push(url, &db, number).await,
            "pull" => child_pull(url, &db, number).await,
            "raw-push" => child_raw_push(url, &db, number).await,
            "raw-pull" => child_raw_pull(url, &db).await,
            other => panic!("unknown child mode {other}"),
        }
    });
    println!("RESULT {}", serde_json::to_string(&result).unwrap());
}

async fn run_child(args: &[&str]) -> PhaseResult {
    let exe = std::env::current_exe().unwrap();
    let output = tokio::process::Command::new(exe)
        .arg("child")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child {args:?} failed: {stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("child {args:?} printed no result: {stdout}"));
    serde_json::from_str(line).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Parent.

/// A TCP relay in front of a server that counts the bytes crossing it each way.
struct WireMeter {
    url: String,
    up: std::sync::Arc<std::sync::atomic::AtomicU64>,
    down: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl WireMeter {
    async fn start(server_url: &str) -> WireMeter {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = server_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let (up2, down2) = (Arc::clone(&up), Arc::clone(&down));
        async fn copy(
            mut from: tokio::net::tcp::OwnedReadHalf,
            mut to: tokio::net::tcp::OwnedWriteHalf,
            count: Arc<AtomicU64>,
        ) {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        count.fetch_add(n as u64, Ordering::Relaxed);
                        if to.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown().await;
        }
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(copy(client_read, server_write, Arc::clone(&up2)));
                tokio::spawn(copy(server_read, client_write, Arc::clone(&down2)));
            }
        });
        WireMeter { url, up, down }
    }

    /// Bytes sent up and down since the last call.
    fn take(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.up.swap(0, Ordering::Relaxed),
            self.down.swap(0, Ordering::Relaxed),
        )
    }
}

async fn start_server(dir: &Path, name: &str) -> RunningServer {
    let db = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
    SyncServer::builder()
        .database(db)
        .token(USER, TOKEN)
        .build()
        .await
        .unwrap()
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap()
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn rate(r: &PhaseResult) -> f64 {
    r.records as f64 / r.secs
}

fn print_phase(label: &str, r: &PhaseResult, per_record_bytes: u64) {
    println!(
        "  {label:<22} {:>9.0} rec/s  {:>7.2} s  {:>6.0} B/record  peak RSS {:>6.1} MB (start {:.1} MB){}",
        rate(r),
        r.secs,
        per_record_bytes as f64 / r.records.max(1) as f64,
        mb(r.peak_kb),
        mb(r.start_kb),
        if r.hwm_reset { "" } else { " [VmHWM not reset]" },
    );
}

/// Pushes `n` records straight to the server (for the big pull), in batches of 500.
async fn seed_server(url: &str, n: usize) {
    let client = http_client();
    for start in (0..n).step_by(PUSH_BATCH) {
        let ops: Vec<Value> = (start..(start + PUSH_BATCH).min(n))
            .map(|i| {
                let t = todo(i, "big");
                json!({"idempotency_key": format!("big-{i}"), "collection": "todos", "op": "create", "id": t.id, "data": t})
            })
            .collect();
        let response = client
            .post(format!("{url}/sync/push"))
            .bearer_auth(TOKEN)
            .json(&json!({ "ops": ops }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let _ = response.bytes().await.unwrap();
    }
}

/// Bytes the engine sends for a one-field update, with `use_delta_sync` on or off, through
/// the batch endpoint or (`rest`) one REST call per op: `PATCH` with the delta, `PUT` with
/// the full record.
async fn update_bytes(url: &str, dir: &Path, delta: bool, rest: bool) -> (u64, u64) {
    let mut options = push_options();
    options.use_delta_sync = delta;
    let label = format!(
        "{}-{}",
        if delta { "delta" } else { "full" },
        if rest { "rest" } else { "batch" }
    );
    let mut builder = SyncManager::builder()
        .base_url(url)
        .store(
            DieselStore::open_sqlite(dir.join(format!("{label}.db")))
                .await
                .unwrap(),
        )
        .bearer_token(TOKEN)
        .model::<Todo>()
        .options(options);
    if rest {
        builder = builder.rest_only();
    }
    let sync = builder.build().await.unwrap();
    let mut t = todo(1, &format!("upd-{label}"));
    sync.save(&t).await.unwrap();
    let created = sync.sync_all().await.unwrap();
    assert_eq!(created.pushed, 1);
    t.is_completed = !t.is_completed;
    sync.save(&t).await.unwrap();
    let updated = sync.sync_all().await.unwrap();
    assert_eq!(updated.pushed, 1);
    sync.shutdown().await.unwrap();
    (created.bytes_sent, updated.bytes_sent)
}

/// Request bytes on the wire (TCP, headers included) per op of a `/sync/push` batch of
/// `m` one-field updates, with `use_delta_sync` on or off: the records are created and pushed
/// first, then `isCompleted` flipped on all of them and that push metered alone.
async fn batch_update_wire(meter: &WireMeter, dir: &Path, delta: bool, m: usize) -> f64 {
    let mut options = push_options();
    options.use_delta_sync = delta;
    let label = if delta { "wire-delta" } else { "wire-full" };
    let sync = SyncManager::builder()
        .base_url(&meter.url)
        .store(
            DieselStore::open_sqlite(dir.join(format!("{label}.db")))
                .await
                .unwrap(),
        )
        .bearer_token(TOKEN)
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    let mut todos: Vec<Todo> = (0..m).map(|i| todo(i, label)).collect();
    sync.save_all(&todos).await.unwrap();
    assert_eq!(sync.sync_all().await.unwrap().pushed, m as u64);
    for t in &mut todos {
        t.is_completed = !t.is_completed;
    }
    sync.save_all(&todos).await.unwrap();
    meter.take();
    assert_eq!(sync.sync_all().await.unwrap().pushed, m as u64);
    let (up, _) = meter.take();
    sync.shutdown().await.unwrap();
    up as f64 / m as f64
}

/// Peer-shaped records through the counting relay: bytes on the wire per record pushed
/// (`n` records, batches of 500), pulled into a fresh store (pages of 1,000), and per op of a
/// batch of 500 one-field updates (`completed`) with deltas and with full records.
async fn peer_shaped_wire(meter: &WireMeter, dir: &Path, n: usize) {
    let client = |name: &str, delta: bool| {
        let mut options = push_options();
        options.use_delta_sync = delta;
        let path = dir.join(format!("{name}.db"));
        let url = meter.url.clone();
        async move {
            SyncManager::builder()
                .base_url(url)
                .store(DieselStore::open_sqlite(path).await.unwrap())
                .bearer_token(TOKEN)
                .model::<Item>()
                .options(options)
                .build()
                .await
                .unwrap()
        }
    };
    let records = items(n, 7);
    let plain: usize = records
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap().len())
        .sum();
    let writer = client("items-writer", true).await;
    for chunk in records.chunks(SEED_CHUNK) {
        writer.save_all(chunk).await.unwrap();
    }
    meter.take();
    let pushed = writer.sync_all().await.unwrap();
    let (push_up, push_down) = meter.take();
    assert_eq!(pushed.pushed, n as u64);
    let mut options = SyncOptions::default();
    options.auto_sync = false;
    options.batch_size = PULL_PAGE;
    let reader = SyncManager::builder()
        .base_url(&meter.url)
        .store(
            DieselStore::open_sqlite(dir.join("items-reader.db"))
                .await
                .unwrap(),
        )
        .bearer_token(TOKEN)
        .model::<Item>()
        .options(options)
        .build()
        .await
        .unwrap();
    meter.take();
    let pulled = reader.pull::<Item>().await.unwrap();
    let (pull_up, pull_down) = meter.take();
    assert_eq!(pulled.pulled, n as u64);
    reader.shutdown().await.unwrap();
    let per = |b: u64| b as f64 / n as f64;
    println!(
        "peer-shaped records ({n}, random UUIDs and words, {:.0} B of JSON each, as \
         ../shared/peers): on the wire (TCP, headers included) per record",
        plain as f64 / n as f64
    );
    println!(
        "  push: up {:.0} B, down {:.0} B (PouchDB push: 565 B sent per doc); pull: down {:.0} B, \
         up {:.0} B — goal < 141 B (PouchDB, gzip) [{}]",
        per(push_up),
        per(push_down),
        per(pull_down),
        per(pull_up),
        verdict(per(pull_down) < 141.0)
    );
    // A batch of 500 one-field updates, deltas (the writer) against full records.
    let m = PUSH_BATCH.min(n);
    let full_writer = client("items-full", false).await;
    let mut full_records = items(m, 11);
    full_writer.save_all(&full_records).await.unwrap();
    assert_eq!(full_writer.sync_all().await.unwrap().pushed, m as u64);
    let mut delta_records = records[..m].to_vec();
    for r in delta_records.iter_mut().chain(full_records.iter_mut()) {
        r.completed = !r.completed;
    }
    writer.save_all(&delta_records).await.unwrap();
    full_writer.save_all(&full_records).await.unwrap();
    meter.take();
    assert_eq!(writer.sync_all().await.unwrap().pushed, m as u64);
    let (delta_up, _) = meter.take();
    assert_eq!(full_writer.sync_all().await.unwrap().pushed, m as u64);
    let (full_up, _) = meter.take();
    let (delta, full) = (delta_up as f64 / m as f64, full_up as f64 / m as f64);
    println!(
        "  a batch of {m} one-field updates (completed) on the wire per op: delta {delta:.0} B, full \
         {full:.0} B; ratio {:.2} — goal < 0.25 [{}] (PouchDB: 601 B per doc)",
        delta / full,
        verdict(delta / full < 0.25)
    );
    writer.shutdown().await.unwrap();
    full_writer.shutdown().await.unwrap();
}

/// Runs `../shared/peers/limits` (the binary named by `SYNC_BENCH_LIMITS_BIN`) and prints its
/// bare push and pull beside the framework's.
async fn bare_limit(n: usize, push: f64, pull: f64) {
    let Some(bin) = std::env::var_os("SYNC_BENCH_LIMITS_BIN") else {
        println!(
            "bare limit skipped: set SYNC_BENCH_LIMITS_BIN to a release build of \
             ../shared/peers/limits"
        );
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(&bin)
        .env("DATA_DIR", data.path())
        .env("HTTP_N", n.to_string())
        .stderr(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.to_string_lossy()));
    assert!(output.status.success(), "the limits harness failed");
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let rate_of = |bench: &str, variant: &str| {
        lines
            .iter()
            .find(|v| v["bench"] == bench && v["variant"] == variant)
            .and_then(|v| v["rows_per_s"].as_f64())
    };
    let (Some(bare_push), Some(bare_pull)) = (
        rate_of("http_push", "batch500"),
        rate_of("http_pull", "page1000_tx_per_page"),
    ) else {
        println!("bare limit: the limits harness printed no push or pull figure");
        return;
    };
    println!(
        "bare limit (../shared/peers/limits, {n} rows, run now): push {bare_push:.0} rows/s -> \
         framework {:.2}x — goal >= 0.5 [{}]; pull {bare_pull:.0} rows/s -> framework {:.2}x — \
         goal >= 0.9 [{}]",
        push / bare_push,
        verdict(push / bare_push >= 0.5),
        pull / bare_pull,
        verdict(pull / bare_pull >= 0.9)
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

async fn parent(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    println!(
        "sync_e2e: {n} records (DESIGN Todo, ~{} B of JSON each); client phases in child processes; \
         server in this process on SQLite, loopback",
        serde_json::to_vec(&todo(0, "fw")).unwrap().len()
    );
    println!("push: batches of {PUSH_BATCH}; pull: pages of {PULL_PAGE}; bytes = HTTP bodies");

    // Each push goes to an empty server; each pull reads what that push wrote.
    let raw_server = start_server(d, "server-raw").await;
    let fw_server = start_server(d, "server-fw").await;
    let n_arg = n.to_string();
    let db = |name: &str| d.join(name).display().to_string();

    let raw_meter = WireMeter::start(&raw_server.url()).await;
    let fw_meter = WireMeter::start(&fw_server.url()).await;
    let raw_push = run_child(&["raw-push", &raw_meter.url, &db("raw-push.db"), &n_arg]).await;
    let raw_push_wire = raw_meter.take();
    let fw_push = run_child(&["push", &fw_meter.url, &db("fw-push.db"), &n_arg]).await;
    let fw_push_wire = fw_meter.take();
    let raw_pull = run_child(&["raw-pull", &raw_meter.url, &db("raw-pull.db")]).await;
    let raw_pull_wire = raw_meter.take();
    let page = PULL_PAGE.to_string();
    let fw_pull = run_child(&["pull", &fw_meter.url, &db("fw-pull.db"), &page]).await;
    let fw_pull_wire = fw_meter.take();
    let per = |bytes: u64, r: &PhaseResult| bytes as f64 / r.records.max(1) as f64;

    println!("push (time of sync_all / the POST loop; local seeding untimed):");
    print_phase("offline-sync-kit", &fw_push, fw_push.bytes_sent);
    print_phase("raw reqwest+Diesel", &raw_push, raw_push.bytes_sent);
    println!(
        "  (responses: framework {:.0} B/record, raw {:.0} B/record received; local seeding: \
         save_all {:.0} rec/s, raw Diesel insert {:.0} rec/s)",
        fw_push.bytes_received as f64 / fw_push.records.max(1) as f64,
        raw_push.bytes_received as f64 / raw_push.records.max(1) as f64,
        fw_push.seed_rate,
        raw_push.seed_rate
    );
    println!(
        "  on the wire (TCP, headers included), per record: framework up {:.0} B, down {:.0} B; \
         raw (plain JSON) up {:.0} B, down {:.0} B",
        per(fw_push_wire.0, &fw_push),
        per(fw_push_wire.1, &fw_push),
        per(raw_push_wire.0, &raw_push),
        per(raw_push_wire.1, &raw_push)
    );
    println!("pull into a fresh store:");
    print_phase("offline-sync-kit", &fw_pull, fw_pull.bytes_received);
    print_phase("raw reqwest+Diesel", &raw_pull, raw_pull.bytes_received);
    let fw_pull_down = per(fw_pull_wire.1, &fw_pull);
    println!(
        "  on the wire (TCP, headers included), per record received: framework {fw_pull_down:.0} B \
         (compressed), raw {:.0} B (plain JSON); goal < 141 B (PouchDB, gzip) [{}]",
        per(raw_pull_wire.1, &raw_pull),
        verdict(fw_pull_down < 141.0)
    );

    bare_limit(n, rate(&fw_push), rate(&fw_pull)).await;
    let push_ratio = rate(&fw_push) / rate(&raw_push);
    let pull_ratio = rate(&fw_pull) / rate(&raw_pull);
    println!(
        "goal: framework >= 0.5 x baseline throughput: push {push_ratio:.2}x [{}], pull {pull_ratio:.2}x [{}]",
        verdict(push_ratio >= 0.5),
        verdict(pull_ratio >= 0.5)
    );

    // Delta vs full update of one field, as sent by the engine.
    let (_, rest_delta) = update_bytes(&fw_server.url(), d, true, true).await;
    let (_, rest_full) = update_bytes(&fw_server.url(), d, false, true).await;
    let ratio = rest_delta as f64 / rest_full as f64;
    println!(
        "one-field update (isCompleted), request body the engine sent per op over REST: \
         PATCH delta {rest_delta} B, PUT full {rest_full} B; ratio {ratio:.2} — goal < 0.25 [{}]",
        verdict(ratio < 0.25)
    );
    let (create_d, delta) = update_bytes(&fw_server.url(), d, true, false).await;
    let (_, full) = update_bytes(&fw_server.url(), d, false, false).await;
    println!(
        "  same through /sync/push (one-op batch body): delta {delta} B, full {full} B \
         (create {create_d} B); ratio {:.2}: the op envelope the protocol fixes is in both",
        delta as f64 / full as f64
    );
    let wire_delta = batch_update_wire(&fw_meter, d, true, PUSH_BATCH).await;
    let wire_full = batch_update_wire(&fw_meter, d, false, PUSH_BATCH).await;
    let wire_ratio = wire_delta / wire_full;
    println!(
        "  inside a /sync/push batch of {PUSH_BATCH} such updates, on the wire (compressed, \
         headers included) per op: delta {wire_delta:.0} B, full {wire_full:.0} B; ratio \
         {wire_ratio:.2} — goal < 0.25 [{}]",
        verdict(wire_ratio < 0.25)
    );
    peer_shaped_wire(&fw_meter, d, 20_000.min(n.max(PUSH_BATCH))).await;
    let before = todo(1, "upd");
    let mut after = before.clone();
    after.is_completed = !after.is_completed;
    let mask = after.changed_fields(&before);
    let delta_data = serde_json::to_vec(&after.to_delta_json(mask))
        .unwrap()
        .len();
    let full_data = serde_json::to_vec(&after.to_record_json().unwrap())
        .unwrap()
        .len();
    println!(
        "  record data alone (model API): delta {delta_data} B, full {full_data} B; ratio {:.2}; \
         the rest of each body is the op envelope (idempotency key, collection, op, id, base_version)",
        delta_data as f64 / full_data as f64
    );
    raw_server.shutdown().await.unwrap();
    fw_server.shutdown().await.unwrap();

    let big = std::env::var("SYNC_BENCH_BIG_N")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .or_else(|| std::env::var_os("SYNC_BENCH_BIG").map(|_| 1_000_000));
    match big {
        Some(big) => {
            let server = start_server(d, "server-big").await;
            let started = Instant::now();
            seed_server(&server.url(), big).await;
            println!(
                "big pull: server seeded with {big} records in {:.0} s",
                started.elapsed().as_secs_f64()
            );
            for page in [PULL_PAGE, SyncOptions::default().batch_size] {
                let name = format!("fw-big-{page}.db");
                let r = run_child(&["pull", &server.url(), &db(&name), &page.to_string()]).await;
                print_phase(&format!("pull {big}, page {page}"), &r, r.bytes_received);
                println!(
                    "  goal: peak RSS < 100 MB: {:.1} MB [{}]",
                    mb(r.peak_kb),
                    verdict(r.peak_kb < 100 * 1024)
                );
                let _ = std::fs::remove_file(d.join(&name));
            }
            let r = run_child(&["raw-pull", &server.url(), &db("raw-big.db")]).await;
            print_phase(&format!("raw pull {big}"), &r, r.bytes_received);
            server.shutdown().await.unwrap();
        }
        None => println!(
            "big pull skipped: set SYNC_BENCH_BIG=1 (1,000,000 records) or SYNC_BENCH_BIG_N=<n>"
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        child_main(&args[1..]);
        return;
    }
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n: usize = std::env::var("SYNC_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(parent(n));
}
