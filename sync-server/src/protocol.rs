//! Serde types of the wire protocol (DESIGN.md, "Wire protocol").
//!
//! These types are what `sync-server` reads and writes. They are kept free of server internals so
//! that they can move to a crate shared with the client runtime.
//!
//! # Records
//!
//! A record on the wire is the stored JSON object plus the server-managed keys
//! [`ID_KEY`], [`VERSION_KEY`], [`UPDATED_AT_KEY`] and, on tombstones only, [`DELETED_KEY`]:
//!
//! ```json
//! {"id": "t1", "title": "milk", "version": 42, "updated_at": "2025-01-01T10:00:00.000Z"}
//! {"id": "t2", "title": "eggs", "version": 43, "updated_at": "2025-01-01T10:00:01.000Z", "deleted": true}
//! ```
//!
//! Records are schemaless, so they are carried as [`serde_json::Map`]s.
//!
//! # Errors
//!
//! Every error response of the REST API is an [`ErrorBody`]: `{"error": "...", "code": "...", ...}`.
//! A version conflict (409) carries the current record under `record`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Key of the record id in a record object.
pub const ID_KEY: &str = "id";
/// Key of the server-assigned version in a record object.
pub const VERSION_KEY: &str = "version";
/// Key of the last-update timestamp (RFC 3339, UTC) in a record object.
pub const UPDATED_AT_KEY: &str = "updated_at";
/// Key present (and `true`) only on tombstones.
pub const DELETED_KEY: &str = "deleted";

/// Keys that the server manages; they are stripped from written data and never stored.
pub const RESERVED_KEYS: [&str; 4] = [ID_KEY, VERSION_KEY, UPDATED_AT_KEY, DELETED_KEY];

/// Header carrying the idempotency key of a REST write.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// A JSON record object: data plus the server-managed keys.
pub type Record = Map<String, Value>;

/// One page of a pull: `GET /{collection}?since={cursor}&limit={n}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullPage {
    /// Records with a version greater than the cursor, ordered by version, tombstones included.
    pub items: Vec<Record>,
    /// Cursor to send as `since` for the next page (the version of the last item, as a string;
    /// the request's cursor when the page is empty).
    pub next_cursor: String,
    /// Whether more records follow this page.
    pub has_more: bool,
}

/// Kind of a write operation in a [`PushOp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Create a record (fails with a conflict if a live record has the id).
    Create,
    /// Merge the top-level keys of `data` into the record (a delta; `PATCH`).
    Update,
    /// Replace the record's data with `data` (a full update; `PUT`).
    Replace,
    /// Delete the record, leaving a tombstone.
    Delete,
}

impl OpKind {
    /// The wire name of this kind.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Replace => "replace",
            Self::Delete => "delete",
        }
    }
}

/// Body of `POST /sync/push`.
///
/// Ops are kept as raw JSON values so that one malformed op is rejected on its own instead of
/// failing the whole request; [`PushOp`] is the shape each one must have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushRequest {
    /// The operations, applied in order; each one is atomic on its own.
    pub ops: Vec<Value>,
}

/// One operation of a push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushOp {
    /// Key that makes the op idempotent: a replay returns the stored result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Collection (a model's endpoint), e.g. `"todos"`.
    pub collection: String,
    /// What to do.
    pub op: OpKind,
    /// Record id. Optional for `create` (the server then generates one, or takes `data.id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Version the client based its change on; a mismatch is a conflict. `None` skips the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<i64>,
    /// Record data (a JSON object) for create, update and replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// Outcome status of one pushed op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpStatus {
    /// The op was applied (or had been applied before, for a replayed idempotency key).
    Applied,
    /// `base_version` did not match; `record` is the current record.
    Conflict,
    /// The op is invalid or its record does not exist; `error` says why.
    Rejected,
}

/// Result of one pushed op; also the stored result of an idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    /// What happened.
    pub status: OpStatus,
    /// Version of the record after the op (applied), or its current version (conflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The record after the op (applied) or the current record (conflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record>,
    /// Why the op was rejected, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the op was rejected, for programs (`not_found`, `invalid_data`, `id_too_long`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Body of the `POST /sync/push` response: one result per op, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// Results in the order of the request's ops.
    pub results: Vec<OpResult>,
}

/// Body of every REST error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to do, for people.
    pub error: String,
    /// Stable machine-readable code (`unauthorized`, `payload_too_large`, `malformed_json`,
    /// `conflict`, `not_found`, ...).
    pub code: String,
    /// The limit that was exceeded, for limit errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// The current record, for a version conflict (409).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record>,
}

/// Body of `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"` when the server answers.
    pub status: String,
}

/// A message from a WebSocket client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Authenticate the connection (when no `Authorization` header was sent).
    Auth {
        /// The bearer token.
        token: String,
    },
    /// Subscribe to or unsubscribe from a collection.
    Subscription {
        /// What to do.
        data: Subscription,
    },
    /// Liveness check; answered by [`ServerMessage::Pong`].
    Ping,
    /// Answer to a server ping; ignored.
    Pong,
}

/// Action of a [`Subscription`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionAction {
    /// Start receiving events of the channel.
    Subscribe,
    /// Stop receiving events of the channel.
    Unsubscribe,
}

/// Payload of a subscription message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// Subscribe or unsubscribe.
    pub action: SubscriptionAction,
    /// The collection (a model's endpoint).
    pub channel: String,
    /// Equality filter: only records whose top-level fields equal these values produce events.
    /// A string parameter also matches a number or boolean with the same text (`"3"` matches `3`).
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// A control message from the server (events are [`EventMessage`]s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to a ping.
    Pong,
    /// The `auth` message was accepted.
    AuthOk {
        /// The authenticated user.
        user: String,
    },
    /// A subscription is active.
    Subscribed {
        /// The collection.
        channel: String,
        /// The filter in force.
        parameters: Map<String, Value>,
    },
    /// A subscription was removed.
    Unsubscribed {
        /// The collection.
        channel: String,
    },
    /// A client message could not be handled; the connection stays open.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// Kind of a change event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A record was created.
    #[serde(rename = "item_created")]
    Created,
    /// A record was updated (delta or full).
    #[serde(rename = "item_updated")]
    Updated,
    /// A record was deleted; `data` is its tombstone.
    #[serde(rename = "item_deleted")]
    Deleted,
}

/// A change event pushed to subscribers after the write committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    /// What happened.
    pub event: EventKind,
    /// The collection.
    pub collection: String,
    /// The record id.
    pub id: String,
    /// The record's version after the change.
    pub version: i64,
    /// The record after the change (a tombstone for deletes).
    pub data: Record,
}
