//! Batch push (`POST /sync/push` and the WebSocket `push` request): each op is read and
//! validated on its own, so a bad op is rejected alone; the valid ones are applied in one
//! transaction.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::validate::{body_bytes, malformed_json, prepare, raw_type_name, Rejection};
use super::{apply, json_text_response, ApiError, AppState, AuthUser};
use crate::protocol::{ErrorCode, OpKind, PushRequest};
use crate::server::Limits;
use crate::store::{RawResult, WriteOp};

/// [`PushOp`](crate::protocol::PushOp), read leniently straight from the request's bytes with
/// `data` kept as JSON text: a missing or unknown `op` and a `null` `data` get their own
/// rejections instead of a serde error.
#[derive(Deserialize)]
struct RawPushOp<'a> {
    #[serde(default)]
    idempotency_key: Option<String>,
    collection: String,
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    base_version: Option<i64>,
    /// `Some` also for `null`, which is invalid data rather than missing data.
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Turns one raw op of a push into a [`WriteOp`] or the result that rejects it.
fn prepare_push_op(raw: &RawValue, limits: &Limits) -> Result<WriteOp, Rejection> {
    if !raw.get().starts_with('{') {
        return Err(Rejection::new(
            ErrorCode::InvalidOp,
            format!("an op must be a JSON object, not {}", raw_type_name(raw)),
        ));
    }
    let op: RawPushOp<'_> = serde_json::from_str(raw.get())
        .map_err(|err| Rejection::new(ErrorCode::InvalidOp, format!("invalid op: {err}")))?;
    let kind = match op.op.as_deref() {
        None => return Err(Rejection::new(ErrorCode::InvalidOp, "the op has no `op` field")),
        Some(name) => match OpKind::from_name(name) {
            Some(kind) => kind,
            None => {
                return Err(Rejection::new(
                    ErrorCode::UnknownOp,
                    format!(
                        "unknown op {name:?}: expected one of \"create\", \"update\", \"replace\", \"delete\""
                    ),
                ))
            }
        },
    };
    prepare(
        op.idempotency_key,
        op.collection,
        kind,
        op.id,
        op.base_version,
        op.data,
        limits,
    )
}

pub(super) async fn push(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(body, &state.limits)?;
    let body = push_batch(&state, &user, &bytes, None).await?;
    Ok(json_text_response(StatusCode::OK, body))
}

/// Runs a batch push (`{"ops": [...]}`, as JSON bytes) for `user` and returns the JSON text of
/// its `{"results": [...]}`: `POST /sync/push` and the WebSocket `push` request. `origin` is
/// the WebSocket connection that sent the request, which gets no events of its own writes.
pub(crate) async fn push_batch(
    state: &AppState,
    user: &str,
    body: &[u8],
    origin: Option<u64>,
) -> Result<Vec<u8>, ApiError> {
    let limits = &state.limits;
    // Each op is parsed on its own, so that a malformed op is rejected alone instead of failing
    // the whole request.
    let request: PushRequest<&RawValue> = serde_json::from_slice(body).map_err(|err| {
        if err.is_data() {
            ApiError::bad_request(
                ErrorCode::InvalidRequest,
                format!("expected {{\"ops\": [...]}}: {err}"),
            )
        } else {
            malformed_json(&err)
        }
    })?;
    if request.ops.len() > limits.max_batch_ops {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BatchTooLarge,
            format!(
                "{} ops in one push; the limit is {}; split the batch",
                request.ops.len(),
                limits.max_batch_ops
            ),
        )
        .with_limit(limits.max_batch_ops));
    }
    let mut slots: Vec<Option<RawResult>> = Vec::with_capacity(request.ops.len());
    let mut valid = Vec::with_capacity(request.ops.len());
    for raw in request.ops {
        match prepare_push_op(raw, limits) {
            Ok(op) => {
                valid.push(op);
                slots.push(None);
            }
            Err(rejection) => slots.push(Some(rejection.into_result())),
        }
    }
    let applied = apply(state, user, valid, origin).await?;
    let size: usize = applied
        .iter()
        .map(|r| r.record.as_ref().map_or(0, String::len) + 48)
        .sum();
    let mut applied = applied.into_iter();
    let mut out = Vec::with_capacity(size + 16 + 64 * slots.len());
    out.extend_from_slice(b"{\"results\":[");
    for (n, slot) in slots.into_iter().enumerate() {
        let Some(result) = slot.or_else(|| applied.next()) else {
            return Err(ApiError::internal(&crate::Error::Task(
                "push returned fewer results than ops".into(),
            )));
        };
        if n > 0 {
            out.push(b',');
        }
        result.write_json(&mut out)?;
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}
