//! The default wire protocol of offline-sync-kit, once: the serde types that `sync-core` (the
//! client runtime) and `sync-server` (the reference backend) both read and write, so the two
//! cannot drift apart.
//!
//! | concern | types |
//! | --- | --- |
//! | records | [`Record`], [`ID_KEY`], [`VERSION_KEY`], [`UPDATED_AT_KEY`], [`DELETED_KEY`] |
//! | pull | [`PullPage`] (`GET /{collection}?since={cursor}&limit={n}`) |
//! | push | [`PushRequest`], [`PushOp`], [`OpKind`], [`PushResponse`], [`OpResult`], [`OpStatus`] (`POST /sync/push`) |
//! | REST writes | [`IDEMPOTENCY_KEY_HEADER`], `If-Match: {version}` |
//! | errors | [`ErrorBody`], [`ErrorCode`] |
//! | WebSocket | [`ClientMessage`], [`ServerMessage`], [`EventMessage`], [`WsRequest`], [`WsResponse`] |
//!
//! # Records
//!
//! A record on the wire is the application's JSON object plus the server-managed keys
//! [`ID_KEY`], [`VERSION_KEY`], [`UPDATED_AT_KEY`] and, on tombstones only, [`DELETED_KEY`]:
//!
//! ```json
//! {"id": "t1", "title": "milk", "version": 42, "updated_at": "2025-01-01T10:00:00.000Z"}
//! {"id": "t2", "title": "eggs", "version": 43, "updated_at": "2025-01-01T10:00:01.000Z", "deleted": true}
//! ```
//!
//! Records are schemaless, so they are carried as [`serde_json::Map`]s.
//!
//! # Compatibility
//!
//! Names a newer peer may add are read without failing: an unknown [`ErrorCode`] becomes
//! [`ErrorCode::Other`], an unknown WebSocket message type becomes [`ClientMessage::Unknown`]
//! or [`ServerMessage::Unknown`]. Kinds whose meaning a reader must know to act on (an
//! [`OpKind`], an [`OpStatus`]) stay strict.

#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod error;
mod metadata;
mod pull;
mod push;
mod ws;

pub use crate::error::{ErrorBody, ErrorCode};
pub use crate::metadata::{
    is_valid_device_id, record_hash, Checksum, CollectionSummary, DeviceInfo, DigestEntry,
    DigestPage, SyncMetadataResponse, DEVICE_ID_HEADER, MAX_COLLECTIONS_LISTED, MAX_DEVICE_ID_LEN,
};
pub use crate::pull::PullPage;
pub use crate::push::{OpKind, OpResult, OpStatus, PushOp, PushRequest, PushResponse};
pub use crate::ws::{
    ClientMessage, EventKind, EventMessage, GetRequestBody, PullRequestBody, QueryRequestBody,
    RequestId, ServerMessage, Subscription, SubscriptionAction, WsMethod, WsRequest, WsResponse,
};

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
///
/// Written in lower case, the form HTTP/2 requires and the `http` crate stores (so it can be
/// used with `HeaderName::from_static`). Header names are case-insensitive: the IETF draft's
/// spelling `Idempotency-Key` is the same header, and servers must accept either.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// A JSON record object: data plus the server-managed keys.
pub type Record = Map<String, Value>;

/// Body of `GET /health` (and of the WebSocket `health` request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"` when the server answers.
    pub status: String,
}

impl Health {
    /// The answer of a server that is up.
    #[must_use]
    pub fn ok() -> Self {
        Self {
            status: "ok".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_name_is_lower_case_and_matches_the_draft_spelling() {
        assert_eq!(
            IDEMPOTENCY_KEY_HEADER,
            IDEMPOTENCY_KEY_HEADER.to_ascii_lowercase()
        );
        assert!(IDEMPOTENCY_KEY_HEADER.eq_ignore_ascii_case("Idempotency-Key"));
    }

    #[test]
    fn health_shape() {
        let text = serde_json::to_string(&Health::ok()).expect("serialises");
        assert_eq!(text, r#"{"status":"ok"}"#);
        let back: Health = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, Health::ok());
    }

    #[test]
    fn reserved_keys() {
        assert_eq!(RESERVED_KEYS, ["id", "version", "updated_at", "deleted"]);
    }
}
