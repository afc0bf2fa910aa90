//! Reference backend for offline-sync-kit.
//!
//! `sync-server` speaks the default wire protocol of the framework (see [`protocol`], the
//! `sync-protocol` crate that the client runtime shares): a REST
//! API with cursor pulls, conditional writes, idempotency keys and batch push, plus a WebSocket
//! that streams committed changes to their owner. Collections are schemaless: any endpoint name
//! is a collection of JSON objects with a string id. Data lives in SQLite (default, one file) or
//! Postgres (several instances may share one database; events cross instances by
//! `LISTEN/NOTIFY`).
//!
//! ```no_run
//! # async fn run() -> sync_server::Result<()> {
//! use sync_server::SyncServer;
//!
//! let server = SyncServer::builder()
//!     .database("sqlite://sync.db")
//!     .token("alice", "alice-secret-token")
//!     .build()
//!     .await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let running = server.spawn(listener)?;
//! println!("listening on {}", running.url());
//! // ...
//! running.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Versions come from one sequence that writers lock for their whole transaction, so they
//! become visible in commit order and a pull cursor can never skip a record.

#![warn(missing_docs)]

mod api;
mod auth;
mod error;
mod events;
mod listener;
mod serve;
mod server;
mod store;
mod throttle;
mod ws;
mod ws_requests;

/// The serde types of the wire protocol: the `sync-protocol` crate, which the client runtime
/// (`sync-core`) uses too.
pub use sync_protocol as protocol;

pub use self::auth::{Auth, JwtSettings, MIN_SECRET_BYTES};
pub use self::error::{Error, Result};
pub use self::server::{Limits, RunningServer, SyncServer, SyncServerBuilder, DEFAULT_DATABASE};
