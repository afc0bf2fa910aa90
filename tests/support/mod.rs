//! Test support for end-to-end tests: a real sync-server on 127.0.0.1:0 over
//! a SQLite file (restartable on the same file and port) and client stores in temp dirs.
//! The models, users, fault proxy and waits are `sync_testkit`'s, re-exported here; this
//! module keeps what needs the facade's store or `sync_server` (the testkit sits below both).

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub mod counting;
pub mod npm;

use std::path::{Path, PathBuf};
use std::time::Duration;

use offline_sync_kit::{DieselStore, ManualConnectivity, SyncManager, SyncManagerBuilder};
use serde_json::Value;
use sync_server::{RunningServer, SyncServer};
use tokio::net::TcpListener;

pub use sync_testkit::{
    eventually, fast_options, next_event, todo, Fault, FaultProxy, Todo, ALICE, BOB,
};

/// A sync-server on its own SQLite file, restartable on the same file and port.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub running: Option<RunningServer>,
    pub addr: std::net::SocketAddr,
    max_id_len: Option<usize>,
    push_answer_budget: Option<usize>,
    user_quota: Option<u64>,
    /// (user, token) pairs the server accepts; ALICE and BOB unless set.
    tokens: Option<Vec<(String, String)>>,
}

impl Server {
    /// A server whose push answers carry at most `bytes` of records (the rest are omitted).
    pub async fn start_with_answer_budget(bytes: usize) -> Server {
        let mut server = Server::start().await;
        server.push_answer_budget = Some(bytes);
        server.restart().await;
        server
    }

    /// A server on which each user may store `bytes` of record data.
    pub async fn start_with_quota(bytes: u64) -> Server {
        let mut server = Server::start().await;
        server.user_quota = Some(bytes);
        server.restart().await;
        server
    }

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
            push_answer_budget: None,
            user_quota: None,
            tokens: None,
        };
        server.running = Some(server.spawn(listener).await);
        server
    }

    async fn spawn(&self, listener: TcpListener) -> RunningServer {
        let db = format!("sqlite://{}", self.dir.path().join("server.db").display());
        let mut builder = SyncServer::builder().database(db);
        match &self.tokens {
            Some(tokens) => {
                for (user, token) in tokens {
                    builder = builder.token(user, token);
                }
            }
            None => builder = builder.token(ALICE.0, ALICE.1).token(BOB.0, BOB.1),
        }
        if let Some(n) = self.max_id_len {
            builder = builder.max_id_len(n);
        }
        if let Some(bytes) = self.push_answer_budget {
            builder = builder.max_push_answer_bytes(bytes);
        }
        if let Some(bytes) = self.user_quota {
            builder = builder.max_user_bytes(bytes);
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

    /// Restarts accepting only `tokens` ((user, token) pairs): e.g. an expired token.
    pub async fn restart_with_tokens(&mut self, tokens: &[(&str, &str)]) {
        self.tokens = Some(
            tokens
                .iter()
                .map(|(u, t)| ((*u).to_owned(), (*t).to_owned()))
                .collect(),
        );
        self.restart().await;
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

pub async fn client_builder(url: &str, db: &ClientDb, token: &str) -> SyncManagerBuilder {
    SyncManager::builder()
        .base_url(url)
        .store(store_at(&db.path()).await)
        .bearer_token(token)
        .options(fast_options())
}

/// [`client_builder`] with the connectivity set to "always online"
/// (`ManualConnectivity::new(true)`): no health probes, and no run skipped after a failure.
/// For tests that inject faults into the requests they count (a fault proxy's next requests),
/// which the default connectivity's probes would take, and whose runs it would skip.
pub async fn always_online_builder(url: &str, db: &ClientDb, token: &str) -> SyncManagerBuilder {
    client_builder(url, db, token)
        .await
        .connectivity(ManualConnectivity::new(true))
}
