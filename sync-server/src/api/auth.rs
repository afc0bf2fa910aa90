//! Who is asking: the bearer token of a request (or of a WebSocket upgrade).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use super::{ApiError, AppState};
use crate::auth::{bearer_token, Auth, Session};

/// The user of the request's bearer token.
#[derive(Debug, Clone)]
pub(crate) struct AuthUser(pub(crate) String);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = authenticate_headers(&parts.headers, &state.auth)?
            .map(|session| session.user)
            .ok_or_else(|| {
                ApiError::unauthorized("missing bearer token: send `Authorization: Bearer <token>`")
            })?;
        if let Some(device) = super::device_of(&parts.headers)? {
            super::note_device(state, &user, &device, false).await;
        }
        Ok(AuthUser(user))
    }
}

/// `Ok(None)` without an `Authorization` header; an error for a header that does not
/// authenticate.
pub(crate) fn authenticate_headers(
    headers: &HeaderMap,
    auth: &Auth,
) -> Result<Option<Session>, ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value.to_str().ok().and_then(bearer_token).ok_or_else(|| {
        ApiError::unauthorized("malformed Authorization header: expected `Bearer <token>`")
    })?;
    auth.session(token)
        .map(Some)
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))
}
