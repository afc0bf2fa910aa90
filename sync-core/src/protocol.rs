//! Serde types of the default wire protocol (what `sync-server` speaks).
//!
//! A record on the wire is the model's JSON plus `version` (server-assigned),
//! `updated_at` (RFC 3339) and, on tombstones only, `deleted: true`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Key of the record id.
pub const ID_KEY: &str = "id";
/// Key of the server-assigned version.
pub const VERSION_KEY: &str = "version";
/// Key of the server's last-update time.
pub const UPDATED_AT_KEY: &str = "updated_at";
/// Key present (and `true`) on tombstones.
pub const DELETED_KEY: &str = "deleted";
/// Header carrying the idempotency key of a write.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// A page of `GET /{endpoint}?since=&limit=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullPage {
    /// Records ordered by version, tombstones included.
    pub items: Vec<Map<String, Value>>,
    /// Cursor for the next page.
    pub next_cursor: String,
    /// More records follow.
    pub has_more: bool,
}

/// Kind of a pushed op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireOp {
    /// Create.
    Create,
    /// Merge the given top-level keys (delta).
    Update,
    /// Replace the whole record.
    Replace,
    /// Delete, leaving a tombstone.
    Delete,
}

/// One op of `POST /sync/push`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushOp {
    /// Makes the op idempotent.
    pub idempotency_key: String,
    /// The model's endpoint.
    pub collection: String,
    /// What to do.
    pub op: WireOp,
    /// Record id.
    pub id: String,
    /// Version the change is based on; `None` skips the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<i64>,
    /// Record data or delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
}

/// Body of `POST /sync/push`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushRequest {
    /// Ops in order.
    pub ops: Vec<PushOp>,
}

/// Status of one pushed op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpStatus {
    /// Applied (or applied before, for a replayed key).
    Applied,
    /// Version mismatch; `record` is the current record.
    Conflict,
    /// Invalid op; `error` says why.
    Rejected,
}

/// Result of one pushed op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    /// What happened.
    pub status: OpStatus,
    /// Version after the op, or the current version on conflict.
    #[serde(default)]
    pub version: Option<i64>,
    /// The record after the op, or the current record on conflict.
    #[serde(default)]
    pub record: Option<Map<String, Value>>,
    /// Why it was rejected.
    #[serde(default)]
    pub error: Option<String>,
    /// Machine-readable reason.
    #[serde(default)]
    pub code: Option<String>,
}

/// Body of the push response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// One result per op, in order.
    pub results: Vec<OpResult>,
}
