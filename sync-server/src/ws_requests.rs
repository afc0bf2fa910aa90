//! Requests over the WebSocket: the socket as a transport, not only an event stream.
//!
//! A client sends `{"type":"request","id":N,"method":M,"body":{...}}` and gets
//! `{"type":"response","id":N,"status":S,"body":{...}}`, where `S` and the body are exactly
//! what the REST endpoint of the method answers, because each method calls the same function
//! as that endpoint:
//!
//! | method   | body                                               | as REST                          |
//! |----------|----------------------------------------------------|----------------------------------|
//! | `push`   | `{"ops":[...]}`                                    | `POST /sync/push`                |
//! | `pull`   | `{"collection","since","limit","params"?}`         | `GET /{collection}?since=&limit=`|
//! | `query`  | `{"collection","params":{..},"limit","offset"}`    | `GET /{collection}?field=value..`|
//! | `get`    | `{"collection","id"}`                              | `GET /{collection}/{id}`         |
//! | `health` | anything                                           | `GET /health`                    |
//!
//! `params` values are strings (numbers and booleans are taken as their text), compared like
//! query-string filters; `since`, `limit` and `offset` among them mean what they mean in a
//! query string. Every method but `health` needs an authenticated connection (401 otherwise).
//!
//! The changes a `push` makes are sent as events to the user's other connections, after
//! commit, as for REST writes, but not back to the connection that pushed: its response
//! already carries each record and version, and an echo racing the response would reach the
//! client while its op is still in flight and look like a concurrent change.
//!
//! Each request runs in its own task, so a slow one never holds up the connection's events,
//! pongs or other requests; the connection's loop is the only writer of the socket, so
//! responses and events never interleave within a frame. A connection has at most
//! [`Limits::max_ws_requests_in_flight`](crate::Limits) requests in progress; beyond, a request
//! is answered 429 at once (a client retries it later like any 429).

use std::collections::HashMap;

use axum::extract::ws::{Message, Utf8Bytes};
use axum::http::StatusCode;
use serde_json::{Map, Value};
use tokio::task::{Id, JoinSet};

use crate::api::{self, ApiError, AppState};
use crate::protocol::{ErrorBody, ErrorCode, RequestId, WsMethod, WsResponse};

/// Requests of one connection that are in progress.
pub(crate) struct InFlight {
    tasks: JoinSet<Message>,
    /// Request id of each task, so a task that panics still gets its 500 answer.
    ids: HashMap<Id, String>,
}

impl InFlight {
    pub(crate) fn new() -> Self {
        Self {
            tasks: JoinSet::new(),
            ids: HashMap::new(),
        }
    }

    /// Starts a request message. Returns the answer when it is known at once (a malformed
    /// request, 401, 429, health), `None` when a task will produce it.
    pub(crate) fn start(
        &mut self,
        state: &AppState,
        connection: u64,
        user: Option<&str>,
        message: Map<String, Value>,
    ) -> Option<Message> {
        let Some(id) = request_id(&message) else {
            return Some(crate::ws::error(
                "a request needs an `id` (a number or string) to answer to".into(),
            ));
        };
        let method = match message.get("method") {
            Some(Value::String(method)) => method.as_str(),
            _ => {
                return Some(error_response(
                    &id,
                    ApiError::bad_request(
                        ErrorCode::InvalidRequest,
                        "a request needs a `method`: one of \"push\", \"pull\", \"get\", \"query\", \"health\"",
                    ),
                ))
            }
        };
        let body = message.get("body").cloned().unwrap_or(Value::Null);
        let method = match WsMethod::from_name(method) {
            Some(WsMethod::Health) => {
                let body = serde_json::to_vec(&api::health_body()).unwrap_or_default();
                return Some(response(&id, StatusCode::OK, &body));
            }
            Some(method) => method,
            None => {
                return Some(error_response(
                    &id,
                    ApiError::bad_request(
                        ErrorCode::UnknownMethod,
                        format!(
                            "unknown request method {method:?}: expected one of \"push\", \"pull\", \"get\", \"query\", \"health\""
                        ),
                    ),
                ))
            }
        };
        let Some(user) = user else {
            return Some(error_response(
                &id,
                ApiError::unauthorized(
                    "not authenticated: send `Authorization: Bearer <token>` on the upgrade or {\"type\":\"auth\",\"token\":...} first",
                ),
            ));
        };
        if self.tasks.len() >= state.limits.max_ws_requests_in_flight {
            return Some(error_response(
                &id,
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyRequests,
                    format!(
                        "{} requests of this connection are in progress; wait for their answers and retry",
                        self.tasks.len()
                    ),
                )
                .with_limit(state.limits.max_ws_requests_in_flight),
            ));
        }
        let state = state.clone();
        let user = user.to_owned();
        let task_id = id.clone();
        let handle = self.tasks.spawn(async move {
            match run(&state, connection, &user, method, body).await {
                Ok(body) => response(&task_id, StatusCode::OK, &body),
                Err(err) => error_response(&task_id, err),
            }
        });
        self.ids.insert(handle.id(), id);
        None
    }

    /// The answer of the next request that finishes; pending while none is in progress.
    pub(crate) async fn next(&mut self) -> Message {
        loop {
            let Some(joined) = self.tasks.join_next_with_id().await else {
                return std::future::pending().await;
            };
            match joined {
                Ok((task, message)) => {
                    self.ids.remove(&task);
                    return message;
                }
                Err(err) => {
                    let Some(id) = self.ids.remove(&err.id()) else {
                        continue;
                    };
                    tracing::error!(error = %err, "a WebSocket request task failed");
                    return error_response(
                        &id,
                        ApiError::internal(&crate::Error::Task(err.to_string())),
                    );
                }
            }
        }
    }

    /// Waits for the requests still in progress, without answering them: a write that
    /// started finishes and publishes its events even if the socket is gone.
    pub(crate) async fn finish(mut self) {
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(err) = joined {
                tracing::error!(error = %err, "a WebSocket request task failed");
            }
        }
    }
}

/// The request id as JSON text (echoed verbatim), when it is a number or a string.
fn request_id(message: &Map<String, Value>) -> Option<String> {
    RequestId::of(message).and_then(|id| serde_json::to_string(&id).ok())
}

/// Runs one authenticated request through the REST handlers' functions.
async fn run(
    state: &AppState,
    connection: u64,
    user: &str,
    method: WsMethod,
    body: Value,
) -> Result<Vec<u8>, ApiError> {
    match method {
        WsMethod::Push => {
            let body = serde_json::to_vec(&body)
                .map_err(|err| ApiError::internal(&crate::Error::Corrupt(err.to_string())))?;
            api::push_batch(state, user, &body, Some(connection)).await
        }
        WsMethod::Pull => {
            let mut body = object(body, "pull")?;
            let collection = collection(&body)?;
            let mut params = params(body.remove("params"))?;
            if let Some(since) = scalar(body.remove("since"), "since")? {
                params.push(("since".to_owned(), since));
            }
            if let Some(limit) = scalar(body.remove("limit"), "limit")? {
                params.push(("limit".to_owned(), limit));
            }
            api::list(state, user, &collection, params).await
        }
        WsMethod::Query => {
            let mut body = object(body, "query")?;
            let collection = collection(&body)?;
            let mut params = params(body.remove("params"))?;
            if let Some(limit) = scalar(body.remove("limit"), "limit")? {
                params.push(("limit".to_owned(), limit));
            }
            if let Some(offset) = scalar(body.remove("offset"), "offset")? {
                params.push(("offset".to_owned(), offset));
            }
            api::list(state, user, &collection, params).await
        }
        WsMethod::Get => {
            let body = object(body, "get")?;
            let collection = collection(&body)?;
            let id = match body.get("id") {
                Some(Value::String(id)) => id.clone(),
                _ => {
                    return Err(ApiError::bad_request(
                        ErrorCode::InvalidId,
                        "a get request needs `id` (a string)",
                    ))
                }
            };
            api::read(state, user, &collection, &id).await
        }
        WsMethod::Health => Ok(serde_json::to_vec(&api::health_body()).unwrap_or_default()),
    }
}

fn object(body: Value, method: &str) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("the body of a {method} request must be a JSON object"),
        )),
    }
}

fn collection(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("collection") {
        Some(Value::String(collection)) => Ok(collection.clone()),
        _ => Err(ApiError::bad_request(
            ErrorCode::InvalidCollection,
            "the request needs `collection` (a string)",
        )),
    }
}

/// A parameter as query-string text; `None` for a missing or `null` one.
fn scalar(value: Option<Value>, name: &str) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
        Some(_) => Err(ApiError::bad_request(
            ErrorCode::InvalidFilter,
            format!("parameter {name:?} must be a string, number or boolean"),
        )),
    }
}

/// The `params` object as query-string pairs, in order.
fn params(value: Option<Value>) -> Result<Vec<(String, String)>, ApiError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "`params` must be a JSON object of field: value",
            ))
        }
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (name, value) in map {
        if let Some(text) = scalar(Some(value), &name)? {
            pairs.push((name, text));
        }
    }
    Ok(pairs)
}

/// A [`WsResponse`], `{"type":"response","id":ID,"status":S,"body":BODY}`, written around a body
/// that is JSON text already (pages and records are written without building JSON trees).
fn response(id: &str, status: StatusCode, body: &[u8]) -> Message {
    let body = if body.is_empty() {
        "null".as_bytes()
    } else {
        body
    };
    let mut text = String::with_capacity(body.len() + id.len() + 48);
    text.push_str("{\"type\":\"");
    text.push_str(WsResponse::TYPE);
    text.push_str("\",\"id\":");
    text.push_str(id);
    text.push_str(",\"status\":");
    text.push_str(status.as_str());
    text.push_str(",\"body\":");
    text.push_str(&String::from_utf8_lossy(body));
    text.push('}');
    Message::Text(Utf8Bytes::from(text))
}

fn error_response(id: &str, err: ApiError) -> Message {
    let (status, body): (StatusCode, ErrorBody) = err.into_parts();
    let body = serde_json::to_vec(&body).unwrap_or_default();
    response(id, status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn response_wraps_json_text() {
        let Message::Text(text) = response("7", StatusCode::OK, br#"{"a":1}"#) else {
            panic!("not text");
        };
        let value: Value = serde_json::from_str(text.as_str()).expect("valid JSON");
        assert_eq!(
            value,
            json!({"type": "response", "id": 7, "status": 200, "body": {"a": 1}})
        );
        let typed: WsResponse = serde_json::from_str(text.as_str()).expect("a WsResponse");
        assert_eq!(typed.id.as_u64(), Some(7));
        assert_eq!((typed.status, typed.body), (200, json!({"a": 1})));
    }

    #[test]
    fn request_ids_are_echoed_verbatim() {
        let id = |v: Value| match v {
            Value::Object(map) => request_id(&map),
            _ => None,
        };
        assert_eq!(id(json!({"id": 7})).as_deref(), Some("7"));
        assert_eq!(id(json!({"id": -1.5})).as_deref(), Some("-1.5"));
        assert_eq!(id(json!({"id": "a\"b"})).as_deref(), Some(r#""a\"b""#));
        assert_eq!(id(json!({"id": null})), None);
        assert_eq!(id(json!({})), None);
    }

    #[test]
    fn error_answers_carry_an_error_body() {
        let Message::Text(text) = error_response(
            "\"r1\"",
            ApiError::bad_request(ErrorCode::InvalidRequest, "bad"),
        ) else {
            panic!("not text");
        };
        let typed: WsResponse<ErrorBody> = serde_json::from_str(text.as_str()).expect("parses");
        assert_eq!(typed.status, 400);
        assert_eq!(typed.body.code, ErrorCode::InvalidRequest);
        assert_eq!(typed.body.error, "bad");
    }

    #[test]
    fn params_become_query_pairs() {
        let pairs = params(Some(
            json!({"done": false, "priority": 3, "title": "x", "gone": null}),
        ))
        .expect("valid params");
        assert_eq!(
            pairs,
            vec![
                ("done".to_owned(), "false".to_owned()),
                ("priority".to_owned(), "3".to_owned()),
                ("title".to_owned(), "x".to_owned()),
            ]
        );
        assert!(params(Some(json!({"tags": ["a"]}))).is_err());
        assert!(params(Some(json!([1]))).is_err());
    }
}
