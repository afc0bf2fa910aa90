//! Test support for end-to-end tests: a real sync-server on 127.0.0.1:0 over
//! a SQLite file, client stores in temp dirs, and a TCP proxy on loopback that
//! injects real network faults.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use offline_sync_kit::{
    DieselStore, SyncEvent, SyncEventType, SyncManager, SyncManagerBuilder, SyncOptions,
};
use serde_json::Value;
use sync_server::{RunningServer, SyncServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const ALICE: (&str, &str) = ("alice", "alice-token");
pub const BOB: (&str, &str) = ("bob", "bob-token");

/// A sync-server on its own SQLite file, restartable on the same file and port.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub running: Option<RunningServer>,
    pub addr: std::net::SocketAddr,
    max_id_len: Option<usize>,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(None).await
    }

    pub async fn start_with(max_id_len: Option<usize>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = Server {
            dir,
            running: None,
            addr,
            max_id_len,
        };
        server.running = Some(server.spawn(listener).await);
        server
    }

    async fn spawn(&self, listener: TcpListener) -> RunningServer {
        let db = format!("sqlite://{}", self.dir.path().join("server.db").display());
        let mut builder = SyncServer::builder()
            .database(db)
            .token(ALICE.0, ALICE.1)
            .token(BOB.0, BOB.1);
        if let Some(n) = self.max_id_len {
            builder = builder.max_id_len(n);
        }
        builder.build().await.unwrap().spawn(listener).unwrap()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.unwrap();
        }
    }

    /// Starts again on the same database file and port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebinding {}: {e}", self.addr),
            }
        };
        self.running = Some(self.spawn(listener).await);
    }

    pub async fn restart_with_max_id_len(&mut self, n: usize) {
        self.max_id_len = Some(n);
        self.restart().await;
    }

    /// Every live record of `collection` as the server has it, for `token`.
    pub async fn records(&self, token: &str, collection: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut since: Option<String> = None;
        loop {
            let mut url = format!("{}/{collection}?limit=1000", self.url());
            if let Some(s) = &since {
                url.push_str(&format!("&since={s}"));
            }
            let page: Value = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for item in page["items"].as_array().unwrap() {
                if item.get("deleted") != Some(&Value::Bool(true)) {
                    out.push(item.clone());
                }
            }
            if !page["has_more"].as_bool().unwrap() {
                break;
            }
            since = Some(page["next_cursor"].as_str().unwrap().to_owned());
        }
        out
    }

    /// One record as the server has it (`None`: 404).
    pub async fn record(&self, token: &str, collection: &str, id: &str) -> Option<Value> {
        let response = reqwest::Client::new()
            .get(format!("{}/{collection}/{id}", self.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if response.status() == 404 {
            return None;
        }
        Some(response.json().await.unwrap())
    }
}

/// What the fault proxy does with the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Forward,
    /// Accept and close at once (server down).
    Refuse,
    /// Answer `HTTP 500` without forwarding.
    Answer500,
    /// Forward the request, wait for the server's answer, then cut the connection
    /// without passing the answer on (the response is lost after the server committed).
    CutAfterResponse,
    /// Forward part of the request, then cut the connection: the client has sent it (it may
    /// have arrived), the server never got it whole and did nothing.
    CutRequest,
    /// Forward one complete response on this connection, then close it and
    /// refuse every later connection (the server goes down between two requests).
    OneResponseThenDown,
}

/// A TCP proxy on loopback in front of a server, with faults for the next `n` connections.
pub struct FaultProxy {
    pub addr: std::net::SocketAddr,
    state: Arc<Mutex<(Fault, usize)>>,
    /// Bumped on every change of fault; open connections then close.
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    pub connections: Arc<AtomicUsize>,
    /// While set, open connections stop passing the server's bytes on (a stalled peer).
    stalled: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new((Fault::Forward, 0usize)));
        let connections = Arc::new(AtomicUsize::new(0));
        let state2 = Arc::clone(&state);
        let connections2 = Arc::clone(&connections);
        let generation = Arc::new(tokio::sync::watch::channel(0u64).0);
        let generation2 = Arc::clone(&generation);
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stalled2 = Arc::clone(&stalled);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    break;
                };
                connections2.fetch_add(1, Ordering::SeqCst);
                let fault = {
                    let mut s = state2.lock().unwrap();
                    if s.1 == usize::MAX {
                        s.0
                    } else if s.1 > 0 {
                        s.1 -= 1;
                        s.0
                    } else {
                        Fault::Forward
                    }
                };
                let kill = generation2.subscribe();
                tokio::spawn(handle(
                    client,
                    upstream,
                    fault,
                    Arc::clone(&state2),
                    kill,
                    Arc::clone(&stalled2),
                ));
            }
        });
        FaultProxy {
            addr,
            state,
            generation,
            connections,
            stalled,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to the next `n` connections, then forwards again.
    pub fn fault_next(&self, fault: Fault, n: usize) {
        *self.state.lock().unwrap() = (fault, n);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Refuses every connection (and cuts the open ones) until `heal`.
    pub fn go_down(&self) {
        *self.state.lock().unwrap() = (Fault::Refuse, usize::MAX);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn heal(&self) {
        *self.state.lock().unwrap() = (Fault::Forward, 0);
        self.stalled.store(false, Ordering::SeqCst);
    }

    /// Open connections stay open but the server's bytes stop arriving.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn response_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())?;
    Some(end + len)
}

async fn handle(
    mut client: TcpStream,
    upstream: std::net::SocketAddr,
    fault: Fault,
    state: Arc<Mutex<(Fault, usize)>>,
    mut kill: tokio::sync::watch::Receiver<u64>,
    stalled: Arc<std::sync::atomic::AtomicBool>,
) {
    match fault {
        Fault::OneResponseThenDown => {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut cr, mut cw) = client.split();
            let (mut sr, mut sw) = server.split();
            let mut cbuf = vec![0u8; 1 << 16];
            let mut response = Vec::new();
            let mut sbuf = vec![0u8; 1 << 16];
            loop {
                tokio::select! {
                    n = cr.read(&mut cbuf) => match n {
                        Ok(0) | Err(_) => return,
                        Ok(n) => { if sw.write_all(&cbuf[..n]).await.is_err() { return; } }
                    },
                    n = sr.read(&mut sbuf) => match n {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            response.extend_from_slice(&sbuf[..n]);
                            if let Some(total) = response_len(&response) {
                                if response.len() >= total {
                                    *state.lock().unwrap() = (Fault::Refuse, usize::MAX);
                                    let _ = cw.write_all(&response[..total]).await;
                                    let _ = cw.shutdown().await;
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        }
        Fault::Refuse => drop(client),
        Fault::CutRequest => {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let mut buf = vec![0u8; 1 << 16];
            if let Ok(n) = client.read(&mut buf).await {
                let _ = server.write_all(&buf[..n / 2]).await;
            }
            drop(server);
            drop(client);
        }
        Fault::Answer500 => {
            let mut buf = [0u8; 65536];
            let _ = client.read(&mut buf).await;
            let _ = client
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            let _ = client.shutdown().await;
        }
        Fault::CutAfterResponse => {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut cr, _cw) = client.split();
            let (mut sr, mut sw) = server.split();
            let mut buf = vec![0u8; 1 << 16];
            let mut sbuf = vec![0u8; 1 << 16];
            // Forward the request until the server starts answering, then cut.
            loop {
                tokio::select! {
                    n = cr.read(&mut buf) => match n {
                        Ok(0) | Err(_) => return,
                        Ok(n) => { if sw.write_all(&buf[..n]).await.is_err() { return; } }
                    },
                    n = sr.read(&mut sbuf) => {
                        let _ = n;
                        return;
                    }
                }
            }
        }
        Fault::Forward => {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = server.set_nodelay(true);
            let _ = client.set_nodelay(true);
            let (mut cr, mut cw) = client.split();
            let (mut sr, mut sw) = server.split();
            let up = async {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            let down = async {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stalled.load(Ordering::SeqCst) {
                                // Swallow: the peer looks alive at TCP level but says nothing.
                                continue;
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            tokio::select! {
                () = up => {}
                () = down => {}
                _ = kill.changed() => {}
            }
        }
    }
}

/// A client store file in its own temp dir.
pub struct ClientDb {
    pub dir: tempfile::TempDir,
}

impl ClientDb {
    pub fn new() -> ClientDb {
        ClientDb {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("client.db")
    }
}

pub async fn store_at(path: &Path) -> DieselStore {
    DieselStore::open_sqlite(path).await.unwrap()
}

/// Options for fast, deterministic tests: short debounce and backoff.
pub fn fast_options() -> SyncOptions {
    let defaults = SyncOptions::default();
    SyncOptions {
        auto_sync_debounce: Duration::from_millis(1),
        retry: offline_sync_kit::RetryPolicy {
            base: Duration::from_millis(50),
            max: Duration::from_millis(200),
            ..defaults.retry
        },
        ..defaults
    }
}

pub async fn client_builder(url: &str, db: &ClientDb, token: &str) -> SyncManagerBuilder {
    SyncManager::builder()
        .base_url(url)
        .store(store_at(&db.path()).await)
        .bearer_token(token)
        .options(fast_options())
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for an event of `kind` (optionally for record `id`).
pub async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<SyncEvent>,
    kind: SyncEventType,
    id: Option<&str>,
) -> SyncEvent {
    let deadline = Duration::from_secs(10);
    tokio::time::timeout(deadline, async {
        loop {
            match events.recv().await {
                Ok(event) if event.kind == kind && (id.is_none() || event.id.as_deref() == id) => {
                    return event
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event channel closed: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind:?} event within {deadline:?}"))
}

use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

/// The DESIGN.md model.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(model_type = "todo", endpoint = "todos", table = "todos")]
#[serde(rename_all = "camelCase")]
pub struct Todo {
    #[sync(id)]
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub is_completed: bool,
    #[sync(index)]
    pub priority: i32,
    #[sync(json)]
    pub tags: Vec<String>,
    pub due: Option<chrono::DateTime<chrono::Utc>>,
}

pub fn todo(id: &str, title: &str) -> Todo {
    Todo {
        id: id.to_owned(),
        title: title.to_owned(),
        description: String::new(),
        is_completed: false,
        priority: 1,
        tags: vec![],
        due: None,
    }
}
