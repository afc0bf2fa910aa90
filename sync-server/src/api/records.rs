//! REST endpoints of one collection: pages (`GET /{collection}`), one record, and the
//! create / PATCH / PUT / DELETE writes with `If-Match` and `Idempotency-Key`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use super::validate::{
    body_bytes, check_collection, check_id, idempotency_key, if_match, parse_body, prepare,
    Rejection,
};
use super::{apply, json_text_response, ApiError, AppState, AuthUser};
use crate::protocol::{ErrorBody, ErrorCode, OpKind, OpStatus};
use crate::store::{Filter, Page, PageQuery, RawResult, WriteOp};

pub(super) async fn pull(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(collection): ApiPath<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) =
        query.map_err(|err| ApiError::bad_request(ErrorCode::InvalidQuery, err.body_text()))?;
    let (body, has_more) = list_page(&state, &user, &collection, params).await?;
    if !has_more {
        // The device has pulled everything: a finished sync.
        if let Some(device) = super::device_of(&headers)? {
            super::note_device(&state, &user, &device, true).await;
        }
    }
    Ok(json_text_response(StatusCode::OK, body))
}

/// A page of `user`'s records in `collection`, as the JSON text of a [`PullPage`]: the list
/// endpoint (`GET /{collection}?...`) and the WebSocket `pull` and `query` requests.
///
/// `params` are the query-string pairs: `since`/`cursor`, `limit` (or json-server's `_limit`),
/// `offset` (or `_offset`, rows skipped after the cursor) and equality filters. A later pair
/// overrides an earlier one with the same name.
///
/// [`PullPage`]: crate::protocol::PullPage
pub(crate) async fn list(
    state: &AppState,
    user: &str,
    collection: &str,
    params: Vec<(String, String)>,
) -> Result<Vec<u8>, ApiError> {
    Ok(list_page(state, user, collection, params).await?.0)
}

/// [`list`], and whether more pages follow.
async fn list_page(
    state: &AppState,
    user: &str,
    collection: &str,
    params: Vec<(String, String)>,
) -> Result<(Vec<u8>, bool), ApiError> {
    let limits = &state.limits;
    check_collection(collection, limits)?;
    let mut since = 0i64;
    let mut limit = limits.default_page_limit;
    let mut offset = 0usize;
    let mut filters = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "since" | "cursor" => {
                since = if value.is_empty() {
                    0
                } else {
                    value.parse().map_err(|_| {
                        ApiError::bad_request(
                            ErrorCode::InvalidCursor,
                            format!("cursor {value:?} is not a cursor this server issued"),
                        )
                    })?
                };
            }
            "limit" | "_limit" => {
                limit = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ApiError::bad_request(
                        ErrorCode::InvalidLimit,
                        format!("limit {value:?} is not a positive integer"),
                    )
                })?;
            }
            "offset" | "_offset" => {
                offset = value.parse().map_err(|_| {
                    ApiError::bad_request(
                        ErrorCode::InvalidOffset,
                        format!("offset {value:?} is not a non-negative integer"),
                    )
                })?;
            }
            _ => {
                if name.contains(['"', '\\', '\0']) || name.is_empty() {
                    return Err(ApiError::bad_request(
                        ErrorCode::InvalidFilter,
                        format!("filter field {name:?} is not a plain field name"),
                    ));
                }
                if value.contains('\0') {
                    return Err(ApiError::bad_request(
                        ErrorCode::InvalidFilter,
                        format!("the value of filter {name:?} contains a NUL character"),
                    ));
                }
                filters.push(Filter { field: name, value });
            }
        }
    }
    if filters.len() > limits.max_filters {
        return Err(ApiError::bad_request(
            ErrorCode::TooManyFilters,
            format!(
                "{} filters given; the limit is {}",
                filters.len(),
                limits.max_filters
            ),
        )
        .with_limit(limits.max_filters));
    }
    let page = PageQuery {
        since,
        limit: limit.min(limits.max_page_limit),
        offset: i64::try_from(offset).unwrap_or(i64::MAX),
        filters,
        max_bytes: limits.max_page_bytes,
    };
    let Page { rows, has_more } = state.store.pull(user, collection, page).await?;
    let next_cursor = rows.last().map_or(since, |row| row.version);
    let mut body = Vec::with_capacity(rows.iter().map(|r| r.data.len() + 96).sum::<usize>() + 64);
    body.extend_from_slice(b"{\"items\":[");
    for (n, row) in rows.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        row.write_json(&mut body)?;
    }
    body.extend_from_slice(
        format!("],\"next_cursor\":\"{next_cursor}\",\"has_more\":{has_more}}}").as_bytes(),
    );
    Ok((body, has_more))
}

pub(super) async fn get_one(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((collection, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let body = read(&state, &user, &collection, &id).await?;
    Ok(json_text_response(StatusCode::OK, body))
}

/// One live record of `user` as JSON text (`GET /{collection}/{id}` and the WebSocket `get`
/// request); a missing or deleted record is a 404.
pub(crate) async fn read(
    state: &AppState,
    user: &str,
    collection: &str,
    id: &str,
) -> Result<Vec<u8>, ApiError> {
    check_collection(collection, &state.limits)?;
    check_id(id, &state.limits)?;
    match state.store.get(user, collection, id).await? {
        Some(row) if !row.deleted => Ok(row.to_json_text()?),
        Some(row) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!(
                "record {id:?} in {collection:?} was deleted at version {}",
                row.version
            ),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no record {id:?} in {collection:?}"),
        )),
    }
}

/// Runs one REST write and maps its result to a response.
async fn rest_write(state: &AppState, user: &str, op: WriteOp) -> Result<Response, ApiError> {
    let created = op.kind == OpKind::Create;
    let mut results = apply(state, user, vec![op], None).await?;
    let result = results.pop().ok_or_else(|| {
        ApiError::internal(&crate::Error::Task("write returned no result".into()))
    })?;
    Ok(result_response(result, created))
}

fn result_response(result: RawResult, created: bool) -> Response {
    match result.status {
        OpStatus::Applied => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let body = result
                .record
                .map_or_else(|| b"{}".to_vec(), String::into_bytes);
            json_text_response(status, body)
        }
        OpStatus::Conflict => (
            StatusCode::CONFLICT,
            Json(ErrorBody {
                record: result
                    .record
                    .and_then(|record| serde_json::from_str(&record).ok()),
                ..ErrorBody::new(
                    ErrorCode::Conflict,
                    result.error.unwrap_or_else(|| "version conflict".into()),
                )
            }),
        )
            .into_response(),
        OpStatus::Rejected => {
            let code = result.code.map_or(ErrorCode::Rejected, ErrorCode::from);
            let status = match code {
                ErrorCode::NotFound => StatusCode::NOT_FOUND,
                ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::QuotaExceeded => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            ApiError::new(
                status,
                code,
                result.error.unwrap_or_else(|| "rejected".into()),
            )
            .into_response()
        }
    }
}

pub(super) async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(collection): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers, &state.limits)?;
    let bytes = body_bytes(body, &state.limits)?;
    let data = parse_body(&bytes)?;
    let op = prepare(
        key,
        collection,
        OpKind::Create,
        None,
        None,
        Some(data),
        &state.limits,
    )
    .map_err(Rejection::into_api_error)?;
    rest_write(&state, &user, op).await
}

async fn update(
    state: AppState,
    user: String,
    collection: String,
    id: String,
    headers: HeaderMap,
    body: Option<Result<Bytes, BytesRejection>>,
    kind: OpKind,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers, &state.limits)?;
    let base = if_match(&headers)?;
    let bytes = match body {
        Some(body) => Some(body_bytes(body, &state.limits)?),
        None => None,
    };
    let data = match &bytes {
        Some(bytes) => Some(parse_body(bytes)?),
        None => None,
    };
    let op = prepare(key, collection, kind, Some(id), base, data, &state.limits)
        .map_err(Rejection::into_api_error)?;
    rest_write(&state, &user, op).await
}

pub(super) async fn patch(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((collection, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    update(
        state,
        user,
        collection,
        id,
        headers,
        Some(body),
        OpKind::Update,
    )
    .await
}

pub(super) async fn put(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((collection, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    update(
        state,
        user,
        collection,
        id,
        headers,
        Some(body),
        OpKind::Replace,
    )
    .await
}

pub(super) async fn delete(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((collection, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers, &state.limits)?;
    let base = if_match(&headers)?;
    let op = prepare(
        key,
        collection,
        OpKind::Delete,
        Some(id),
        base,
        None,
        &state.limits,
    )
    .map_err(Rejection::into_api_error)?;
    let mut results = apply(&state, &user, vec![op], None).await?;
    let result = results.pop().ok_or_else(|| {
        ApiError::internal(&crate::Error::Task("write returned no result".into()))
    })?;
    if result.status == OpStatus::Applied && result.record.is_none() {
        // Absent or already deleted: in REST terms there is nothing at this URL. Clients of
        // the default protocol take a 404 on DELETE as the delete having reached its goal.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such record (it is absent or already deleted)".to_owned(),
        ));
    }
    Ok(result_response(result, false))
}

/// [`Path`] whose rejection (a segment that is not valid percent-encoded UTF-8) answers the
/// server's JSON error rather than axum's plain text.
pub(super) struct ApiPath<T>(pub(super) T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                rejection.status(),
                ErrorCode::InvalidPath,
                rejection.body_text(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_results_keep_their_code_and_status() {
        for (code, status) in [
            ("not_found", StatusCode::NOT_FOUND),
            ("idempotency_key_reused", StatusCode::UNPROCESSABLE_ENTITY),
            ("quota_exceeded", StatusCode::PAYLOAD_TOO_LARGE),
            ("invalid_data", StatusCode::BAD_REQUEST),
        ] {
            let response = result_response(RawResult::rejected(code, "no".into()), false);
            assert_eq!(response.status(), status, "{code}");
        }
    }
}
