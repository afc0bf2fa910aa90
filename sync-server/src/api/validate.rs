//! What may be written: names, ids, keys, headers and bodies are checked here, before a write
//! reaches the store, and turned into a [`WriteOp`] or the rejection of that one op.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::header::IF_MATCH;
use axum::http::{HeaderMap, StatusCode};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::ApiError;
use crate::protocol::{ErrorCode, OpKind, IDEMPOTENCY_KEY_HEADER, ID_KEY, RESERVED_KEYS};
use crate::server::Limits;
use crate::store::{RawResult, WriteOp};

/// Names of the server's own routes (`/health`, `/ws`, `/sync/push`), which cannot be
/// collections.
const RESERVED_COLLECTIONS: [&str; 3] = ["health", "ws", "sync"];

/// Refuses JSON text that readers could not read back (sync-server README, "Limits"): nesting
/// deeper than `max_depth`, a number outside f64 (`1e400`, a 400-digit integer), and a
/// `\u0000` escape (Postgres text cannot hold NUL). `text` is valid JSON (already parsed once);
/// one pass over its bytes, without building a tree.
pub(super) fn check_json(text: &str, max_depth: usize) -> Result<(), String> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0usize;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'"' => {
                i += 1;
                while let Some(&inner) = bytes.get(i) {
                    match inner {
                        b'\\' => {
                            if bytes.get(i + 1..i + 6) == Some(b"u0000".as_slice()) {
                                return Err("a string contains \\u0000 (a NUL character), which \
                                     cannot be stored"
                                    .into());
                            }
                            i += 2;
                        }
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(format!(
                        "data is nested deeper than {max_depth} levels (max_json_depth)"
                    ));
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while bytes
                    .get(i)
                    .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    i += 1;
                }
                let token = text.get(start..i).unwrap_or_default();
                if !token.parse::<f64>().is_ok_and(f64::is_finite) {
                    let shown: String = token.chars().take(24).collect();
                    return Err(format!(
                        "number {shown} is outside the range of a 64-bit float"
                    ));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

pub(super) fn check_collection(collection: &str, limits: &Limits) -> Result<(), ApiError> {
    if collection.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidCollection,
            "collection name is empty",
        ));
    }
    if collection.contains('\0') {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidCollection,
            "collection name contains a NUL character",
        ));
    }
    if RESERVED_COLLECTIONS.contains(&collection) {
        return Err(ApiError::bad_request(
            ErrorCode::ReservedCollection,
            format!(
                "{collection:?} is one of the server's own routes ({}) and cannot be a collection",
                RESERVED_COLLECTIONS.join(", ")
            ),
        ));
    }
    if collection.len() > limits.max_collection_len {
        return Err(ApiError::bad_request(
            ErrorCode::CollectionTooLong,
            format!(
                "collection name is {} bytes; the limit is {}",
                collection.len(),
                limits.max_collection_len
            ),
        )
        .with_limit(limits.max_collection_len));
    }
    Ok(())
}

pub(super) fn check_id(id: &str, limits: &Limits) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidId,
            "record id is empty",
        ));
    }
    // Postgres text cannot hold NUL; refusing it here keeps both backends alike (and a batch
    // from failing as a whole on Postgres).
    if id.contains('\0') {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidId,
            "record id contains a NUL character",
        ));
    }
    if id.len() > limits.max_id_len {
        return Err(ApiError::bad_request(
            ErrorCode::IdTooLong,
            format!(
                "record id is {} bytes; the limit is {}",
                id.len(),
                limits.max_id_len
            ),
        )
        .with_limit(limits.max_id_len));
    }
    Ok(())
}

/// Reads a request body, answering 413 past the size limit and 400 otherwise.
pub(super) fn body_bytes(
    body: Result<Bytes, BytesRejection>,
    limits: &Limits,
) -> Result<Bytes, ApiError> {
    body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(limits)
        } else {
            ApiError::bad_request(ErrorCode::InvalidBody, rej.body_text())
        }
    })
}

/// The answer to a body past `max_body_bytes`.
pub(super) fn too_large(limits: &Limits) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!(
            "request body is larger than {} bytes; send smaller batches",
            limits.max_body_bytes
        ),
    )
    .with_limit(limits.max_body_bytes)
}

pub(super) fn malformed_json(err: &serde_json::Error) -> ApiError {
    ApiError::bad_request(ErrorCode::MalformedJson, format!("malformed JSON: {err}"))
}

/// Checks that a request body is JSON and returns its text.
pub(super) fn parse_body(bytes: &[u8]) -> Result<&RawValue, ApiError> {
    serde_json::from_slice(bytes).map_err(|err| malformed_json(&err))
}

pub(super) fn idempotency_key(
    headers: &HeaderMap,
    limits: &Limits,
) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| {
        ApiError::bad_request(
            ErrorCode::InvalidIdempotencyKey,
            "Idempotency-Key must be visible ASCII",
        )
    })?;
    check_key(key, limits).map_err(Rejection::into_api_error)?;
    Ok(Some(key.to_owned()))
}

pub(super) fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse().map(Some).map_err(|_| {
        ApiError::bad_request(
            ErrorCode::InvalidIfMatch,
            format!("If-Match {text:?} is not a record version (an integer)"),
        )
    })
}

/// A write refused before it reached the database.
#[derive(Debug)]
pub(super) struct Rejection {
    code: ErrorCode,
    message: String,
    limit: Option<usize>,
}

impl Rejection {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            limit: None,
        }
    }

    pub(super) fn into_api_error(self) -> ApiError {
        let mut err = ApiError::bad_request(self.code, self.message);
        err.body.limit = self.limit.map(|l| l as u64);
        err
    }

    pub(super) fn into_result(self) -> RawResult {
        RawResult::rejected(self.code.as_str(), self.message)
    }
}

fn check_key(key: &str, limits: &Limits) -> Result<(), Rejection> {
    if key.is_empty() {
        return Err(Rejection::new(
            ErrorCode::InvalidIdempotencyKey,
            "idempotency key is empty",
        ));
    }
    if key.contains('\0') {
        return Err(Rejection::new(
            ErrorCode::InvalidIdempotencyKey,
            "idempotency key contains a NUL character",
        ));
    }
    if key.len() > limits.max_idempotency_key_len {
        return Err(Rejection {
            code: ErrorCode::IdempotencyKeyTooLong,
            message: format!(
                "idempotency key is {} bytes; the limit is {}",
                key.len(),
                limits.max_idempotency_key_len
            ),
            limit: Some(limits.max_idempotency_key_len),
        });
    }
    Ok(())
}

/// Validates one write and turns it into a [`WriteOp`].
pub(super) fn prepare(
    key: Option<String>,
    collection: String,
    kind: OpKind,
    id: Option<String>,
    base_version: Option<i64>,
    data: Option<&RawValue>,
    limits: &Limits,
) -> Result<WriteOp, Rejection> {
    if let Some(key) = &key {
        check_key(key, limits)?;
    }
    check_collection(&collection, limits).map_err(api_to_rejection)?;
    let data = match (kind, data) {
        (OpKind::Delete, _) => None,
        (_, Some(raw)) if raw.get().starts_with('{') => {
            check_json(raw.get(), limits.max_json_depth)
                .map_err(|message| Rejection::new(ErrorCode::InvalidData, message))?;
            Some(raw)
        }
        (_, Some(other)) => {
            return Err(Rejection::new(
                ErrorCode::InvalidData,
                format!(
                    "record data must be a JSON object, not {}",
                    raw_type_name(other)
                ),
            ))
        }
        (_, None) => {
            return Err(Rejection::new(
                ErrorCode::InvalidData,
                format!("a {} needs `data` (a JSON object)", kind.as_str()),
            ))
        }
    };
    // The members are kept as JSON text: the data is written as it came (in key order, the last
    // of duplicate keys winning) without building a tree of every value. A `\u` escape may
    // hide an unpaired surrogate that only a full parse rejects, so such data takes that parse
    // (and is written back normalised).
    let normalised: Vec<(String, Box<RawValue>)>;
    let mut members: BTreeMap<String, &RawValue> = match data {
        None => BTreeMap::new(),
        Some(raw) if !raw.get().contains("\\u") => {
            serde_json::from_str(raw.get()).map_err(|err| {
                Rejection::new(ErrorCode::InvalidData, format!("invalid data: {err}"))
            })?
        }
        Some(raw) => {
            let map: Map<String, Value> = serde_json::from_str(raw.get()).map_err(|err| {
                Rejection::new(ErrorCode::InvalidData, format!("invalid data: {err}"))
            })?;
            normalised = map
                .into_iter()
                .map(|(k, v)| serde_json::value::to_raw_value(&v).map(|v| (k, v)))
                .collect::<Result<_, _>>()
                .map_err(|err| Rejection::new(ErrorCode::InvalidData, err.to_string()))?;
            normalised.iter().map(|(k, v)| (k.clone(), &**v)).collect()
        }
    };
    let data_id = match members.get(ID_KEY) {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) if raw.get().starts_with('"') => {
            Some(serde_json::from_str::<String>(raw.get()).map_err(|err| {
                Rejection::new(ErrorCode::InvalidId, format!("invalid id: {err}"))
            })?)
        }
        Some(other) => {
            return Err(Rejection::new(
                ErrorCode::InvalidId,
                format!("record id must be a string, not {}", raw_type_name(other)),
            ))
        }
    };
    let (id, id_generated) = match (id, data_id) {
        (Some(id), Some(data_id)) if id != data_id => {
            return Err(Rejection::new(
                ErrorCode::IdMismatch,
                format!("the record id is {id:?} but data.id is {data_id:?}"),
            ))
        }
        (Some(id), _) | (None, Some(id)) => (id, false),
        (None, None) if kind == OpKind::Create => (uuid::Uuid::new_v4().to_string(), true),
        (None, None) => {
            return Err(Rejection::new(
                ErrorCode::InvalidId,
                format!("a {} needs the record id", kind.as_str()),
            ))
        }
    };
    check_id(&id, limits).map_err(api_to_rejection)?;
    for reserved in RESERVED_KEYS {
        members.remove(reserved);
    }
    // Written here, on the request's task, rather than under the write lock.
    let (data, data_text) = match kind {
        OpKind::Create | OpKind::Replace => (Map::new(), Some(object_text(&members)?)),
        OpKind::Update => (
            members
                .into_iter()
                .map(|(k, v)| serde_json::from_str(v.get()).map(|v| (k, v)))
                .collect::<Result<_, _>>()
                .map_err(|err| {
                    Rejection::new(ErrorCode::InvalidData, format!("invalid data: {err}"))
                })?,
            None,
        ),
        OpKind::Delete => (Map::new(), None),
    };
    Ok(WriteOp {
        key,
        collection,
        kind,
        id,
        id_generated,
        base_version,
        data,
        data_text,
    })
}

fn api_to_rejection(err: ApiError) -> Rejection {
    let code = match err.body.code {
        code @ (ErrorCode::InvalidCollection
        | ErrorCode::CollectionTooLong
        | ErrorCode::ReservedCollection
        | ErrorCode::InvalidId
        | ErrorCode::IdTooLong) => code,
        _ => ErrorCode::InvalidOp,
    };
    Rejection {
        code,
        message: err.body.error,
        limit: err.body.limit.map(|l| l as usize),
    }
}

/// The kind of a (valid) JSON value, for messages.
pub(super) fn raw_type_name(value: &RawValue) -> &'static str {
    match value.get().as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

/// The JSON text of an object with these members.
fn object_text(members: &BTreeMap<String, &RawValue>) -> Result<String, Rejection> {
    let invalid =
        |err: &dyn std::fmt::Display| Rejection::new(ErrorCode::InvalidData, err.to_string());
    let size = members.iter().map(|(k, v)| k.len() + v.get().len() + 4);
    let mut out = Vec::with_capacity(size.sum::<usize>() + 2);
    out.push(b'{');
    for (n, (key, value)) in members.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).map_err(|err| invalid(&err))?;
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    String::from_utf8(out).map_err(|err| invalid(&err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    #[test]
    fn the_idempotency_key_header_is_read_in_any_case() {
        let limits = Limits::default();
        for spelling in ["idempotency-key", "Idempotency-Key", "IDEMPOTENCY-KEY"] {
            let mut headers = HeaderMap::new();
            let name = HeaderName::from_bytes(spelling.as_bytes()).expect("a header name");
            headers.insert(name, HeaderValue::from_static("k1"));
            let key = idempotency_key(&headers, &limits).expect("a valid key");
            assert_eq!(key.as_deref(), Some("k1"), "{spelling}");
        }
        assert_eq!(
            idempotency_key(&HeaderMap::new(), &limits).expect("no key"),
            None
        );
    }

    #[test]
    fn op_rejections_keep_only_the_codes_of_names_and_ids() {
        assert_eq!(
            api_to_rejection(ApiError::bad_request(ErrorCode::InvalidQuery, "q")).code,
            ErrorCode::InvalidOp
        );
        assert_eq!(
            api_to_rejection(ApiError::bad_request(ErrorCode::IdTooLong, "q")).code,
            ErrorCode::IdTooLong
        );
    }

    #[test]
    fn json_readers_cannot_read_back_is_found_in_one_pass() {
        let nested = |n: usize| format!("{{\"d\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        let cases: Vec<(String, bool)> = vec![
            (r#"{"a":1,"b":[1.5,-2e10,{"c":"x"}]}"#.into(), true),
            (nested(63), true),
            (nested(64), false),
            (r#"{"n":1e400}"#.into(), false),
            (r#"{"n":-1e309}"#.into(), false),
            (format!(r#"{{"n":{}}}"#, "9".repeat(400)), false),
            (r#"{"n":1.7976931348623157e308}"#.into(), true),
            (r#"{"s":"a\u0000b"}"#.into(), false),
            (r#"{"a\u0000":1}"#.into(), false),
            // An escaped backslash followed by the text u0000 is no NUL.
            (r#"{"s":"a\\u0000"}"#.into(), true),
            // Brackets and digits inside strings do not count.
            (format!(r#"{{"s":"{}1e999"}}"#, "[".repeat(100)), true),
        ];
        for (text, ok) in cases {
            assert_eq!(
                check_json(&text, 64).is_ok(),
                ok,
                "{}",
                &text[..text.len().min(80)]
            );
        }
    }
}
