//! The WebSocket endpoint: auth, subscriptions (a version floor and equality filters),
//! ping/pong, change events of the connection's user, and requests (push, pull, get, query,
//! health; see [`crate::ws_requests`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::{authenticate_headers, ApiError, AppState};
use crate::auth::Session;
use crate::events::Published;
use crate::protocol::{ClientMessage, ErrorCode, ServerMessage, SubscriptionAction, WsRequest};
use crate::ws_requests::InFlight;

/// Close code for a connection that never authenticated.
const CLOSE_POLICY: u16 = 1008;
/// Close code when the server shuts down.
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a connection dropped because it did not read what it was sent.
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Messages the outgoing queue holds at most, whatever their size (bytes are bounded too).
const QUEUE_MESSAGES: usize = 1024;
/// Bytes a connection reads from its socket at a time. tungstenite zero-fills its read buffer
/// to this size on the first read, so its default (128 KiB) made every idle connection hold
/// 128 KiB; a larger message still arrives whole (the buffer grows for it).
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// `GET /ws`: authenticates by the `Authorization` header when present (a bad header is a 401
/// before the upgrade), otherwise expects an `auth` message first.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::new(
                rejection.status(),
                ErrorCode::InvalidRequest,
                format!("{}: /ws takes a WebSocket upgrade", rejection.body_text()),
            )
            .into_response()
        }
    };
    let session = match authenticate_headers(&headers, &state.auth) {
        Ok(session) => session,
        Err(err) => return err.into_response(),
    };
    if let Some(session) = &session {
        match crate::api::device_of(&headers) {
            Ok(Some(device)) => {
                crate::api::note_device(&state, &session.user, &device, false).await
            }
            Ok(None) => {}
            Err(err) => return err.into_response(),
        }
    }
    let peer = peer.map(|Extension(info)| info.0.ip());
    let max = state.limits.max_ws_connections_per_user;
    let slot = match &session {
        Some(session) => match state.ws_users.take(&session.user, max) {
            Some(slot) => Some(slot),
            None => {
                return ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyRequests,
                    format!(
                    "this user has {max} WebSocket connections open (max_ws_connections_per_user)"
                ),
                )
                .with_limit(max)
                .into_response()
            }
        },
        None => None,
    };
    let max = state.limits.max_ws_message_bytes;
    ws.max_message_size(max)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| Connection::new(state, session, peer, slot).run(socket))
}

/// The next event of the connection's user; never, before it knows its user.
async fn next_event(
    events: &mut Option<tokio::sync::broadcast::Receiver<Arc<Published>>>,
) -> Result<Arc<Published>, RecvError> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// Source of connection ids (to skip a connection's own changes).
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

struct Connection {
    id: u64,
    state: AppState,
    user: Option<String>,
    /// When the token that authenticated the connection stops being valid (Unix seconds).
    expires_at: Option<u64>,
    /// The peer's address, for the throttle of failed authentications.
    peer: Option<IpAddr>,
    /// Set by a failed `auth` message: the connection is closed.
    failed_auth: bool,
    /// This connection's place among its user's connections.
    slot: Option<WsSlot>,
    /// Channel (collection) -> what its events must meet.
    subscriptions: HashMap<String, Filter>,
}

impl Connection {
    fn new(
        state: AppState,
        session: Option<Session>,
        peer: Option<IpAddr>,
        slot: Option<WsSlot>,
    ) -> Self {
        let (user, expires_at) = match session {
            Some(session) => (Some(session.user), session.expires_at),
            None => (None, None),
        };
        Self {
            id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
            state,
            user,
            expires_at,
            peer,
            failed_auth: false,
            slot,
            subscriptions: HashMap::new(),
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (sink, mut stream) = socket.split();
        let limits = self.state.limits.clone();
        // The socket has one writer task with a bounded queue and a deadline per write, so
        // this loop never blocks on a peer that stops reading: events keep being drained from
        // the hub, the auth deadline holds, and a peer that falls too far behind is dropped.
        let stop = CancellationToken::new();
        let (outbox, writer) = Outbox::spawn(
            sink,
            limits.max_ws_queue_bytes,
            limits.ws_write_timeout,
            stop.clone(),
        );
        // The user's events, from the moment the connection knows its user (the header, or
        // the `auth` message, which comes before any subscription can).
        let mut events = self
            .user
            .as_deref()
            .map(|user| self.state.hub.subscribe(user));
        let mut requests = InFlight::new();
        let cancel = self.state.cancel.clone();
        let auth_deadline = tokio::time::sleep(limits.ws_auth_timeout);
        tokio::pin!(auth_deadline);
        let start = tokio::time::Instant::now();
        let mut pings =
            tokio::time::interval_at(start + limits.ws_ping_interval, limits.ws_ping_interval);
        let mut last_heard = start;
        loop {
            let outgoing: Vec<Message> = tokio::select! {
                () = stop.cancelled() => break,
                () = cancel.cancelled() => {
                    outbox.close(close(CLOSE_GOING_AWAY, "server shutting down"));
                    break;
                }
                () = &mut auth_deadline, if self.user.is_none() => {
                    outbox.push(text(&ServerMessage::Error {
                        message: "authentication timed out: send {\"type\":\"auth\",\"token\":...} first".into(),
                    }));
                    outbox.close(close(CLOSE_POLICY, "not authenticated"));
                    break;
                }
                () = session_end(self.expires_at) => {
                    outbox.push(text(&ServerMessage::Error {
                        message: "the token expired: reconnect with a fresh token".into(),
                    }));
                    outbox.close(close(CLOSE_POLICY, "token expired"));
                    break;
                }
                _ = pings.tick() => {
                    if last_heard.elapsed() >= limits.ws_idle_timeout {
                        outbox.close(close(CLOSE_GOING_AWAY, "idle: nothing heard, not even a pong"));
                        break;
                    }
                    vec![Message::Ping(axum::body::Bytes::new())]
                }
                answer = requests.next() => vec![answer],
                incoming = stream.next() => match incoming.inspect(|_| last_heard = tokio::time::Instant::now()) {
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
                event = next_event(&mut events) => match event {
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
            if events.is_none() {
                events = self
                    .user
                    .as_deref()
                    .map(|user| self.state.hub.subscribe(user));
            }
            let pushed = outgoing.into_iter().all(|message| outbox.push(message));
            if self.failed_auth {
                outbox.close(close(CLOSE_POLICY, "authentication failed"));
                break;
            }
            if !pushed {
                tracing::info!(
                    connection = self.id,
                    limit = limits.max_ws_queue_bytes,
                    "dropping a WebSocket connection that does not read what it is sent"
                );
                stop.cancel();
                break;
            }
        }
        // Writes already started finish (and publish their events) even without a socket.
        drop(events);
        drop(outbox);
        requests.finish().await;
        if let Err(err) = writer.await {
            tracing::error!(error = %err, "WebSocket writer task failed");
        }
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
            ClientMessage::Auth { token } => self.authenticate(&token),
            ClientMessage::Subscription { data } => {
                if self.user.is_none() {
                    error("not authenticated: send {\"type\":\"auth\",\"token\":...} first".into())
                } else if data.channel.is_empty() {
                    error("subscription channel is empty".into())
                } else if let Some(refused) = self.refuse_subscription(&data) {
                    error(refused)
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
                                    .insert(data.channel.clone(), Filter::of(&data));
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

    /// Handles an `auth` message. A failure closes the connection (one guess per socket) and
    /// counts against the peer's address; a throttled address is refused without checking.
    fn authenticate(&mut self, token: &str) -> Message {
        if let Some(wait) = self.peer.and_then(|peer| self.state.throttle.blocked(peer)) {
            self.failed_auth = true;
            return error(format!(
                "too many failed authentications from this address; retry in {} s",
                wait.as_secs().max(1)
            ));
        }
        match self.state.auth.session(token) {
            Some(session) if self.user.as_ref().is_some_and(|u| *u != session.user) => {
                error("this connection is already authenticated as another user".into())
            }
            Some(session) => {
                if self.slot.is_none() {
                    let max = self.state.limits.max_ws_connections_per_user;
                    match self.state.ws_users.take(&session.user, max) {
                        Some(slot) => self.slot = Some(slot),
                        None => {
                            self.failed_auth = true;
                            return error(format!(
                                "this user has {max} WebSocket connections open \
                                 (max_ws_connections_per_user)"
                            ));
                        }
                    }
                }
                self.user = Some(session.user.clone());
                self.expires_at = session.expires_at;
                text(&ServerMessage::AuthOk { user: session.user })
            }
            None => {
                if let Some(peer) = self.peer {
                    self.state.throttle.failed(peer);
                }
                self.failed_auth = true;
                error("authentication failed: invalid or expired token".into())
            }
        }
    }

    /// Why a subscription is refused: its channel or parameters are past their limits (each
    /// socket holds up to `max_ws_subscriptions` of them), or its `since` is not a version.
    fn refuse_subscription(&self, data: &crate::protocol::Subscription) -> Option<String> {
        let limits = &self.state.limits;
        if data.action == SubscriptionAction::Unsubscribe {
            return None;
        }
        if data.channel.len() > limits.max_collection_len {
            return Some(format!(
                "subscription channel is {} bytes; the limit is {} (max_collection_len)",
                data.channel.len(),
                limits.max_collection_len
            ));
        }
        if data.parameters.len() > limits.max_subscription_parameters {
            return Some(format!(
                "{} subscription parameters; the limit is {} (max_subscription_parameters)",
                data.parameters.len(),
                limits.max_subscription_parameters
            ));
        }
        let bytes = serde_json::to_vec(&data.parameters).map_or(usize::MAX, |text| text.len());
        if bytes > limits.max_subscription_bytes {
            return Some(format!(
                "subscription parameters are {bytes} bytes of JSON; the limit is {} \
                 (max_subscription_bytes)",
                limits.max_subscription_bytes
            ));
        }
        data.since().err()
    }

    fn deliver(&self, published: &Arc<Published>) -> Option<Message> {
        let event = &published.event;
        let user = self.user.as_ref()?;
        if *user != event.owner || event.origin == Some(self.id) {
            return None;
        }
        let filter = self.subscriptions.get(&event.message.collection)?;
        if filter
            .since
            .is_some_and(|since| event.message.version <= since)
            || !matches_filter(&event.message.data, &filter.equals)
        {
            return None;
        }
        // Serialised once by the hub; a clone shares the bytes.
        Some(Message::Text(published.text.clone()))
    }
}

/// What a subscription's events must meet: a version above `since`, and fields equal to
/// `equals` (see [`crate::protocol::Subscription::parameters`]).
#[derive(Debug)]
struct Filter {
    since: Option<i64>,
    equals: Map<String, Value>,
}

impl Filter {
    /// The filter of a subscription whose parameters were checked
    /// (`refuse_subscription`).
    fn of(subscription: &crate::protocol::Subscription) -> Filter {
        Filter {
            since: subscription.since().ok().flatten(),
            equals: subscription.filter(),
        }
    }
}

/// The queue in front of a socket's writer task, bounded in bytes (`max_ws_queue_bytes`).
struct Outbox {
    tx: mpsc::Sender<(Message, usize)>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl Outbox {
    /// Starts the writer task of `sink`. It sends queued messages in order, each within
    /// `write_timeout`; a failed or late write, or `stop`, ends it (and cancels `stop`).
    fn spawn(
        mut sink: SplitSink<WebSocket, Message>,
        max_bytes: usize,
        write_timeout: Duration,
        stop: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<(Message, usize)>(QUEUE_MESSAGES);
        let queued = Arc::new(AtomicUsize::new(0));
        let sent = queued.clone();
        let writer = tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    () = stop.cancelled() => {
                        // Dropped as too slow while idle: say why, briefly.
                        let bye = close(CLOSE_TRY_AGAIN_LATER, "too slow: reconnect and pull");
                        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(bye)).await;
                        break;
                    }
                    next = rx.recv() => next,
                };
                let Some((message, size)) = next else { break };
                let closing = matches!(message, Message::Close(_));
                let written = tokio::select! {
                    // Mid-frame: the socket is dropped, not closed cleanly.
                    () = stop.cancelled() => break,
                    written = tokio::time::timeout(write_timeout, sink.send(message)) => written,
                };
                sent.fetch_sub(size, Ordering::AcqRel);
                if !matches!(written, Ok(Ok(()))) || closing {
                    break;
                }
            }
            stop.cancel();
        });
        let outbox = Self {
            tx,
            queued,
            max_bytes,
        };
        (outbox, writer)
    }

    /// Queues a message; `false` when the peer is too far behind (the queue is full).
    fn push(&self, message: Message) -> bool {
        let size = message_size(&message);
        let before = self.queued.fetch_add(size, Ordering::AcqRel);
        // One message always fits an empty queue: an answer may be larger than the queue's
        // budget (a page or push answer of up to 8 MiB); the queue bounds the backlog.
        if before > 0 && before.saturating_add(size) > self.max_bytes {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return false;
        }
        if self.tx.try_send((message, size)).is_err() {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Queues a close frame as the last message, even past the byte limit (it is small).
    fn close(&self, message: Message) {
        let _ = self.tx.try_send((message, 0));
    }
}

/// Bytes a queued message holds.
fn message_size(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
        Message::Close(_) => 16,
    }
}

/// WebSocket connections per user (`max_ws_connections_per_user`).
#[derive(Debug, Clone, Default)]
pub(crate) struct WsUsers(Arc<std::sync::Mutex<HashMap<String, usize>>>);

/// A connection's place among its user's connections; freed when dropped.
#[derive(Debug)]
pub(crate) struct WsSlot {
    users: WsUsers,
    user: String,
}

impl WsUsers {
    /// A slot for one more connection of `user`, unless it holds `max` already.
    fn take(&self, user: &str, max: usize) -> Option<WsSlot> {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(user.to_owned()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(WsSlot {
            users: self.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        let mut counts = self
            .users
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

/// Completes when a session that expires at `expires_at` (Unix seconds) has expired; never
/// for a session without expiry.
async fn session_end(expires_at: Option<u64>) {
    let Some(expires_at) = expires_at else {
        return std::future::pending().await;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    tokio::time::sleep(Duration::from_secs(expires_at.saturating_sub(now))).await;
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
