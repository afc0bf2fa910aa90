//! Write-to-remote-client latency over WebSocket (issue 6): client A saves a record (auto-push
//! on), client B is subscribed over WebSocket to an in-process `sync-server` (SQLite, loopback);
//! measured from A's `save` call until B has the record in its store and has emitted
//! `ModelAdded` for it, one write at a time. Next to it, the raw WebSocket round trip on the same
//! machine (a tokio-tungstenite echo client and server on loopback).
//!
//! ```text
//! cargo bench -p offline-sync-kit --bench realtime_latency
//! SYNC_BENCH_WRITES=5000 SYNC_BENCH_DEBOUNCE_MS=1 cargo bench -p offline-sync-kit --bench realtime_latency
//! ```
//!
//! Defaults: 1,000 writes after 50 warm-up writes, `auto_sync_debounce` as in
//! `SyncOptions::default()`. Goals (printed, never asserted): p50 < 5 ms, p99 < 25 ms.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use offline_sync_kit::prelude::*;
use offline_sync_kit::SyncManagerBuilder;
use serde::{Deserialize, Serialize};
use sync_server::SyncServer;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "alice-secret-token";
const WARMUP: usize = 50;

/// The DESIGN.md model (its `rest(post(...))` attribute only affects per-op REST calls).
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

fn todo(n: usize) -> Todo {
    Todo {
        id: format!("rt-{n:08}"),
        title: format!("Task number {n}"),
        description: "Something to do, described in a sentence or two.".into(),
        is_completed: n.is_multiple_of(3),
        priority: (n % 5) as i32,
        tags: vec!["home".into(), "errands".into()],
        due: Some("2025-06-01T12:00:00Z".parse().unwrap()),
    }
}

#[derive(Debug)]
struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

fn stats(samples: &mut [Duration]) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        max: *samples.last().unwrap(),
        mean: samples.iter().sum::<Duration>() / samples.len() as u32,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn wait_added(events: &mut broadcast::Receiver<SyncEvent>, id: &str) -> bool {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(e) if e.kind() == SyncEventType::ModelAdded && e.id() == Some(id) => {
                    return true
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return false,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or(false)
}

async fn client(url: &str, db: &std::path::Path, options: SyncOptions) -> SyncManagerBuilder {
    SyncManager::builder()
        .base_url(url)
        .store(DieselStore::open_sqlite(db).await.unwrap())
        .bearer_token(TOKEN)
        .model::<Todo>()
        .options(options)
}

/// A's save until B stored the record and emitted `ModelAdded`.
async fn framework(writes: usize, debounce: Duration) -> (Stats, Stats, usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = SyncServer::builder()
        .database(format!(
            "sqlite://{}",
            dir.path().join("server.db").display()
        ))
        .token("alice", TOKEN)
        .build()
        .await
        .unwrap()
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();

    let mut options = SyncOptions::default();
    options.auto_sync = true;
    options.auto_sync_debounce = debounce;
    let a = client(&server.url(), &dir.path().join("a.db"), options.clone())
        .await
        .build()
        .await
        .unwrap();
    let b = client(&server.url(), &dir.path().join("b.db"), options)
        .await
        .websocket(WebSocketConfig::new(server.ws_url()))
        .build()
        .await
        .unwrap();
    b.realtime().unwrap().connect().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.realtime().unwrap().is_connected() {
        assert!(Instant::now() < deadline, "B did not connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the subscription reach the server.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut events = b.events();

    let mut total = Vec::with_capacity(writes);
    let mut local = Vec::with_capacity(writes);
    let mut missed = 0;
    for n in 0..WARMUP + writes {
        let t = todo(n);
        let started = Instant::now();
        a.save(&t).await.unwrap();
        let saved = started.elapsed();
        let arrived = wait_added(&mut events, &t.id).await;
        let elapsed = started.elapsed();
        // The event follows the store write; check that B really has the row.
        let stored = b.store().get(Todo::SCHEMA, &t.id).unwrap().is_some();
        if n < WARMUP {
            continue;
        }
        if arrived && stored {
            total.push(elapsed);
            local.push(saved);
        } else {
            missed += 1;
        }
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
    (stats(&mut total), stats(&mut local), missed)
}

/// Raw WebSocket echo round trip on loopback with a message the size of a change event.
async fn raw_ws(round_trips: usize) -> Stats {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        while let Some(Ok(message)) = ws.next().await {
            if message.is_close() || ws.send(message).await.is_err() {
                break;
            }
        }
    });
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
        .await
        .unwrap();
    let payload = serde_json::json!({
        "event": "item_created", "collection": "todos", "id": "rt-00000000", "version": 1,
        "data": todo(0),
    })
    .to_string();
    let mut samples = Vec::with_capacity(round_trips);
    for n in 0..WARMUP + round_trips {
        let started = Instant::now();
        ws.send(Message::text(payload.clone())).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        let elapsed = started.elapsed();
        assert!(reply.is_text());
        if n >= WARMUP {
            samples.push(elapsed);
        }
    }
    let _ = ws.close(None).await;
    let _ = echo.await;
    stats(&mut samples)
}

fn main() {
    let writes: usize = std::env::var("SYNC_BENCH_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let debounce = std::env::var("SYNC_BENCH_DEBOUNCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(
            SyncOptions::default().auto_sync_debounce,
            Duration::from_millis,
        );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let raw = raw_ws(writes).await;
        let (total, local, missed) = framework(writes, debounce).await;
        println!(
            "realtime_latency: {writes} writes, one at a time, A --HTTP push--> sync-server (SQLite) \
             --WebSocket--> B; auto_sync_debounce {debounce:?}; loopback, same process"
        );
        println!(
            "  A.save -> B stored + ModelAdded: p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  mean {:>6.2} ms{}",
            ms(total.p50),
            ms(total.p99),
            ms(total.max),
            ms(total.mean),
            if missed > 0 {
                format!("  ({missed} writes not seen within 5 s)")
            } else {
                String::new()
            }
        );
        println!(
            "    of which A.save returning (local write): p50 {:>6.2} ms  p99 {:>6.2} ms",
            ms(local.p50),
            ms(local.p99)
        );
        println!(
            "  raw WebSocket echo round trip:   p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
            ms(raw.p50),
            ms(raw.p99),
            ms(raw.max)
        );
        let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
        println!(
            "  goals: p50 < 5 ms [{}], p99 < 25 ms [{}]",
            verdict(total.p50 < Duration::from_millis(5) && missed == 0),
            verdict(total.p99 < Duration::from_millis(25) && missed == 0)
        );
    });
}
