//! The REST API (ARCHITECTURE.md, "sync-server"), in the order a request meets it: the router
//! and shared state here, then [`auth`] (who is asking), [`validate`] (what may be written),
//! [`records`] (REST reads and writes of one record, and pages) and [`push`] (batch push). The
//! WebSocket requests (`ws_requests.rs`) call the same functions.

mod auth;
mod error;
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

use crate::auth::Auth;
use crate::events::Hub;
use crate::protocol::{ErrorCode, Health};
use crate::server::Limits;
use crate::store::{RawResult, Store, WriteOp, WriteSettings};

pub(crate) use self::auth::{authenticate_headers, AuthUser};
pub(crate) use self::error::ApiError;
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
}

/// Builds the router of the whole API.
pub(crate) fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/ws", get(crate::ws::upgrade))
        .route("/sync/push", post(push::push))
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
    let settings = WriteSettings {
        want_events: state.hub.has_listeners() || state.store.notify_target().is_some(),
        answer_budget: state.limits.max_push_answer_bytes,
    };
    let outcome = state.store.write(user, ops, settings).await?;
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
