//! Realtime updates over WebSocket: connection, heartbeat, reconnect with
//! backoff, re-authentication, re-subscription and gap repair by pulling.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value};
use sync_protocol::{
    ClientMessage, ServerMessage, Subscription, SubscriptionAction, ID_KEY, VERSION_KEY,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::events::{SyncEvent, SyncEventType, SyncReport};
use crate::remote::parse_remote_record;

/// Maps server event names to [`SyncEventType`]s and back.
#[derive(Debug, Clone)]
pub struct SyncEventMapper {
    names: HashMap<String, SyncEventType>,
}

impl Default for SyncEventMapper {
    fn default() -> Self {
        let mut names = HashMap::new();
        names.insert("item_created".to_owned(), SyncEventType::ModelAdded);
        names.insert("item_updated".to_owned(), SyncEventType::ModelUpdated);
        names.insert("item_deleted".to_owned(), SyncEventType::ModelDeleted);
        SyncEventMapper { names }
    }
}

impl SyncEventMapper {
    /// The default mapping (`item_created`, `item_updated`, `item_deleted`).
    pub fn new() -> Self {
        SyncEventMapper::default()
    }

    /// Maps the server event `name` to `kind` (added to or replacing the defaults).
    #[must_use]
    pub fn map(mut self, name: impl Into<String>, kind: SyncEventType) -> Self {
        self.names.insert(name.into(), kind);
        self
    }

    /// The event type of a server event name, if known.
    pub fn event_type(&self, name: &str) -> Option<SyncEventType> {
        self.names.get(name).copied()
    }

    /// A server event name for `kind` (the alphabetically first, if several map to it).
    pub fn name_of(&self, kind: SyncEventType) -> Option<&str> {
        let mut names: Vec<&str> = self
            .names
            .iter()
            .filter(|(_, k)| **k == kind)
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names.first().copied()
    }
}

/// Configuration of the realtime connection.
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    /// `ws://` or `wss://` URL.
    pub url: String,
    /// How often a ping is sent.
    pub ping_interval: Duration,
    /// How long to wait for the pong before the connection counts as dead.
    pub pong_timeout: Duration,
    /// First reconnect delay.
    pub reconnect_delay: Duration,
    /// Largest reconnect delay.
    pub max_reconnect_delay: Duration,
    /// Give up after this many failed reconnects in a row (`None`: never).
    pub max_reconnect_attempts: Option<u32>,
    /// Headers of the upgrade request (the manager's auth headers are added).
    pub headers: BTreeMap<String, String>,
    /// Sent first on every connection (e.g. `{"type":"auth","token":"..."}`).
    pub auth_message: Option<Value>,
    /// Server event names.
    pub event_mapper: SyncEventMapper,
    /// Subscribe to every registered model's endpoint on connect.
    pub subscribe_all_models: bool,
}

impl WebSocketConfig {
    /// Defaults: ping every 15 s, pong within 10 s, reconnect from 250 ms up to 30 s, forever.
    pub fn new(url: impl Into<String>) -> Self {
        WebSocketConfig {
            url: url.into(),
            ping_interval: Duration::from_secs(15),
            pong_timeout: Duration::from_secs(10),
            reconnect_delay: Duration::from_millis(250),
            max_reconnect_delay: Duration::from_secs(30),
            max_reconnect_attempts: None,
            headers: BTreeMap::new(),
            auth_message: None,
            event_mapper: SyncEventMapper::default(),
            subscribe_all_models: true,
        }
    }

    /// Authenticate with an auth message carrying `token` instead of a header.
    #[must_use]
    pub fn auth_token_message(mut self, token: impl Into<String>) -> Self {
        self.auth_message = to_value(&ClientMessage::Auth {
            token: token.into(),
        });
        self
    }
}

/// A handler for server messages of one `type`.
pub type MessageHandler = Arc<dyn Fn(&Value) + Send + Sync>;

pub(crate) enum Command {
    Send(Value),
    Close,
}

/// Shared state of the realtime connection.
pub(crate) struct Realtime {
    pub(crate) config: WebSocketConfig,
    pub(crate) connected: AtomicBool,
    pub(crate) subscriptions: Mutex<BTreeMap<String, Map<String, Value>>>,
    pub(crate) handlers: Mutex<HashMap<String, Vec<MessageHandler>>>,
    pub(crate) commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    pub(crate) cancel: Mutex<Option<CancellationToken>>,
}

impl fmt::Debug for Realtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Realtime")
            .field("url", &self.config.url)
            .field("connected", &self.connected.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Realtime {
    pub(crate) fn new(config: WebSocketConfig) -> Self {
        Realtime {
            config,
            connected: AtomicBool::new(false),
            subscriptions: Mutex::new(BTreeMap::new()),
            handlers: Mutex::new(HashMap::new()),
            commands: Mutex::new(None),
            cancel: Mutex::new(None),
        }
    }

    pub(crate) fn send(&self, message: Value) -> bool {
        match self.commands.lock().ok().and_then(|c| c.clone()) {
            Some(tx) => tx.send(Command::Send(message)).is_ok(),
            None => false,
        }
    }
}

/// A client message as JSON; `None` only if serde fails, which it cannot for these types
/// (strings and string-keyed maps).
fn to_value(message: &ClientMessage) -> Option<Value> {
    serde_json::to_value(message)
        .inspect_err(|err| tracing::error!(error = %err, "cannot encode a WebSocket message"))
        .ok()
}

/// A client message as JSON text (see [`to_value`]).
pub(crate) fn to_text(message: &ClientMessage) -> Option<String> {
    serde_json::to_string(message)
        .inspect_err(|err| tracing::error!(error = %err, "cannot encode a WebSocket message"))
        .ok()
}

/// The message that subscribes to (or unsubscribes from) `channel`.
pub(crate) fn subscription(
    action: SubscriptionAction,
    channel: &str,
    parameters: &Map<String, Value>,
) -> ClientMessage {
    ClientMessage::Subscription {
        data: Subscription {
            action,
            channel: channel.to_owned(),
            parameters: parameters.clone(),
        },
    }
}

/// [`subscription`] as JSON, for the manager's `subscribe`/`unsubscribe`; `action` is
/// `"unsubscribe"` or else subscribes.
pub(crate) fn subscription_message(
    action: &str,
    channel: &str,
    parameters: &Map<String, Value>,
) -> Value {
    let action = if action == "unsubscribe" {
        SubscriptionAction::Unsubscribe
    } else {
        SubscriptionAction::Subscribe
    };
    to_value(&subscription(action, channel, parameters)).unwrap_or(Value::Null)
}

fn backoff(config: &WebSocketConfig, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let ceiling = config
        .reconnect_delay
        .saturating_mul(1u32 << exp.min(20))
        .min(config.max_reconnect_delay);
    // Full jitter, but never less than a tenth of the step so a flapping server is not hammered.
    let secs = ceiling.as_secs_f64() * (0.1 + 0.9 * fastrand::f64());
    Duration::from_secs_f64(secs)
}

/// The connection task: connect, serve, reconnect until closed for good.
pub(crate) async fn run(
    inner: Arc<crate::manager::Inner>,
    realtime: Arc<Realtime>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    cancel: CancellationToken,
    auth_headers: BTreeMap<String, String>,
) {
    let config = realtime.config.clone();
    let mut failures: u32 = 0;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let connected = connect(&config, &auth_headers).await;
        match connected {
            Ok(stream) => {
                failures = 0;
                let outcome = serve(&inner, &realtime, stream, &mut commands, &cancel).await;
                realtime.connected.store(false, Ordering::SeqCst);
                inner.emit_event(SyncEvent::new(SyncEventType::ConnectionClosed));
                if matches!(outcome, Served::ClosedForGood) {
                    break;
                }
            }
            Err(err) => {
                tracing::debug!(url = %config.url, error = %err, "WebSocket connect failed");
            }
        }
        if cancel.is_cancelled() {
            break;
        }
        failures += 1;
        if config
            .max_reconnect_attempts
            .is_some_and(|max| failures > max)
        {
            tracing::warn!(url = %config.url, failures, "giving up reconnecting the WebSocket");
            break;
        }
        inner.emit_event(
            SyncEvent::new(SyncEventType::Reconnecting)
                .with_data(serde_json::json!({ "attempt": failures })),
        );
        let delay = backoff(&config, failures);
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
            // A close request while waiting ends the loop too.
            command = commands.recv() => match command {
                Some(Command::Close) | None => break,
                Some(Command::Send(_)) => {
                    tracing::debug!("WebSocket message dropped: not connected");
                }
            },
        }
    }
    realtime.connected.store(false, Ordering::SeqCst);
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(
    config: &WebSocketConfig,
    auth_headers: &BTreeMap<String, String>,
) -> Result<Socket, String> {
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad WebSocket URL {:?}: {e}", config.url))?;
    for (name, value) in auth_headers.iter().chain(config.headers.iter()) {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header {name:?}: {e}"))?;
        let value = HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
        request.headers_mut().insert(name, value);
    }
    let connect = tokio_tungstenite::connect_async(request);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok((stream, _))) => Ok(stream),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("connect timed out".to_owned()),
    }
}

/// Serves one connection; its change events are applied, in order, by a
/// task of their own that finishes before the next connection starts.
async fn serve(
    inner: &Arc<crate::manager::Inner>,
    realtime: &Arc<Realtime>,
    stream: Socket,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    cancel: &CancellationToken,
) -> Served {
    let (tx, mut rx) = mpsc::unbounded_channel::<(SyncEventType, Value)>();
    let applier_inner = Arc::clone(inner);
    let applier = tokio::spawn(async move {
        while let Some((kind, value)) = rx.recv().await {
            if let Err(err) = apply_event(&applier_inner, kind, &value).await {
                tracing::warn!(error = %err, "skipping a realtime event");
            }
        }
    });
    let served = serve_connection(inner, realtime, stream, commands, cancel, &tx).await;
    drop(tx);
    if let Err(err) = applier.await {
        tracing::error!(error = %err, "the realtime applier task failed");
    }
    served
}

enum Served {
    Lost,
    ClosedForGood,
}

async fn serve_connection(
    inner: &Arc<crate::manager::Inner>,
    realtime: &Arc<Realtime>,
    stream: Socket,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    cancel: &CancellationToken,
    applier: &mpsc::UnboundedSender<(SyncEventType, Value)>,
) -> Served {
    let config = &realtime.config;
    let (mut sink, mut source) = stream.split();
    // Authenticate and subscribe before anything else.
    let mut opening = Vec::new();
    if let Some(auth) = &config.auth_message {
        opening.push(auth.to_string());
    }
    let subscriptions = realtime
        .subscriptions
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    for (channel, parameters) in &subscriptions {
        opening.extend(to_text(&subscription(
            SubscriptionAction::Subscribe,
            channel,
            parameters,
        )));
    }
    for message in opening {
        if sink.send(Message::text(message)).await.is_err() {
            return Served::Lost;
        }
    }
    realtime.connected.store(true, Ordering::SeqCst);
    inner.emit_event(SyncEvent::new(SyncEventType::ConnectionEstablished));
    // Repair the gap: whatever changed while disconnected arrives by pulling from the cursor.
    inner.spawn_catch_up(subscriptions.keys().cloned().collect());

    let mut ping_timer =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    let mut awaiting_pong: Option<Instant> = None;
    loop {
        let pong_deadline = awaiting_pong.map(|sent| sent + config.pong_timeout);
        tokio::select! {
            () = cancel.cancelled() => {
                let _ = sink.send(Message::Close(None)).await;
                return Served::ClosedForGood;
            }
            () = async { match pong_deadline { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                tracing::warn!(url = %config.url, "no pong within the timeout; reconnecting");
                return Served::Lost;
            }
            _ = ping_timer.tick() => {
                if awaiting_pong.is_none() {
                    awaiting_pong = Some(Instant::now());
                }
                if let Some(ping) = to_text(&ClientMessage::Ping) {
                    if sink.send(Message::text(ping)).await.is_err() {
                        return Served::Lost;
                    }
                }
            }
            command = commands.recv() => match command {
                Some(Command::Send(value)) => {
                    if sink.send(Message::text(value.to_string())).await.is_err() {
                        return Served::Lost;
                    }
                }
                Some(Command::Close) | None => {
                    let _ = sink.send(Message::Close(None)).await;
                    return Served::ClosedForGood;
                }
            },
            incoming = source.next() => match incoming {
                None | Some(Err(_)) => return Served::Lost,
                Some(Ok(Message::Text(text))) => {
                    // Only a pong (text or control frame) clears the pong deadline.
                    match serde_json::from_str::<Value>(text.as_str()) {
                        Ok(value) => {
                            if handle_message(realtime, applier, value) == Some(ServerMessage::Pong) {
                                awaiting_pong = None;
                            }
                        }
                        Err(err) => tracing::warn!(error = %err, "skipping a WebSocket message that is not JSON"),
                    }
                }
                Some(Ok(Message::Pong(_))) => awaiting_pong = None,
                Some(Ok(Message::Close(_))) => return Served::Lost,
                Some(Ok(Message::Binary(_))) => tracing::warn!("skipping a binary WebSocket message"),
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Applies a change event delivered by a remote (not by the realtime
/// connection); other messages are ignored.
pub(crate) async fn apply_change_message(
    inner: &Arc<crate::manager::Inner>,
    mapper: &SyncEventMapper,
    value: &Value,
) {
    let Some(name) = value.get("event").and_then(Value::as_str) else {
        return;
    };
    match mapper.event_type(name) {
        Some(
            kind @ (SyncEventType::ModelAdded
            | SyncEventType::ModelUpdated
            | SyncEventType::ModelDeleted),
        ) => {
            if let Err(err) = apply_event(inner, kind, value).await {
                tracing::warn!(error = %err, event = name, "skipping a change event");
            }
        }
        _ => tracing::debug!(event = name, "ignoring an unknown change event"),
    }
}

/// Hands a change event to the applier and a control message to its handlers; returns the
/// control message as far as this version knows it (`None` for events and messages that are
/// not control messages).
fn handle_message(
    realtime: &Arc<Realtime>,
    applier: &mpsc::UnboundedSender<(SyncEventType, Value)>,
    value: Value,
) -> Option<ServerMessage> {
    if let Some(name) = value.get("event").and_then(Value::as_str) {
        let kind = realtime.config.event_mapper.event_type(name);
        match kind {
            Some(
                kind @ (SyncEventType::ModelAdded
                | SyncEventType::ModelUpdated
                | SyncEventType::ModelDeleted),
            ) => {
                // Applied in order by the connection's applier task, so the
                // socket keeps answering pings while an apply waits for a sync.
                let _ = applier.send((kind, value.clone()));
            }
            _ => {
                // Unknown or non-data events go to handlers registered for their name.
                if !dispatch(realtime, name, &value) {
                    tracing::debug!(event = name, "no handler for this realtime event");
                }
            }
        }
        return None;
    }
    // Control messages are small; a type this version does not know reads as `Unknown`.
    let message = ServerMessage::deserialize(&value)
        .inspect_err(
            |err| tracing::debug!(error = %err, "a WebSocket message this client cannot read"),
        )
        .ok();
    if let Some(ServerMessage::Error { message }) = &message {
        tracing::warn!(message = %message, "the WebSocket server reported an error");
    }
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    dispatch(realtime, kind, &value);
    message
}

fn dispatch(realtime: &Realtime, kind: &str, value: &Value) -> bool {
    let handlers: Vec<MessageHandler> = realtime
        .handlers
        .lock()
        .ok()
        .and_then(|h| h.get(kind).cloned())
        .unwrap_or_default();
    for handler in &handlers {
        handler(value);
    }
    !handlers.is_empty()
}

async fn apply_event(
    inner: &Arc<crate::manager::Inner>,
    kind: SyncEventType,
    value: &Value,
) -> Result<(), String> {
    let collection = value
        .get("collection")
        .and_then(Value::as_str)
        .ok_or("event without `collection`")?;
    let route = inner
        .route_for_endpoint(collection)
        .ok_or_else(|| format!("event for unknown collection `{collection}`"))?;
    let mut data = match value.get("data") {
        Some(Value::Object(object)) => object.clone(),
        Some(Value::Null) | None => Map::new(),
        Some(_) => return Err("event `data` is not an object".into()),
    };
    if let Some(id) = value.get(ID_KEY) {
        data.entry(ID_KEY.to_owned()).or_insert_with(|| id.clone());
    }
    if let Some(version) = value.get(VERSION_KEY) {
        data.insert(VERSION_KEY.to_owned(), version.clone());
    }
    let mut record = parse_remote_record(route.schema, data).map_err(|e| e.to_string())?;
    if kind == SyncEventType::ModelDeleted {
        record.deleted = true;
    }
    if let Some(crypto) = &inner.crypto {
        match crate::crypto::open_event_record(crypto, route.schema.model_type, record).await {
            Some(opened) => record = opened,
            // Kept and reported; the local copy stays as it is.
            None => return Ok(()),
        }
    }
    let mut report = SyncReport::default();
    inner
        .apply_remote_outside_run(&route, vec![record], &mut report)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backoff_grows_is_capped_and_jittered() {
        let mut config = WebSocketConfig::new("ws://127.0.0.1:1/ws");
        config.reconnect_delay = Duration::from_millis(100);
        config.max_reconnect_delay = Duration::from_millis(1_000);
        for (attempt, ceiling) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (40, 1_000),
        ] {
            let ceiling = Duration::from_millis(ceiling);
            let samples: Vec<Duration> = (0..200).map(|_| backoff(&config, attempt)).collect();
            for d in &samples {
                assert!(
                    *d <= ceiling && *d >= ceiling / 10,
                    "attempt {attempt}: {d:?}"
                );
            }
            // Jitter: the delays are spread, not one value.
            let (min, max) = (samples.iter().min().unwrap(), samples.iter().max().unwrap());
            assert!(
                *max - *min > ceiling / 4,
                "attempt {attempt}: {min:?}..{max:?}"
            );
        }
    }

    #[test]
    fn client_messages_keep_their_wire_shape() {
        let parameters = match serde_json::json!({"done": "false"}) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        assert_eq!(
            subscription_message("subscribe", "todos", &parameters),
            serde_json::json!({"type": "subscription", "data": {"action": "subscribe", "channel": "todos", "parameters": {"done": "false"}}})
        );
        assert_eq!(
            subscription_message("unsubscribe", "todos", &Map::new()),
            serde_json::json!({"type": "subscription", "data": {"action": "unsubscribe", "channel": "todos", "parameters": {}}})
        );
        assert_eq!(
            WebSocketConfig::new("ws://x/ws")
                .auth_token_message("t0k")
                .auth_message,
            Some(serde_json::json!({"type": "auth", "token": "t0k"}))
        );
        assert_eq!(
            to_text(&ClientMessage::Ping).as_deref(),
            Some(r#"{"type":"ping"}"#)
        );
    }

    #[test]
    fn event_names_map_both_ways() {
        let mapper = SyncEventMapper::new().map("todo.new", SyncEventType::ModelAdded);
        assert_eq!(
            mapper.event_type("todo.new"),
            Some(SyncEventType::ModelAdded)
        );
        assert_eq!(
            mapper.event_type("item_created"),
            Some(SyncEventType::ModelAdded)
        );
        assert_eq!(mapper.event_type("nope"), None);
        // Alphabetically first of the names that map to it.
        assert_eq!(
            mapper.name_of(SyncEventType::ModelAdded),
            Some("item_created")
        );
        assert_eq!(
            mapper.name_of(SyncEventType::ModelDeleted),
            Some("item_deleted")
        );
        assert_eq!(mapper.name_of(SyncEventType::SyncStarted), None);
    }
}
