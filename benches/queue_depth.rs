//! Does a long outbox slow saves down? `SyncManager::save` (one record and its op in one
//! transaction, then the status counts refreshed) timed one call at a time on SQLite stores
//! that already hold 0, 10,000 and 100,000 pending ops (and 1,000,000 with
//! `SYNC_BENCH_DEPTH_BIG=1`), printed side by side with the depth-0 store as the baseline.
//!
//! ```text
//! cargo bench -p offline-sync-kit --bench queue_depth
//! ```
//!
//! Beside each depth the bench also times what a save paid for the counts before they were
//! kept in a row (bookkeeping migration 5): `SELECT state, COUNT(*) FROM _sync_outbox
//! GROUP BY state` and a count of `_sync_quarantine`, on the same file.
//!
//! Options: `SYNC_BENCH_SAVES` (default 2,000 timed saves per depth, after 200 warm-up
//! saves), `SYNC_BENCH_DEPTHS` (comma-separated depths, replacing the default list),
//! `SYNC_BENCH_DEPTH_BIG=1` (adds 1,000,000). The queue is filled with `save_batch` in
//! batches of 1,000 before the timing (untimed; about 20 s per million on this machine).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use offline_sync_kit::prelude::*;
use sync_core::store::{LocalStore, LocalWrite};
use sync_testkit::Todo;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn todo(prefix: &str, n: usize) -> Todo {
    Todo {
        id: format!("{prefix}-{n}"),
        title: format!("Task number {n}"),
        description: "Something to do, described in a sentence or two.".into(),
        is_completed: n.is_multiple_of(3),
        priority: (n % 5) as i32,
        tags: vec!["home".into(), "errands".into()],
        due: None,
    }
}

/// Fills the store with `depth` records, each with its pending create op.
fn fill(store: &DieselStore, depth: usize) {
    const CHUNK: usize = 1_000;
    let mut done = 0;
    while done < depth {
        let n = CHUNK.min(depth - done);
        let models: Vec<Todo> = (done..done + n).map(|i| todo("queued", i)).collect();
        let data: Vec<_> = models.iter().map(|t| t.to_record_json().unwrap()).collect();
        let writes: Vec<LocalWrite<'_>> = models
            .iter()
            .zip(&data)
            .map(|(t, data)| LocalWrite {
                schema: Todo::SCHEMA,
                id: &t.id,
                data,
                user_id: None,
                priority: 0,
                enqueue: true,
                version: None,
            })
            .collect();
        store.save_batch(&writes).unwrap();
        done += n;
    }
}

/// Milliseconds at quantile `q` of sorted samples.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// The old per-save recount on the same file, median of 21 runs, in ms.
fn recount_ms(path: &Path) -> f64 {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    conn.batch_execute("PRAGMA busy_timeout = 5000;").unwrap();
    let mut times = Vec::new();
    let mut total = 0i64;
    for _ in 0..21 {
        let start = Instant::now();
        let by_state: Vec<Row> =
            diesel::sql_query("SELECT COUNT(*) AS n FROM _sync_outbox GROUP BY state")
                .load(&mut conn)
                .unwrap();
        let quarantined: Vec<Row> = diesel::sql_query("SELECT COUNT(*) AS n FROM _sync_quarantine")
            .load(&mut conn)
            .unwrap();
        times.push(start.elapsed());
        total = by_state.iter().chain(&quarantined).map(|r| r.n).sum();
    }
    std::hint::black_box(total);
    times.sort();
    quantile(&times, 0.5)
}

struct Figures {
    depth: usize,
    p50: f64,
    p99: f64,
    mean: f64,
    counts_read: f64,
    recount: f64,
}

async fn measure(dir: &Path, depth: usize, saves: usize) -> Figures {
    let path = dir.join(format!("depth-{depth}.db"));
    let store = DieselStore::open_sqlite(&path).await.unwrap();
    store.prepare_model(Todo::SCHEMA, true).unwrap();
    let filling = Instant::now();
    fill(&store, depth);
    eprintln!(
        "  depth {depth}: queue filled in {:.1} s",
        filling.elapsed().as_secs_f64()
    );
    let mut options = SyncOptions::default();
    options.auto_sync = false;
    // No server: nothing is pushed while the saves are timed.
    let sync = SyncManager::builder()
        .base_url("http://127.0.0.1:9")
        .store(store)
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .expect("building the manager");
    assert_eq!(sync.status().borrow().pending_changes, depth as u64);
    for i in 0..200 {
        sync.save(&todo("warm", i)).await.unwrap();
    }
    let mut times = Vec::with_capacity(saves);
    let started = Instant::now();
    for i in 0..saves {
        let t = todo("timed", i);
        let start = Instant::now();
        sync.save(&t).await.unwrap();
        times.push(start.elapsed());
    }
    let mean = started.elapsed().as_secs_f64() * 1e3 / saves as f64;
    let expected = (depth + 200 + saves) as u64;
    assert_eq!(sync.status().borrow().pending_changes, expected);
    // The kept counts, read alone (what a save's status refresh reads now).
    let reads = 201;
    let counts_read = {
        let store = DieselStore::open_sqlite(&path).await.unwrap();
        let mut t = Vec::with_capacity(reads);
        for _ in 0..reads {
            let s = Instant::now();
            let c = store.counts().unwrap();
            t.push(s.elapsed());
            assert_eq!(c.pending, expected);
        }
        t.sort();
        quantile(&t, 0.5)
    };
    sync.shutdown().await.unwrap();
    times.sort();
    Figures {
        depth,
        p50: quantile(&times, 0.5),
        p99: quantile(&times, 0.99),
        mean,
        counts_read,
        recount: recount_ms(&path),
    }
}

async fn run() {
    let saves: usize = env_or("SYNC_BENCH_SAVES", 2_000);
    let mut depths: Vec<usize> = match std::env::var("SYNC_BENCH_DEPTHS") {
        Ok(list) => list
            .split(',')
            .filter_map(|d| d.trim().parse().ok())
            .collect(),
        Err(_) => vec![0, 10_000, 100_000],
    };
    if env_or("SYNC_BENCH_DEPTH_BIG", 0u8) == 1 && !depths.contains(&1_000_000) {
        depths.push(1_000_000);
    }
    let dir = tempfile::tempdir().unwrap();
    println!(
        "queue_depth: SyncManager::save (record + op, then the status counts), {saves} saves one \
         at a time per depth, SQLite (WAL, synchronous=NORMAL), release build"
    );
    let mut all = Vec::new();
    for &depth in &depths {
        all.push(measure(dir.path(), depth, saves).await);
    }
    let base = all.first().map(|f| (f.p50, f.p99)).unwrap_or((0.0, 0.0));
    println!(
        "  {:>9} | {:>9} {:>9} {:>9} | {:>11} {:>11} | {:>17} | {:>21}",
        "pending",
        "p50 ms",
        "p99 ms",
        "mean ms",
        "p50 / base",
        "p99 / base",
        "counts read, ms",
        "old recount, ms"
    );
    for f in &all {
        println!(
            "  {:>9} | {:>9.3} {:>9.3} {:>9.3} | {:>10.2}x {:>10.2}x | {:>17.4} | {:>21.3}",
            f.depth,
            f.p50,
            f.p99,
            f.mean,
            f.p50 / base.0,
            f.p99 / base.1,
            f.counts_read,
            f.recount
        );
    }
    println!(
        "  (base: the first depth; goal: p50 and p99 within 1.2x of each other at every depth; \
         \"old recount\" is what every save paid for its counts before they were kept in a row)"
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run());
}
