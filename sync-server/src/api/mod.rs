//! The REST API (ARCHITECTURE.md, "sync-server"), in the order a request meets it: the router
//! and shared state here, then [`auth`] (who is asking), [`validate`] (what may be written),
//! [`records`] (REST reads and writes of one record, and pages) and [`push`] (batch push). The
//! WebSocket requests (`ws_requests.rs`) call the same functions.

mod auth;
mod error;
mod meta;
mod push;
mod records;
mod validate;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::decompression::RequestDecompressionLayer;

use crate::auth::Auth;
use crate::events::Hub;
use crate::protocol::{ErrorCode, Health};
use crate::server::Limits;
use crate::store::{RawResult, Store, WriteOp, WriteSettings};
use crate::throttle::AuthThrottle;

pub(crate) use self::auth::{authenticate_headers, AuthUser};
pub(crate) use self::error::ApiError;
pub(crate) use self::meta::{device_of, note_device};
pub(crate) use self::push::push_batch;
pub(crate) use self::records::{list, read};

/// Shared state of every request handler and WebSocket connection.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) auth: Arc<Auth>,
    pub(crate) limits: Limits,
    pub(crate) hub: Hub,
    pub(crate) cancel: CancellationToken,
    /// Failed authentications per peer address.
    pub(crate) throttle: Arc<AuthThrottle>,
    /// WebSocket connections per user.
    pub(crate) ws_users: crate::ws::WsUsers,
    /// When each device was last recorded (`meta.rs`).
    pub(crate) devices: Arc<self::meta::DeviceSeen>,
}

/// Builds the router of the whole API.
pub(crate) fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/ws", get(crate::ws::upgrade))
        .route("/sync/push", post(push::push))
        .route("/sync/metadata", get(meta::metadata))
        .route(
            "/sync/metadata/devices/{device}",
            axum::routing::delete(meta::forget_device),
        )
        .route("/sync/digest/{collection}", get(meta::digest))
        .route("/{collection}", get(records::pull).post(records::create))
        .route(
            "/{collection}/{id}",
            get(records::get_one)
                .patch(records::patch)
                .put(records::put)
                .delete(records::delete),
        )
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "this endpoint does not take this HTTP method",
            )
        })
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "no such endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_body_in_time,
        ))
        // Outside `read_body_in_time`, so `max_body_bytes` limits the DECOMPRESSED body: a
        // small compressed body that inflates past it gets the same 413 as a plain one.
        .layer(RequestDecompressionLayer::new().gzip(true).zstd(true))
        .layer(axum::middleware::map_response(advertise_request_encodings))
        .layer(compression_layer())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            throttle_auth,
        ))
        .with_state(state)
}

/// Content codings the server decompresses in requests, in the order it prefers them.
pub(crate) const REQUEST_ENCODINGS: &str = "zstd, gzip";

/// Compresses response bodies for clients that ask for it (`Accept-Encoding: zstd` or `gzip`),
/// at the fastest level of each: on pages of records it takes most of the bytes for little
/// CPU. Bodies under 256 bytes (most single-record answers) go out as they are, and plain
/// clients get plain bodies.
fn compression_layer() -> CompressionLayer<impl Predicate> {
    CompressionLayer::new()
        .gzip(true)
        .zstd(true)
        .quality(CompressionLevel::Fastest)
        .compress_when(DefaultPredicate::new().and(SizeAbove::new(256)))
}

/// Tells every client which request codings the server reads (`Accept-Encoding` in a
/// response, RFC 7694), so a client may compress its request bodies from then on.
async fn advertise_request_encodings(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::ACCEPT_ENCODING,
        axum::http::HeaderValue::from_static(REQUEST_ENCODINGS),
    );
    response
}

/// Answers 429 to a request with credentials from a peer address that failed to authenticate
/// too often, and counts the 401s answered (see `throttle.rs`). A router embedded without
/// connection info (no peer address) is not throttled.
async fn throttle_auth(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    // A WebSocket without a header authenticates by message; `ws.rs` throttles that.
    let has_credentials = request
        .headers()
        .contains_key(axum::http::header::AUTHORIZATION);
    if let (Some(peer), true) = (peer, has_credentials) {
        if let Some(wait) = state.throttle.blocked(peer) {
            let secs = wait.as_secs().max(1);
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                format!("too many failed authentications from this address; retry in {secs} s"),
            )
            .into_response();
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
            return response;
        }
    }
    let response = next.run(request).await;
    if let (Some(peer), StatusCode::UNAUTHORIZED) = (peer, response.status()) {
        state.throttle.failed(peer);
    }
    response
}

/// Reads the whole request body within `body_read_timeout` (408 past it) and at most
/// `max_body_bytes` (413), so a client sending a body slowly holds a connection for a bounded
/// time. The handlers then read the buffered body.
async fn read_body_in_time(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limits = &state.limits;
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, limits.max_body_bytes);
    let bytes = match tokio::time::timeout(limits.body_read_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(err)) => {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            return if too_large {
                validate::too_large(limits).into_response()
            } else {
                ApiError::bad_request(
                    ErrorCode::InvalidBody,
                    format!("cannot read the body: {err}"),
                )
                .into_response()
            };
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {} s (body_read_timeout)",
                    limits.body_read_timeout.as_secs()
                ),
            )
            .into_response()
        }
    };
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
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
    // Events are built for every write: a connection that subscribes while the write runs
    // (and whose client pulls after the acknowledgement, before the commit) must get them, so
    // whether anybody listens is decided after the commit. An event costs a copy of the
    // record's text until then.
    let settings = WriteSettings {
        answer_budget: state.limits.max_push_answer_bytes,
        quota: state.limits.max_user_bytes,
    };
    let outcome = state.store.write(user, ops, settings).await?;
    // On Postgres the events go to the NOTIFY whether or not anybody here listens; records
    // are parsed for this instance's connections only when there are some.
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
