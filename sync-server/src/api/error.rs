//! The JSON error answer of every endpoint.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::protocol::{ErrorBody, ErrorCode};

/// A JSON error response.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) body: ErrorBody,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_with_a_limit_serialises_it() {
        let err = ApiError::bad_request(ErrorCode::IdTooLong, "long").with_limit(9);
        let (status, body) = err.into_parts();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            serde_json::to_string(&body).expect("serialises"),
            r#"{"error":"long","code":"id_too_long","limit":9}"#
        );
    }
}
