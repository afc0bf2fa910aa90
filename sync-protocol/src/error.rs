//! Error responses: [`ErrorBody`] and its machine-readable [`ErrorCode`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Record;

/// Body of every REST error response (and of an error answer to a WebSocket request).
///
/// `{"error": "...", "code": "...", "limit"?: n, "record"?: {...}}`; a version conflict (409)
/// carries the current record under `record`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to do, for people.
    pub error: String,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// The limit that was exceeded, for limit errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// The current record, for a version conflict (409).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record>,
}

impl ErrorBody {
    /// A body with a code and a message, without limit or record.
    #[must_use]
    pub fn new(code: ErrorCode, error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            code,
            limit: None,
            record: None,
        }
    }
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// Machine-readable code of an error (the `code` of an [`ErrorBody`] or of a rejected
        /// [`OpResult`](crate::OpResult)), in `snake_case` on the wire.
        ///
        /// A code this version does not know is read as [`ErrorCode::Other`] with its name, so
        /// a newer server's code does not break an older client. Build codes from names with
        /// [`ErrorCode::from`], which never yields `Other` for a known name.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)+
            /// A code this version does not know.
            Other(String),
        }

        impl ErrorCode {
            /// Every known code.
            pub const KNOWN: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The wire name of this code.
            #[must_use]
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $name,)+
                    Self::Other(name) => name,
                }
            }

            /// The known code with this wire name, if there is one.
            #[must_use]
            pub fn known(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// No valid bearer token (401).
    Unauthorized => "unauthorized",
    /// The server failed; see its log (500).
    Internal => "internal",
    /// No such endpoint or record (404).
    NotFound => "not_found",
    /// Version conflict: the write was based on an older version (409).
    Conflict => "conflict",
    /// A write was refused without a more precise code.
    Rejected => "rejected",
    /// The body is not JSON.
    MalformedJson => "malformed_json",
    /// The body could not be read.
    InvalidBody => "invalid_body",
    /// The query string could not be read.
    InvalidQuery => "invalid_query",
    /// The request is JSON but not of the expected shape.
    InvalidRequest => "invalid_request",
    /// The collection name is empty or contains a NUL character.
    InvalidCollection => "invalid_collection",
    /// The collection name is longer than the server's limit.
    CollectionTooLong => "collection_too_long",
    /// The record id is missing, empty, not a string or contains a NUL character.
    InvalidId => "invalid_id",
    /// The record id is longer than the server's limit.
    IdTooLong => "id_too_long",
    /// The id in the URL or op differs from `data.id`.
    IdMismatch => "id_mismatch",
    /// The record data is missing or not a JSON object.
    InvalidData => "invalid_data",
    /// A pushed op is not of the [`PushOp`](crate::PushOp) shape.
    InvalidOp => "invalid_op",
    /// A pushed op's `op` is not a known [`OpKind`](crate::OpKind).
    UnknownOp => "unknown_op",
    /// A WebSocket request's `method` is not a known [`WsMethod`](crate::WsMethod).
    UnknownMethod => "unknown_method",
    /// The `since` cursor is not one the server issued.
    InvalidCursor => "invalid_cursor",
    /// The `limit` is not a positive integer.
    InvalidLimit => "invalid_limit",
    /// The `offset` is not a non-negative integer.
    InvalidOffset => "invalid_offset",
    /// A filter's field name or value is not acceptable.
    InvalidFilter => "invalid_filter",
    /// More filters than the server's limit.
    TooManyFilters => "too_many_filters",
    /// The idempotency key is empty, not visible ASCII or contains a NUL character.
    InvalidIdempotencyKey => "invalid_idempotency_key",
    /// The idempotency key is longer than the server's limit.
    IdempotencyKeyTooLong => "idempotency_key_too_long",
    /// The idempotency key was used before for a different operation (422).
    IdempotencyKeyReused => "idempotency_key_reused",
    /// `If-Match` is not a record version.
    InvalidIfMatch => "invalid_if_match",
    /// The body is larger than the server's limit (413).
    PayloadTooLarge => "payload_too_large",
    /// A push has more ops than the server's limit (413).
    BatchTooLarge => "batch_too_large",
    /// Too many requests in progress; retry later (429).
    TooManyRequests => "too_many_requests",
    /// The endpoint exists but not with this HTTP method (405).
    MethodNotAllowed => "method_not_allowed",
    /// The URL path cannot be read (bad percent-encoding, not UTF-8).
    InvalidPath => "invalid_path",
    /// The collection name is one of the server's own routes (`health`, `ws`, `sync`).
    ReservedCollection => "reserved_collection",
    /// The `X-Sync-Device` header is not a device id (letters, digits, `-`, `_`, `.`; at most
    /// 64).
    InvalidDeviceId => "invalid_device_id",
    /// The request (its body) did not arrive in time (408); retry.
    RequestTimeout => "request_timeout",
    /// The write would take the user's stored records past the server's storage quota (413
    /// for a single write; `rejected` in a push). Deleting or shrinking records is always
    /// allowed.
    QuotaExceeded => "quota_exceeded",
}

impl From<&str> for ErrorCode {
    fn from(name: &str) -> Self {
        Self::known(name).unwrap_or_else(|| Self::Other(name.to_owned()))
    }
}

impl From<String> for ErrorCode {
    fn from(name: String) -> Self {
        Self::known(&name).unwrap_or(Self::Other(name))
    }
}

impl std::str::FromStr for ErrorCode {
    type Err = std::convert::Infallible;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(Self::from(name))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Borrowed when the input allows, owned otherwise (escaped strings, `Value`s).
        let name: std::borrow::Cow<'de, str> = Deserialize::deserialize(deserializer)?;
        Ok(match name {
            std::borrow::Cow::Borrowed(name) => Self::from(name),
            std::borrow::Cow::Owned(name) => Self::from(name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_codes_round_trip_in_snake_case() {
        for code in ErrorCode::KNOWN {
            let name = code.as_str();
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert_eq!(serde_json::to_value(code).expect("serialises"), json!(name));
            let back: ErrorCode = serde_json::from_value(json!(name)).expect("parses");
            assert_eq!(&back, code);
            assert_eq!(ErrorCode::from(name), *code);
            assert_eq!(code.to_string(), name);
        }
        let mut names: Vec<&str> = ErrorCode::KNOWN.iter().map(ErrorCode::as_str).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::KNOWN.len(), "duplicate names");
    }

    #[test]
    fn an_unknown_code_is_kept_not_refused() {
        let code: ErrorCode = serde_json::from_str("\"plan_limit_reached\"").expect("parses");
        assert_eq!(code, ErrorCode::Other("plan_limit_reached".into()));
        assert_eq!(code.as_str(), "plan_limit_reached");
        assert_eq!(
            serde_json::to_string(&code).expect("serialises"),
            "\"plan_limit_reached\""
        );
        // From a `Value` (owned strings) and from escaped text as well.
        let code: ErrorCode = serde_json::from_value(json!("not_found")).expect("parses");
        assert_eq!(code, ErrorCode::NotFound);
        let code: ErrorCode = serde_json::from_str(r#""not\u005ffound""#).expect("parses");
        assert_eq!(code, ErrorCode::NotFound);
        assert!(serde_json::from_str::<ErrorCode>("7").is_err());
    }

    #[test]
    fn error_body_shapes() {
        let body = ErrorBody::new(ErrorCode::Unauthorized, "invalid or expired token");
        assert_eq!(
            serde_json::to_string(&body).expect("serialises"),
            r#"{"error":"invalid or expired token","code":"unauthorized"}"#
        );
        let mut limited = ErrorBody::new(ErrorCode::IdTooLong, "record id is 300 bytes");
        limited.limit = Some(256);
        assert_eq!(
            serde_json::to_string(&limited).expect("serialises"),
            r#"{"error":"record id is 300 bytes","code":"id_too_long","limit":256}"#
        );
        let conflict: ErrorBody = serde_json::from_str(
            r#"{"error":"version conflict","code":"conflict","record":{"id":"t1","version":4}}"#,
        )
        .expect("parses");
        assert_eq!(conflict.code, ErrorCode::Conflict);
        assert_eq!(
            conflict.record.and_then(|r| r.get("version").cloned()),
            Some(json!(4))
        );
        let newer: ErrorBody = serde_json::from_str(
            r#"{"error":"slow down","code":"plan_limit_reached","retry_in":3}"#,
        )
        .expect("parses");
        assert_eq!(newer.code, ErrorCode::Other("plan_limit_reached".into()));
    }
}
