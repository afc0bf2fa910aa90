//! The WebSocket endpoint: auth, subscriptions with equality filters, ping/pong, change
//! events of the connection's user, and requests (push, pull, get, query, health; see
//! [`crate::ws_requests`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::api::{authenticate_headers, AppState};
use crate::events::ChangeEvent;
use crate::protocol::{ClientMessage, ServerMessage, SubscriptionAction, WsRequest};
use crate::ws_requests::InFlight;

/// Close code for a connection that never authenticated.
const CLOSE_POLICY: u16 = 1008;
/// Close code when the server shuts down.
const CLOSE_GOING_AWAY: u16 = 1001;

/// `GET /ws`: authenticates by the `Authorization` header when present (a bad header is a 401
/// before the upgrade), otherwise expects an `auth` message first.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let user = match authenticate_headers(&headers, &state.auth) {
        Ok(user) => user,
        Err(err) => return err.into_response(),
    };
    let max = state.limits.max_ws_message_bytes;
    ws.max_message_size(max)
        .on_upgrade(move |socket| Connection::new(state, user).run(socket))
}

/// Source of connection ids (to skip a connection's own changes).
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

struct Connection {
    id: u64,
    state: AppState,
    user: Option<String>,
    /// Channel (collection) -> equality filter.
    subscriptions: HashMap<String, Map<String, Value>>,
}

impl Connection {
    fn new(state: AppState, user: Option<String>) -> Self {
        Self {
            id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
            state,
            user,
            subscriptions: HashMap::new(),
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        let mut events = self.state.hub.subscribe();
        let mut requests = InFlight::new();
        let cancel = self.state.cancel.clone();
        let auth_deadline = tokio::time::sleep(self.state.limits.ws_auth_timeout);
        tokio::pin!(auth_deadline);
        'serve: loop {
            // This loop is the socket's only writer: responses and events go out whole and in
            // the order they are ready.
            let outgoing: Vec<Message> = tokio::select! {
                () = cancel.cancelled() => {
                    let _ = sink.send(close(CLOSE_GOING_AWAY, "server shutting down")).await;
                    break;
                }
                () = &mut auth_deadline, if self.user.is_none() => {
                    let _ = sink.send(text(&ServerMessage::Error {
                        message: "authentication timed out: send {\"type\":\"auth\",\"token\":...} first".into(),
                    })).await;
                    let _ = sink.send(close(CLOSE_POLICY, "not authenticated")).await;
                    break;
                }
                answer = requests.next() => vec![answer],
                incoming = stream.next() => match incoming {
                    None | Some(Err(_)) => break,
                    Some(Ok(Message::Text(body))) => {
                        self.handle(body.as_str(), &mut requests).into_iter().collect()
                    }
                    Some(Ok(Message::Binary(_))) => vec![text(&ServerMessage::Error {
                        message: "binary messages are not supported; send JSON text".into(),
                    })],
                    Some(Ok(Message::Close(_))) => break,
                    // Protocol pings are answered by the WebSocket layer.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Vec::new(),
                },
                event = events.recv() => match event {
                    Ok(event) => self.deliver(&event).into_iter().collect(),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a WebSocket connection fell behind the event stream");
                        vec![text(&ServerMessage::Error {
                            message: format!("{missed} events were dropped because this connection fell behind; pull to catch up"),
                        })]
                    }
                    Err(RecvError::Closed) => break,
                },
            };
            for message in outgoing {
                if sink.send(message).await.is_err() {
                    break 'serve;
                }
            }
        }
        // Writes already started finish (and publish their events) even without a socket.
        drop(events);
        requests.finish().await;
    }

    fn handle(&mut self, body: &str, requests: &mut InFlight) -> Option<Message> {
        let value: Value = match serde_json::from_str(body) {
            Ok(v) => v,
            Err(err) => {
                return Some(error(format!("cannot read message: {err}")));
            }
        };
        let value = match value {
            Value::Object(object)
                if object.get("type").and_then(Value::as_str) == Some(WsRequest::TYPE) =>
            {
                return requests.start(&self.state, self.id, self.user.as_deref(), object);
            }
            other => other,
        };
        let kind = value.get("type").and_then(Value::as_str).map(str::to_owned);
        let message: ClientMessage = match serde_json::from_value(value) {
            Ok(m) => m,
            Err(err) => {
                return Some(error(format!("cannot read message: {err}")));
            }
        };
        let reply = match message {
            ClientMessage::Ping => text(&ServerMessage::Pong),
            ClientMessage::Pong => return None,
            ClientMessage::Unknown => error(format!(
                "cannot read message: unknown message type {:?}: expected \"auth\", \"subscription\", \"ping\", \"pong\" or \"request\"",
                kind.unwrap_or_default()
            )),
            ClientMessage::Auth { token } => match self.state.auth.authenticate(&token) {
                Some(user) => {
                    if self.user.as_ref().is_some_and(|u| *u != user) {
                        error("this connection is already authenticated as another user".into())
                    } else {
                        self.user = Some(user.clone());
                        text(&ServerMessage::AuthOk { user })
                    }
                }
                None => error("authentication failed: invalid or expired token".into()),
            },
            ClientMessage::Subscription { data } => {
                if self.user.is_none() {
                    error("not authenticated: send {\"type\":\"auth\",\"token\":...} first".into())
                } else if data.channel.is_empty() {
                    error("subscription channel is empty".into())
                } else {
                    match data.action {
                        SubscriptionAction::Subscribe => {
                            if self.subscriptions.len() >= self.state.limits.max_ws_subscriptions
                                && !self.subscriptions.contains_key(&data.channel)
                            {
                                error(format!(
                                    "too many subscriptions; the limit is {}",
                                    self.state.limits.max_ws_subscriptions
                                ))
                            } else {
                                self.subscriptions
                                    .insert(data.channel.clone(), data.parameters.clone());
                                text(&ServerMessage::Subscribed {
                                    channel: data.channel,
                                    parameters: data.parameters,
                                })
                            }
                        }
                        SubscriptionAction::Unsubscribe => {
                            self.subscriptions.remove(&data.channel);
                            text(&ServerMessage::Unsubscribed {
                                channel: data.channel,
                            })
                        }
                    }
                }
            }
        };
        Some(reply)
    }

    fn deliver(&self, event: &Arc<ChangeEvent>) -> Option<Message> {
        let user = self.user.as_ref()?;
        if *user != event.owner || event.origin == Some(self.id) {
            return None;
        }
        let filter = self.subscriptions.get(&event.message.collection)?;
        if !matches_filter(&event.message.data, filter) {
            return None;
        }
        match serde_json::to_string(&event.message) {
            Ok(body) => Some(Message::Text(Utf8Bytes::from(body))),
            Err(err) => {
                tracing::warn!(error = %err, "cannot encode an event");
                None
            }
        }
    }
}

/// Whether every parameter equals the record's top-level field. A string parameter also
/// matches a number or boolean of the same text, as query-string filters do.
pub(crate) fn matches_filter(record: &Map<String, Value>, filter: &Map<String, Value>) -> bool {
    filter.iter().all(|(field, want)| match record.get(field) {
        None => want.is_null(),
        Some(have) => {
            have == want
                || match (want, have) {
                    (Value::String(w), Value::Number(_) | Value::Bool(_)) => {
                        w.as_str() == have.to_string().as_str()
                    }
                    (Value::Number(_) | Value::Bool(_), Value::String(h)) => {
                        h.as_str() == want.to_string().as_str()
                    }
                    _ => false,
                }
        }
    })
}

fn text(message: &ServerMessage) -> Message {
    let body = serde_json::to_string(message)
        .unwrap_or_else(|_| "{\"type\":\"error\",\"message\":\"internal\"}".into());
    Message::Text(Utf8Bytes::from(body))
}

pub(crate) fn error(message: String) -> Message {
    text(&ServerMessage::Error { message })
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn filters() {
        let record = map(json!({"project": "p1", "priority": 3, "done": false}));
        assert!(matches_filter(&record, &Map::new()));
        assert!(matches_filter(&record, &map(json!({"project": "p1"}))));
        assert!(matches_filter(&record, &map(json!({"priority": "3"}))));
        assert!(matches_filter(&record, &map(json!({"done": "false"}))));
        assert!(!matches_filter(&record, &map(json!({"project": "p2"}))));
        assert!(!matches_filter(&record, &map(json!({"missing": "x"}))));
    }
}
