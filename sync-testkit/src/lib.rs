//! Test support shared by the tests of the offline-sync-kit workspace (not published).
//!
//! - [`models`]: the DESIGN.md `Todo` and the other test models, derived against
//!   `sync-core` directly (`#[sync(crate = "::sync_core")]`), so crates below the facade can
//!   use them.
//! - [`users`]: the users and static tokens every test server knows.
//! - [`postgres`]: the one environment variable naming the test Postgres server, a per-test
//!   database ([`TestDb`]: a SQLite file or a fresh Postgres schema) and [`backend_matrix!`],
//!   which makes one test per backend.
//! - [`proxy`]: [`FaultProxy`], a TCP proxy on loopback that injects real network faults.
//! - [`client`] and [`wait`]: sync-engine options for fast tests, [`eventually`] and
//!   [`next_event`].
//!
//! It depends on `sync-core` and `sync-derive` only, never on `sync-server`, `sync-diesel` or
//! the facade: the tests of `sync-server` and `sync-diesel` dev-depend on it, so anything
//! above them here would be a dependency cycle. What needs a server or a store type lives
//! beside the tests that use it: `sync-server/tests/support` (start a server on a
//! [`TestDb`], a raw HTTP and WebSocket client) and the root `tests/support` (a restartable
//! server, client stores).

// Test support: a failed setup step is a failed test, so it panics with the cause.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod client;
pub mod models;
pub mod postgres;
pub mod proxy;
pub mod users;
pub mod wait;

pub use client::fast_options;
pub use models::{todo, Gadget, Spec, Todo};
pub use postgres::{FromTestDb, PgSchema, TestDb, POSTGRES_URL_ENV};
pub use proxy::{Fault, FaultProxy};
pub use users::{ALICE, BOB};
pub use wait::{eventually, next_event};
