//! The REST API: health, pull, get, create, PATCH/PUT/DELETE with `If-Match`, and batch push.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, IF_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::auth::{bearer_token, Auth};
use crate::events::Hub;
use crate::protocol::{
    ErrorBody, ErrorCode, Health, OpKind, OpStatus, PushRequest, IDEMPOTENCY_KEY_HEADER, ID_KEY,
    RESERVED_KEYS,
};
use crate::server::Limits;
use crate::store::{Filter, RawResult, Store, WriteOp};

/// Shared state of every request handler and WebSocket connection.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) auth: Arc<Auth>,
    pub(crate) limits: Limits,
    pub(crate) hub: Hub,
    pub(crate) cancel: CancellationToken,
}

/// A JSON error response.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody::new(code, message),
        }
    }

    pub(crate) fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn with_limit(mut self, limit: usize) -> Self {
        self.body.limit = Some(limit as u64);
        self
    }

    pub(crate) fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub(crate) fn internal(err: &crate::Error) -> Self {
        tracing::error!(error = %err, source = ?std::error::Error::source(err), "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal server error; see the server log",
        )
    }
}

impl ApiError {
    /// The HTTP status and the JSON body, for transports other than HTTP (WebSocket requests).
    pub(crate) fn into_parts(self) -> (StatusCode, ErrorBody) {
        (self.status, self.body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<crate::Error> for ApiError {
    fn from(err: crate::Error) -> Self {
        Self::internal(&err)
    }
}

/// The user of the request's bearer token.
#[derive(Debug, Clone)]
pub(crate) struct AuthUser(pub(crate) String);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate_headers(&parts.headers, &state.auth)?
            .map(AuthUser)
            .ok_or_else(|| {
                ApiError::unauthorized("missing bearer token: send `Authorization: Bearer <token>`")
            })
    }
}

/// `Ok(None)` without an `Authorization` header; an error for a header that does not
/// authenticate.
pub(crate) fn authenticate_headers(
    headers: &HeaderMap,
    auth: &Auth,
) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value.to_str().ok().and_then(bearer_token).ok_or_else(|| {
        ApiError::unauthorized("malformed Authorization header: expected `Bearer <token>`")
    })?;
    auth.authenticate(token)
        .map(Some)
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))
}

/// Builds the router of the whole API.
pub(crate) fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/ws", get(crate::ws::upgrade))
        .route("/sync/push", post(push))
        .route("/{collection}", get(pull).post(create))
        .route(
            "/{collection}/{id}",
            get(get_one).patch(patch).put(put).delete(delete),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "no such endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn health() -> Json<Health> {
    Json(health_body())
}

/// Body of a health answer.
pub(crate) fn health_body() -> Health {
    Health::ok()
}

fn json_text_response(status: StatusCode, text: Vec<u8>) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        Body::from(text),
    )
        .into_response()
}

fn check_collection(collection: &str, limits: &Limits) -> Result<(), ApiError> {
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

fn check_id(id: &str, limits: &Limits) -> Result<(), ApiError> {
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

async fn pull(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(collection): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) =
        query.map_err(|err| ApiError::bad_request(ErrorCode::InvalidQuery, err.body_text()))?;
    let body = list(&state, &user, &collection, params).await?;
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
    let limit = limit.min(limits.max_page_limit);
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    // One extra row tells whether another page follows.
    let mut rows = state
        .store
        .pull(user, collection, since, limit as i64 + 1, offset, filters)
        .await?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
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
    Ok(body)
}

async fn get_one(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((collection, id)): Path<(String, String)>,
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

/// Reads a request body, answering 413 past the size limit and 400 otherwise.
fn body_bytes(body: Result<Bytes, BytesRejection>, limits: &Limits) -> Result<Bytes, ApiError> {
    body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!(
                    "request body is larger than {} bytes; send smaller batches",
                    limits.max_body_bytes
                ),
            )
            .with_limit(limits.max_body_bytes)
        } else {
            ApiError::bad_request(ErrorCode::InvalidBody, rej.body_text())
        }
    })
}

fn malformed_json(err: &serde_json::Error) -> ApiError {
    ApiError::bad_request(ErrorCode::MalformedJson, format!("malformed JSON: {err}"))
}

/// Checks that a request body is JSON and returns its text.
fn parse_body(bytes: &[u8]) -> Result<&RawValue, ApiError> {
    serde_json::from_slice(bytes).map_err(|err| malformed_json(&err))
}

fn idempotency_key(headers: &HeaderMap, limits: &Limits) -> Result<Option<String>, ApiError> {
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

fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
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
struct Rejection {
    code: ErrorCode,
    message: String,
    limit: Option<usize>,
}

impl Rejection {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            limit: None,
        }
    }

    fn into_api_error(self) -> ApiError {
        let mut err = ApiError::bad_request(self.code, self.message);
        err.body.limit = self.limit.map(|l| l as u64);
        err
    }

    fn into_result(self) -> RawResult {
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
fn prepare(
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
        (_, Some(raw)) if raw.get().starts_with('{') => Some(raw),
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
fn raw_type_name(value: &RawValue) -> &'static str {
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

/// Applies validated ops in one transaction and publishes their events after commit, to
/// every connection of the user but `origin` (the WebSocket connection that asked).
async fn apply(
    state: &AppState,
    user: &str,
    ops: Vec<WriteOp>,
    origin: Option<u64>,
) -> Result<Vec<RawResult>, ApiError> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let want_events = state.hub.has_listeners() || state.store.notify_target().is_some();
    let outcome = state.store.write(user, ops, want_events).await?;
    // On Postgres events are made for the NOTIFY even when nobody here listens; records are
    // parsed for this instance's connections only when there are some.
    if state.hub.has_listeners() {
        state
            .hub
            .publish(outcome.events.into_iter().filter_map(|raw| {
                match raw.into_change_event() {
                    Ok(mut event) => {
                        event.origin = origin;
                        Some(event)
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "event of a committed write has an invalid record");
                        None
                    }
                }
            }));
    }
    Ok(outcome.results)
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

async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(collection): Path<String>,
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

async fn patch(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((collection, id)): Path<(String, String)>,
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

async fn put(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((collection, id)): Path<(String, String)>,
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

async fn delete(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((collection, id)): Path<(String, String)>,
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

async fn push(
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
    fn rejected_results_keep_their_code_and_status() {
        for (code, status) in [
            ("not_found", StatusCode::NOT_FOUND),
            ("idempotency_key_reused", StatusCode::UNPROCESSABLE_ENTITY),
            ("invalid_data", StatusCode::BAD_REQUEST),
        ] {
            let response = result_response(RawResult::rejected(code, "no".into()), false);
            assert_eq!(response.status(), status, "{code}");
        }
        let err = ApiError::bad_request(ErrorCode::IdTooLong, "long").with_limit(9);
        let (status, body) = err.into_parts();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            serde_json::to_string(&body).expect("serialises"),
            r#"{"error":"long","code":"id_too_long","limit":9}"#
        );
        assert_eq!(
            api_to_rejection(ApiError::bad_request(ErrorCode::InvalidQuery, "q")).code,
            ErrorCode::InvalidOp
        );
        assert_eq!(
            api_to_rejection(ApiError::bad_request(ErrorCode::IdTooLong, "q")).code,
            ErrorCode::IdTooLong
        );
    }
}
