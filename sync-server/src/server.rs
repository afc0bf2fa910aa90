//! The server: configuration, start-up, serving and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::api::{router, AppState};
use crate::auth::{read_tokens_file, Auth, JwtSettings};
use crate::error::{Error, Result};
use crate::events::Hub;
use crate::store::{DatabaseUrl, Store};

/// Request limits. Requests beyond them get a JSON error and change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest request body in bytes (413 beyond). Default 8 MiB.
    pub max_body_bytes: usize,
    /// Most ops in one `POST /sync/push` (413 beyond). Default 1000.
    pub max_batch_ops: usize,
    /// Longest record id in bytes. Default 255.
    pub max_id_len: usize,
    /// Longest collection name in bytes. Default 128.
    pub max_collection_len: usize,
    /// Longest idempotency key in bytes. Default 255.
    pub max_idempotency_key_len: usize,
    /// Page size of a pull without `limit`. Default 100.
    pub default_page_limit: usize,
    /// Largest page of a pull; a larger `limit` is lowered to it. Default 1000.
    pub max_page_limit: usize,
    /// Most equality filters in one pull. Default 16.
    pub max_filters: usize,
    /// Largest WebSocket message from a client in bytes. Default 8 MiB, like
    /// `max_body_bytes`, since a `push` request carries what a `POST /sync/push` body does.
    pub max_ws_message_bytes: usize,
    /// Most subscriptions of one WebSocket connection. Default 256.
    pub max_ws_subscriptions: usize,
    /// Time a WebSocket connection has to authenticate. Default 30 s.
    pub ws_auth_timeout: Duration,
    /// Most requests (`{"type":"request"}`) one WebSocket connection may have in progress;
    /// beyond, a request is answered 429 at once. Default 32.
    pub max_ws_requests_in_flight: usize,
    /// Bytes of records one push answer carries (`POST /sync/push`, WebSocket `push`); past
    /// them a result carries its version and `record_omitted: true` instead of the record
    /// (the first record always goes). Protects the server from building an answer of
    /// `ops x record size`. Default 8 MiB.
    pub max_push_answer_bytes: usize,
    /// Bytes queued for one WebSocket connection (answers and events it has not read yet);
    /// a connection past it is dropped (close 1013 when possible) and its client's
    /// reconnect and catch-up pull repair the gap. Protects the server from a peer that stops
    /// reading. Default 4 MiB.
    pub max_ws_queue_bytes: usize,
    /// Time one write to a WebSocket may take before the connection is dropped. Default 10 s.
    pub ws_write_timeout: Duration,
    /// Most parameters (`since` and equality filters) of one subscription. Default 16.
    pub max_subscription_parameters: usize,
    /// Largest JSON of one subscription's parameters in bytes. Default 4 KiB. With
    /// `max_ws_subscriptions` it bounds what one socket keeps (256 x 4 KiB).
    pub max_subscription_bytes: usize,
    /// Bytes of records one pull page carries (REST and WebSocket `pull`/`query`); a page is
    /// cut there with `has_more` (its first record always goes). Protects the server from
    /// loading `max_page_limit` large records for one request. Default 8 MiB.
    pub max_page_bytes: usize,
    /// Deepest nesting of arrays and objects in record data (the data object is level 1).
    /// Deeper data is refused on the way in, since readers (serde_json's limit of 128, with
    /// the record nested in answers and events) could not read it back. Default 64.
    pub max_json_depth: usize,
    /// Failed authentications (401s, failed WebSocket `auth`) one peer address may make per
    /// minute; past them every request of that address that carries credentials is answered
    /// 429 until the minute ends. Protects tokens from guessing. Default 60.
    pub max_auth_failures_per_minute: u32,
    /// Connections served at once; past it the server stops accepting until one closes, so
    /// a flood of idle connections cannot exhaust file descriptors. Default 1024 (keep it
    /// below the process's descriptor limit).
    pub max_connections: usize,
    /// Time a client has to send a request's headers (also an idle keep-alive connection's
    /// next request). Default 10 s.
    pub header_read_timeout: Duration,
    /// Time a client has to send a whole request body; past it the answer is 408. Default 30 s.
    pub body_read_timeout: Duration,
    /// WebSocket connections one user may hold at once; past it an upgrade is 429 and an
    /// `auth` message is refused. Default 32.
    pub max_ws_connections_per_user: usize,
    /// Interval of the server's WebSocket pings. Default 30 s.
    pub ws_ping_interval: Duration,
    /// A WebSocket from which nothing (not even a pong) arrived for this long is closed.
    /// Default 90 s.
    pub ws_idle_timeout: Duration,
    /// Bytes of record data one user may store, over all collections, tombstones included (a
    /// tombstone keeps its last data for filtered readers, so deleting does not free it). A
    /// write that would grow the user's total past it is refused with `quota_exceeded` (413,
    /// or a `rejected` result in a push); writes that keep or shrink it always go. Counted
    /// in the `sync_usage` table, kept by every write in its transaction. Default: no quota.
    pub max_user_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_batch_ops: 1000,
            max_id_len: 255,
            max_collection_len: 128,
            max_idempotency_key_len: 255,
            default_page_limit: 100,
            max_page_limit: 1000,
            max_filters: 16,
            max_ws_message_bytes: 8 * 1024 * 1024,
            max_ws_subscriptions: 256,
            ws_auth_timeout: Duration::from_secs(30),
            max_ws_requests_in_flight: 32,
            max_push_answer_bytes: 8 * 1024 * 1024,
            max_ws_queue_bytes: 4 * 1024 * 1024,
            ws_write_timeout: Duration::from_secs(10),
            max_subscription_parameters: 16,
            max_subscription_bytes: 4 * 1024,
            max_page_bytes: 8 * 1024 * 1024,
            max_json_depth: 64,
            max_auth_failures_per_minute: 60,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_ws_connections_per_user: 32,
            ws_ping_interval: Duration::from_secs(30),
            ws_idle_timeout: Duration::from_secs(90),
            max_user_bytes: None,
        }
    }
}

/// Builder of a [`SyncServer`].
///
/// ```no_run
/// # async fn run() -> sync_server::Result<()> {
/// let server = sync_server::SyncServer::builder()
///     .database("sqlite://sync.db")
///     .token("alice", "alice-secret-token")
///     .build()
///     .await?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let running = server.spawn(listener)?;
/// println!("listening on {}", running.url());
/// running.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct SyncServerBuilder {
    database: Option<String>,
    tokens: Vec<String>,
    token_pairs: Vec<(String, String)>,
    tokens_files: Vec<PathBuf>,
    jwt_secret: Option<Vec<u8>>,
    jwt_secret_file: Option<PathBuf>,
    jwt: JwtSettings,
    limits: Limits,
    pool_size: Option<u32>,
}

/// Default SQLite file when no database is configured.
pub const DEFAULT_DATABASE: &str = "sqlite://sync-server.db";

impl SyncServerBuilder {
    /// Database URL: `sqlite://PATH` (or a plain path) or `postgres://...`. Default:
    /// [`DEFAULT_DATABASE`].
    pub fn database(mut self, url: impl Into<String>) -> Self {
        self.database = Some(url.into());
        self
    }

    /// Adds a static bearer token `secret` for `user`.
    pub fn token(mut self, user: impl Into<String>, secret: impl Into<String>) -> Self {
        self.token_pairs.push((user.into(), secret.into()));
        self
    }

    /// Adds a static token given as `USER:SECRET` (the command line's `--token`).
    pub fn token_pair(mut self, pair: impl Into<String>) -> Self {
        self.tokens.push(pair.into());
        self
    }

    /// Adds the tokens of a file with one `USER:SECRET` per line (`#` comments allowed).
    pub fn tokens_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tokens_files.push(path.into());
        self
    }

    /// Accepts HS256 JWTs signed with `secret`; the user is the `sub` claim and `exp` is
    /// required.
    pub fn jwt_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.jwt_secret = Some(secret.into());
        self
    }

    /// Reads the HS256 secret of JWTs from a file (surrounding whitespace is trimmed), so it
    /// need not be on the command line.
    pub fn jwt_secret_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.jwt_secret_file = Some(path.into());
        self
    }

    /// Requires JWTs to carry this `iss` claim.
    pub fn jwt_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.jwt.issuer = Some(issuer.into());
        self
    }

    /// Requires JWTs to carry this `aud` claim.
    pub fn jwt_audience(mut self, audience: impl Into<String>) -> Self {
        self.jwt.audience = Some(audience.into());
        self
    }

    /// Clock skew allowed on a JWT's `exp` and `nbf` (default 60 s). A WebSocket session
    /// authenticated by a JWT closes when `exp` plus this passes, unless it re-authenticates.
    pub fn jwt_leeway(mut self, leeway: Duration) -> Self {
        self.jwt.leeway_secs = Some(leeway.as_secs());
        self
    }

    /// Lets a JWT whose `sub` equals a static-token user act as that user (off by default:
    /// such a token is refused, so the two kinds of identity never share records silently).
    pub fn jwt_subjects_share_static_users(mut self, share: bool) -> Self {
        self.jwt.subjects_share_static_users = share;
        self
    }

    /// Replaces all request limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Largest request body in bytes.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_body_bytes = bytes;
        self
    }

    /// Most ops in one push.
    pub fn max_batch_ops(mut self, ops: usize) -> Self {
        self.limits.max_batch_ops = ops;
        self
    }

    /// Longest record id in bytes.
    pub fn max_id_len(mut self, len: usize) -> Self {
        self.limits.max_id_len = len;
        self
    }

    /// Bytes of records one push answer carries (see [`Limits::max_push_answer_bytes`]).
    pub fn max_push_answer_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_push_answer_bytes = bytes;
        self
    }

    /// Bytes queued for one WebSocket connection (see [`Limits::max_ws_queue_bytes`]).
    pub fn max_ws_queue_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_ws_queue_bytes = bytes;
        self
    }

    /// Time one WebSocket write may take (see [`Limits::ws_write_timeout`]).
    pub fn ws_write_timeout(mut self, timeout: Duration) -> Self {
        self.limits.ws_write_timeout = timeout;
        self
    }

    /// Bytes of records one pull page carries (see [`Limits::max_page_bytes`]).
    pub fn max_page_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_page_bytes = bytes;
        self
    }

    /// Bytes of record data one user may store (see [`Limits::max_user_bytes`]).
    pub fn max_user_bytes(mut self, bytes: u64) -> Self {
        self.limits.max_user_bytes = Some(bytes);
        self
    }

    /// Database connections in the pool (default 8 for Postgres, 4 for SQLite).
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = Some(size);
        self
    }

    /// Checks the configuration, connects to the database, runs the embedded migrations and,
    /// on Postgres, starts listening for other instances' events.
    ///
    /// # Errors
    ///
    /// A configuration error (no authentication configured, a malformed token, an unreadable
    /// tokens file, an unsupported database URL, a zero limit) or a database that cannot be
    /// reached or migrated.
    pub async fn build(self) -> Result<SyncServer> {
        let mut auth = Auth::default();
        for (user, secret) in self.token_pairs {
            auth.add_token(user, secret)?;
        }
        for pair in &self.tokens {
            let (user, secret) = crate::auth::parse_token_pair(pair)?;
            auth.add_token(user, secret)?;
        }
        for path in &self.tokens_files {
            for (user, secret) in read_tokens_file(path)? {
                auth.add_token(user, secret)?;
            }
        }
        let mut jwt_secret = self.jwt_secret;
        if let Some(path) = &self.jwt_secret_file {
            let text = std::fs::read(path).map_err(|source| Error::SecretFile {
                path: path.clone(),
                source,
            })?;
            let text = String::from_utf8_lossy(&text).trim().as_bytes().to_vec();
            if jwt_secret.replace(text).is_some() {
                return Err(Error::Config(
                    "give the JWT secret once: --jwt-secret or --jwt-secret-file".into(),
                ));
            }
        }
        if let Some(secret) = &jwt_secret {
            auth.set_jwt(secret, &self.jwt)?;
        }
        if !auth.is_configured() {
            return Err(Error::Config(
                "no authentication configured: add a token (--token USER:SECRET), a tokens file \
                 (--tokens-file) or a JWT secret (--jwt-secret)"
                    .into(),
            ));
        }
        let limits = self.limits;
        for (name, value) in [
            ("header_read_timeout", limits.header_read_timeout),
            ("body_read_timeout", limits.body_read_timeout),
            ("ws_ping_interval", limits.ws_ping_interval),
            ("ws_idle_timeout", limits.ws_idle_timeout),
            ("ws_write_timeout", limits.ws_write_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::Config(format!("timeout {name} must be above 0")));
            }
        }
        for (name, value) in [
            ("max_body_bytes", limits.max_body_bytes),
            ("max_batch_ops", limits.max_batch_ops),
            ("max_id_len", limits.max_id_len),
            ("max_collection_len", limits.max_collection_len),
            ("max_idempotency_key_len", limits.max_idempotency_key_len),
            ("default_page_limit", limits.default_page_limit),
            ("max_page_limit", limits.max_page_limit),
            ("max_ws_message_bytes", limits.max_ws_message_bytes),
            (
                "max_ws_requests_in_flight",
                limits.max_ws_requests_in_flight,
            ),
            ("max_push_answer_bytes", limits.max_push_answer_bytes),
            ("max_ws_queue_bytes", limits.max_ws_queue_bytes),
            ("max_subscription_bytes", limits.max_subscription_bytes),
            ("max_page_bytes", limits.max_page_bytes),
            ("max_json_depth", limits.max_json_depth),
            ("max_connections", limits.max_connections),
            (
                "max_ws_connections_per_user",
                limits.max_ws_connections_per_user,
            ),
        ] {
            if value == 0 {
                return Err(Error::Config(format!("limit {name} must be above 0")));
            }
        }

        let url = DatabaseUrl::parse(self.database.as_deref().unwrap_or(DEFAULT_DATABASE))?;
        let pool_size = self.pool_size.unwrap_or(match url {
            DatabaseUrl::Sqlite(_) => 4,
            DatabaseUrl::Postgres(_) => 8,
        });
        let store = Store::open(url, pool_size).await?;
        let hub = Hub::new();
        let cancel = CancellationToken::new();

        let mut listener = None;
        if let (Some(target), DatabaseUrl::Postgres(pg_url)) = (store.notify_target(), store.url())
        {
            let (handle, ready) =
                crate::listener::spawn(pg_url.clone(), target.clone(), hub.clone(), cancel.clone());
            let started = ready
                .await
                .map_err(|_| Error::Task("event listener stopped during start-up".into()))
                .and_then(|r| r);
            if let Err(err) = started {
                cancel.cancel();
                let _ = handle.await;
                return Err(err);
            }
            listener = Some(handle);
        }

        let throttle = Arc::new(crate::throttle::AuthThrottle::new(
            limits.max_auth_failures_per_minute,
        ));
        Ok(SyncServer {
            state: AppState {
                store,
                auth: Arc::new(auth),
                limits,
                hub,
                cancel: cancel.clone(),
                throttle,
                ws_users: crate::ws::WsUsers::default(),
                devices: Arc::default(),
            },
            guard: cancel.clone().drop_guard(),
            cancel,
            listener,
        })
    }
}

/// The reference sync backend: REST + batch push + WebSocket over one database.
///
/// Build it with [`SyncServer::builder`], then [`serve`](SyncServer::serve) it on a listener
/// (until its [`shutdown_token`](SyncServer::shutdown_token) is cancelled) or
/// [`spawn`](SyncServer::spawn) it in the background.
#[derive(Debug)]
pub struct SyncServer {
    state: AppState,
    cancel: CancellationToken,
    listener: Option<JoinHandle<()>>,
    /// Stops the background tasks when the server is dropped unserved, or when the future of
    /// [`serve`](Self::serve) is dropped (e.g. by a runtime shutting down), so no blocking
    /// listener thread outlives it.
    guard: DropGuard,
}

impl SyncServer {
    /// Starts configuring a server.
    pub fn builder() -> SyncServerBuilder {
        SyncServerBuilder::default()
    }

    /// The token whose cancellation shuts the server down gracefully.
    #[must_use]
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The axum router of the API, to embed it in another server. Background tasks still stop
    /// with [`shutdown_token`](Self::shutdown_token).
    pub fn router(&self) -> axum::Router {
        router(self.state.clone())
    }

    /// Serves on `listener` until the shutdown token is cancelled, then stops accepting,
    /// finishes in-flight requests, closes WebSocket connections and stops background tasks.
    ///
    /// # Errors
    ///
    /// An I/O error of the listener, or a background task that failed.
    pub async fn serve(self, listener: TcpListener) -> Result<()> {
        let SyncServer {
            state,
            cancel,
            listener: events_listener,
            guard: _guard,
        } = self;
        let limits = state.limits.clone();
        let app = router(state);
        crate::serve::serve(
            listener,
            app,
            limits.max_connections,
            limits.header_read_timeout,
            cancel.clone(),
        )
        .await;
        // Also stop WebSocket connections and the event listener if serving failed.
        cancel.cancel();
        if let Some(listener) = events_listener {
            listener
                .await
                .map_err(|err| Error::Task(format!("event listener: {err}")))?;
        }
        Ok(())
    }

    /// Serves on `listener` in a background task.
    ///
    /// # Errors
    ///
    /// The listener's local address cannot be read.
    pub fn spawn(self, listener: TcpListener) -> Result<RunningServer> {
        let addr = listener.local_addr()?;
        let cancel = self.cancel.clone();
        let task = tokio::spawn(async move {
            let result = self.serve(listener).await;
            if let Err(err) = &result {
                tracing::error!(error = %err, "sync server stopped with an error");
            }
            result
        });
        Ok(RunningServer { addr, cancel, task })
    }
}

/// A server running in the background (see [`SyncServer::spawn`]).
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: JoinHandle<Result<()>>,
}

impl RunningServer {
    /// The address it listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://ADDR/ws`.
    #[must_use]
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Shuts down gracefully and waits until everything stopped.
    ///
    /// # Errors
    ///
    /// The server task failed or panicked.
    pub async fn shutdown(self) -> Result<()> {
        self.cancel.cancel();
        self.task
            .await
            .map_err(|err| Error::Task(format!("server task: {err}")))?
    }
}
