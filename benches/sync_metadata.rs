//! What sync metadata costs and saves (issue 14): an idle sync of N synced records (nothing
//! pending, checksums equal: one `GET /sync/metadata`, no pull), and the write-by-write
//! checksum upkeep of the client store measured against a store without it
//! (`DieselStore::without_checksums`), on full pulls and local saves, in one run.
//!
//! ```text
//! cargo bench -p offline-sync-kit --bench sync_metadata
//! SYNC_BENCH_N=20000 cargo bench -p offline-sync-kit --bench sync_metadata
//! ```
//!
//! Defaults: N = 100,000 records, 200 idle syncs, 3 rounds of pulls and of 3,000 single saves
//! per variant (alternating, best round kept). Goals (printed, never asserted): idle sync one
//! round trip and < 5 ms; upkeep < 10 % of pull and save throughput.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use offline_sync_kit::prelude::*;
use offline_sync_kit::remote::{
    ModelRoute, PushItem, PushOutcome, Remote, RemoteError, RemotePage, Traffic,
};
use offline_sync_kit::store::RemoteRecord;
use offline_sync_kit::{HttpRemote, ManualConnectivity, RemoteSyncMetadata};
use serde::{Deserialize, Serialize};
use sync_server::SyncServer;

const TOKEN: &str = "alice-secret-token";

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
}

fn todo(prefix: &str, n: usize) -> Todo {
    Todo {
        id: format!("{prefix}-{n:08}"),
        title: format!("Task number {n}"),
        description: "Something to do, described in a sentence or two.".into(),
        is_completed: n.is_multiple_of(3),
        priority: (n % 5) as i32,
    }
}

/// Counts HTTP requests by kind: pull pages and metadata checks.
#[derive(Debug)]
struct Counted {
    inner: HttpRemote,
    pulls: Arc<AtomicU64>,
    checks: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl Remote for Counted {
    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }
    async fn push(
        &self,
        route: &ModelRoute,
        items: &[PushItem],
    ) -> Result<(Vec<PushOutcome>, Traffic), RemoteError> {
        self.inner.push(route, items).await
    }
    async fn pull(
        &self,
        route: &ModelRoute,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RemotePage, RemoteError> {
        self.pulls.fetch_add(1, Ordering::SeqCst);
        self.inner.pull(route, cursor, limit).await
    }
    async fn fetch(
        &self,
        route: &ModelRoute,
        id: &str,
    ) -> Result<Option<RemoteRecord>, RemoteError> {
        self.inner.fetch(route, id).await
    }
    async fn fetch_page(
        &self,
        route: &ModelRoute,
        params: &[(String, String)],
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<RemotePage, RemoteError> {
        self.inner.fetch_page(route, params, limit, offset).await
    }
    async fn health(&self) -> Result<(), RemoteError> {
        self.inner.health().await
    }
    fn has_sync_metadata(&self) -> bool {
        true
    }
    async fn sync_metadata(&self) -> Result<RemoteSyncMetadata, RemoteError> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        self.inner.sync_metadata().await
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn options() -> SyncOptions {
    let mut options = SyncOptions::default();
    options.auto_sync = false;
    options.batch_size = 1000;
    options
}

async fn client(url: &str, dir: &std::path::Path, name: &str, checksums: bool) -> SyncManager {
    let store = DieselStore::open_sqlite(dir.join(name)).await.unwrap();
    let store = if checksums {
        store
    } else {
        store.without_checksums().unwrap()
    };
    SyncManager::builder()
        .base_url(url)
        .bearer_token(TOKEN)
        .store(store)
        .connectivity(ManualConnectivity::new(true))
        .options(options())
        .model::<Todo>()
        .build()
        .await
        .unwrap()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_usize("SYNC_BENCH_N", 100_000);
    let idle_runs = env_usize("SYNC_BENCH_IDLE_RUNS", 200);
    let saves = env_usize("SYNC_BENCH_SAVES", 3_000);
    let rounds = 3;
    let dir = tempfile::tempdir().unwrap();
    let server = SyncServer::builder()
        .database(format!(
            "sqlite://{}",
            dir.path().join("server.db").display()
        ))
        .token("alice", TOKEN)
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let running = server.spawn(listener).unwrap();

    eprintln!("seeding {n} records (untimed)...");
    let writer = client(&url, dir.path(), "writer.db", true).await;
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let batch: Vec<Todo> = chunk.iter().map(|&i| todo("r", i)).collect();
        writer.save_all(&batch).await.unwrap();
    }
    writer.sync_all().await.unwrap();

    // Full pulls, alternating with and without the upkeep; the best round of each.
    let mut best = [f64::MAX; 2];
    for round in 0..rounds {
        for (v, checksums) in [(0, true), (1, false)] {
            let name = format!("pull-{round}-{checksums}.db");
            let reader = client(&url, dir.path(), &name, checksums).await;
            let started = Instant::now();
            let report = reader.pull::<Todo>().await.unwrap();
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(report.pulled as usize, n);
            best[v] = best[v].min(secs);
            reader.shutdown().await.unwrap();
        }
    }
    let pull_on = n as f64 / best[0];
    let pull_off = n as f64 / best[1];

    // Single saves (one transaction each), alternating.
    let mut best_saves = [f64::MAX; 2];
    for round in 0..rounds {
        for (v, checksums) in [(0, true), (1, false)] {
            let name = format!("saves-{round}-{checksums}.db");
            let local = client(&url, dir.path(), &name, checksums).await;
            local.pause();
            let started = Instant::now();
            for i in 0..saves {
                local.save(&todo("s", i)).await.unwrap();
            }
            best_saves[v] = best_saves[v].min(started.elapsed().as_secs_f64());
            local.shutdown().await.unwrap();
        }
    }
    let save_on = saves as f64 / best_saves[0];
    let save_off = saves as f64 / best_saves[1];

    // Idle syncs of a store holding all N records.
    let pulls = Arc::new(AtomicU64::new(0));
    let checks = Arc::new(AtomicU64::new(0));
    let remote = Counted {
        inner: HttpRemote::builder(url.clone())
            .bearer_token(TOKEN)
            .build()
            .unwrap(),
        pulls: Arc::clone(&pulls),
        checks: Arc::clone(&checks),
    };
    let idle = SyncManager::builder()
        .remote(remote)
        .store(
            DieselStore::open_sqlite(dir.path().join("idle.db"))
                .await
                .unwrap(),
        )
        .connectivity(ManualConnectivity::new(true))
        .options(options())
        .model::<Todo>()
        .build()
        .await
        .unwrap();
    idle.sync_all().await.unwrap();
    idle.sync_all().await.unwrap(); // the first check counts the sums once
    let (pulls0, checks0) = (pulls.load(Ordering::SeqCst), checks.load(Ordering::SeqCst));
    let mut times = Vec::with_capacity(idle_runs);
    for _ in 0..idle_runs {
        let started = Instant::now();
        let report = idle.sync_all().await.unwrap();
        times.push(started.elapsed());
        assert_eq!(report.pulled, 0);
    }
    times.sort();
    let pulls_per_run = (pulls.load(Ordering::SeqCst) - pulls0) as f64 / idle_runs as f64;
    let checks_per_run = (checks.load(Ordering::SeqCst) - checks0) as f64 / idle_runs as f64;

    println!("sync_metadata bench, N = {n} records (2 vCPUs, loopback, SQLite on both sides)");
    println!(
        "idle sync of {n} synced records: p50 {:.2} ms, p99 {:.2} ms; per run {checks_per_run:.2} metadata request(s), {pulls_per_run:.2} pull request(s) (goal: 1 round trip, < 5 ms)",
        pct(&times, 0.5).as_secs_f64() * 1e3,
        pct(&times, 0.99).as_secs_f64() * 1e3,
    );
    println!(
        "full pull: {pull_on:.0} rec/s with the checksum upkeep, {pull_off:.0} rec/s without: upkeep costs {:.1} % (goal < 10 %)",
        (1.0 - pull_on / pull_off) * 100.0
    );
    println!(
        "single saves: {save_on:.0}/s with the upkeep, {save_off:.0}/s without: upkeep costs {:.1} % (goal < 10 %)",
        (1.0 - save_on / save_off) * 100.0
    );
    idle.shutdown().await.unwrap();
    writer.shutdown().await.unwrap();
    running.shutdown().await.unwrap();
}
