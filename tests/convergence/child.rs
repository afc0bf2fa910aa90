//! The two child roles of the suite's binary: a client device (a `SyncManager` on its own
//! SQLite file, driven by JSON lines on stdin, answering with `@@` lines on stdout) and the
//! server (sync-server on a database, printing its address). Both are killed with SIGKILL.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

use offline_sync_kit::store::Resolution;
use offline_sync_kit::{
    ConflictContext, ConflictResolver, ConflictStrategy, DieselStore, HttpRemote, SyncManager,
    SyncOptions, WebSocketConfig, WebSocketRemote,
};
use serde_json::{json, Map, Value};

use crate::plan::{defaults, Strategy, Transport};
use crate::{Todo, TOKEN, USER};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Writes one answer line; the orchestrator ignores lines without the `@@` prefix.
fn answer(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "@@{value}");
    let _ = out.flush();
}

fn env(name: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

/// The suite's custom resolver: the local title on top of the remote record.
#[derive(Debug)]
struct LocalTitle;

impl ConflictResolver for LocalTitle {
    fn resolve(&self, conflict: &ConflictContext<'_>) -> Resolution {
        match conflict.local {
            Some(local) if !conflict.remote.deleted => {
                let mut merged = conflict.remote.data.clone();
                if let Some(title) = local.get("title") {
                    merged.insert("title".into(), title.clone());
                }
                Resolution::Merged(merged)
            }
            _ => Resolution::TakeRemote,
        }
    }
}

fn strategy(s: Strategy) -> ConflictStrategy {
    match s {
        Strategy::ServerWins => ConflictStrategy::ServerWins,
        Strategy::ClientWins => ConflictStrategy::ClientWins,
        Strategy::LastUpdateWins => ConflictStrategy::LastUpdateWins,
        Strategy::MergeFields => ConflictStrategy::MergeFields,
        Strategy::Custom => ConflictStrategy::Custom(Arc::new(LocalTitle)),
    }
}

/// `CONV_LOG=debug` (or any tracing filter) writes the child's logs to its log file.
fn init_logs() {
    if let Ok(filter) = std::env::var("CONV_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

pub fn client_main() -> Result<(), BoxError> {
    init_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(client())
}

async fn client() -> Result<(), BoxError> {
    let db = env("CONV_DB")?;
    let url = env("CONV_URL")?;
    let transport = Transport::parse(&env("CONV_TRANSPORT")?).ok_or("bad CONV_TRANSPORT")?;
    let conflict = Strategy::parse(&env("CONV_STRATEGY")?).ok_or("bad CONV_STRATEGY")?;
    let batch_size: usize = env("CONV_BATCH")?.parse()?;
    let delta = env("CONV_DELTA")? == "1";
    let auto_sync = env("CONV_AUTO")? == "1";
    let realtime = env("CONV_REALTIME")? == "1";
    let short = env("CONV_SHORT")? == "1";

    let mut options = SyncOptions::default();
    options.auto_sync = auto_sync;
    options.auto_sync_debounce = Duration::from_millis(2);
    options.batch_size = batch_size;
    options.use_delta_sync = delta;
    options.conflict_strategy = strategy(conflict);
    options.retry.base = Duration::from_millis(20);
    options.retry.max = Duration::from_millis(150);
    let store = DieselStore::open_sqlite(&db).await?;
    let builder = SyncManager::builder()
        .store(store)
        .model::<Todo>()
        .options(options);
    let ws_url = url.replacen("http://", "ws://", 1) + "/ws";
    let quick = |mut config: WebSocketConfig| {
        config.reconnect_delay = Duration::from_millis(20);
        config.max_reconnect_delay = Duration::from_millis(150);
        config.ping_interval = Duration::from_millis(500);
        config.pong_timeout = Duration::from_millis(1500);
        config
    };
    let builder = match transport {
        Transport::Batch | Transport::Rest if short => {
            let remote = HttpRemote::builder(url.clone())
                .bearer_token(TOKEN)
                .timeout(Duration::from_secs(1));
            let remote = if transport == Transport::Rest {
                remote.batch_push(None)
            } else {
                remote
            };
            builder.remote(remote.build()?)
        }
        Transport::Batch => builder.base_url(&url).bearer_token(TOKEN),
        Transport::Rest => builder.base_url(&url).bearer_token(TOKEN).rest_only(),
        Transport::WebSocket => {
            let config = quick(WebSocketConfig::new(ws_url.clone()));
            let mut headers = BTreeMap::new();
            headers.insert("Authorization".to_owned(), format!("Bearer {TOKEN}"));
            builder.remote(WebSocketRemote::connect(
                config,
                headers,
                Duration::from_secs(if short { 1 } else { 3 }),
            ))
        }
    };
    let builder = if realtime {
        let mut config = quick(WebSocketConfig::new(ws_url));
        config
            .headers
            .insert("Authorization".to_owned(), format!("Bearer {TOKEN}"));
        builder.websocket(config)
    } else {
        builder
    };
    let sync = Arc::new(builder.build().await?);
    if realtime {
        sync.realtime()?.connect()?;
    }

    // Writes run one after another, in the order they arrived, so "the last acknowledged
    // write" of a record is well defined; syncs and dumps run beside them.
    let (writes, mut write_queue) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let writer = Arc::clone(&sync);
    let write_task = tokio::spawn(async move {
        while let Some(command) = write_queue.recv().await {
            let reply = write(&writer, &command).await;
            answer(&reply);
        }
    });

    let (lines, mut incoming) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    answer(&json!({ "ready": true }));

    while let Some(line) = incoming.recv().await {
        let command: Value = match serde_json::from_str(&line) {
            Ok(c) => c,
            Err(e) => {
                answer(&json!({ "error": format!("bad command {line:?}: {e}") }));
                continue;
            }
        };
        match command["op"].as_str() {
            Some("edit" | "delete") => {
                let _ = writes.send(command);
            }
            Some("sync") => {
                let sync = Arc::clone(&sync);
                tokio::spawn(async move {
                    let n = &command["n"];
                    let started = std::time::Instant::now();
                    let result = sync.sync_all().await;
                    let ms = started.elapsed().as_millis() as u64;
                    let reply = match result {
                        Ok(r) => json!({
                            "n": n, "ok": true, "pushed": r.pushed, "pulled": r.pulled,
                            "conflicts": r.conflicts, "failed": r.failed, "ms": ms,
                        }),
                        Err(e) => json!({ "n": n, "ok": false, "error": e.to_string(), "ms": ms }),
                    };
                    answer(&reply);
                });
            }
            Some("dump") => {
                let sync = Arc::clone(&sync);
                tokio::spawn(async move {
                    let reply = dump(&sync, &command["n"]).await;
                    answer(&reply);
                });
            }
            _ => answer(&json!({ "n": command["n"], "ok": false, "error": "unknown op" })),
        }
    }
    drop(writes);
    let _ = write_task.await;
    sync.shutdown().await?;
    Ok(())
}

async fn write(sync: &SyncManager, command: &Value) -> Value {
    let n = &command["n"];
    let Some(id) = command["id"].as_str() else {
        return json!({ "n": n, "ok": false, "error": "no id" });
    };
    if command["op"] == "delete" {
        return match sync.delete::<Todo>(id).await {
            Ok(()) => json!({ "n": n, "ok": true, "record": null }),
            Err(e) => json!({ "n": n, "ok": false, "error": e.to_string() }),
        };
    }
    let current = match sync.get::<Todo>(id).await {
        Ok(c) => c,
        Err(e) => return json!({ "n": n, "ok": false, "error": e.to_string() }),
    };
    let mut record: Map<String, Value> = match current.map(serde_json::to_value) {
        Some(Ok(Value::Object(map))) => map,
        Some(Ok(other)) => return json!({ "n": n, "ok": false, "error": format!("{other}") }),
        Some(Err(e)) => return json!({ "n": n, "ok": false, "error": e.to_string() }),
        None => defaults(id),
    };
    if let Some(set) = command["set"].as_object() {
        for (field, value) in set {
            record.insert(field.clone(), value.clone());
        }
    }
    let todo: Todo = match serde_json::from_value(Value::Object(record)) {
        Ok(t) => t,
        Err(e) => return json!({ "n": n, "ok": false, "error": e.to_string() }),
    };
    match sync.save(&todo).await {
        Ok(()) => json!({ "n": n, "ok": true, "record": todo }),
        Err(e) => json!({ "n": n, "ok": false, "error": e.to_string() }),
    }
}

async fn dump(sync: &SyncManager, n: &Value) -> Value {
    let records = match sync.all::<Todo>().await {
        Ok(r) => r,
        Err(e) => return json!({ "n": n, "ok": false, "error": e.to_string() }),
    };
    let store = sync.store();
    let counts = tokio::task::spawn_blocking(move || store.counts()).await;
    let (pending, failed) = match counts {
        Ok(Ok(c)) => (c.pending, c.failed),
        Ok(Err(e)) => return json!({ "n": n, "ok": false, "error": e.to_string() }),
        Err(e) => return json!({ "n": n, "ok": false, "error": e.to_string() }),
    };
    let failed_ops = match sync.failed_ops().await {
        Ok(ops) => ops.iter().map(|op| format!("{op:?}")).collect::<Vec<_>>(),
        Err(e) => vec![format!("failed_ops: {e}")],
    };
    let last_error = sync.status().borrow().last_error.clone();
    // The checksum the store keeps write by write, and a recount of what it knows.
    let store = sync.store();
    let sums = tokio::task::spawn_blocking(move || {
        let kept = store.known_checksum(<Todo as offline_sync_kit::SyncModel>::SCHEMA)?;
        let known = store.known_versions(<Todo as offline_sync_kit::SyncModel>::SCHEMA)?;
        Ok::<_, offline_sync_kit::store::StoreError>((kept, known.checksum(), known.known))
    })
    .await;
    let (kept, recount, known) = match sums {
        Ok(Ok(((_, kept), recount, known))) => (kept.hex(), recount.hex(), known),
        Ok(Err(e)) => return json!({ "n": n, "ok": false, "error": e.to_string() }),
        Err(e) => return json!({ "n": n, "ok": false, "error": e.to_string() }),
    };
    json!({
        "n": n, "ok": true, "records": records, "pending": pending, "failed": failed,
        "failed_ops": failed_ops, "last_error": last_error,
        "checksum": kept, "checksum_recount": recount, "known": known,
    })
}

pub fn server_main() -> Result<(), BoxError> {
    init_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let database = env("CONV_SERVER_DB")?;
        let server = sync_server::SyncServer::builder()
            .database(database)
            .token(USER, TOKEN)
            .build()
            .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let _running = server.spawn(listener)?;
        answer(&json!({ "listening": addr.to_string() }));
        // Runs until killed (or until the orchestrator closes stdin).
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        })
        .await;
        Ok(())
    })
}
