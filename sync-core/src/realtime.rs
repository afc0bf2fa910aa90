//! Realtime updates over WebSocket: the session that applies change events, dispatches
//! control messages to handlers and repairs the gap of a reconnect by pulling. Keeping the
//! connection alive (heartbeat, reconnect with backoff, re-authentication, re-subscription)
//! is `ws_driver.rs`'s, shared with `WebSocketRemote`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value};
use sync_protocol::{ClientMessage, ServerMessage, ID_KEY, VERSION_KEY};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::{SyncEvent, SyncEventType, SyncReport};
use crate::remote::parse_remote_record;
use crate::ws_driver::{Driver, Session};

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
#[non_exhaustive]
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
    /// Change events waiting to be applied, at most (default 1,024). When a server sends
    /// faster than the store applies, the waiting events are dropped and a catch-up pull
    /// fetches what they carried (`SyncEvent::RealtimeOverflow` says so), so memory stays
    /// bounded and nothing is lost.
    pub max_queued_events: usize,
    /// The largest message read from the socket (default 64 MiB); a larger one closes the
    /// connection (a reconnect and a catch-up pull follow).
    pub max_message_bytes: usize,
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
            max_queued_events: 1024,
            max_message_bytes: 64 * 1024 * 1024,
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

/// The manager's realtime connection: the [`Driver`] that keeps it alive, the handlers of
/// control messages, and the token of the running driver task.
pub(crate) struct Realtime {
    pub(crate) driver: Arc<Driver>,
    pub(crate) handlers: Mutex<HashMap<String, Vec<MessageHandler>>>,
    /// The running driver task's token; cancelled (or `None`) when none runs.
    pub(crate) running: Mutex<Option<CancellationToken>>,
}

impl fmt::Debug for Realtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Realtime")
            .field("driver", &self.driver)
            .finish_non_exhaustive()
    }
}

impl Realtime {
    /// `headers` (the manager's auth headers) go on every upgrade request, before the config's.
    pub(crate) fn new(config: WebSocketConfig, headers: BTreeMap<String, String>) -> Self {
        Realtime {
            driver: Arc::new(Driver::new(config, headers)),
            handlers: Mutex::new(HashMap::new()),
            running: Mutex::new(None),
        }
    }

    pub(crate) fn config(&self) -> &WebSocketConfig {
        self.driver.config()
    }
}

/// A client message as JSON; `None` only if serde fails, which it cannot for these types
/// (strings and string-keyed maps).
fn to_value(message: &ClientMessage) -> Option<Value> {
    serde_json::to_value(message)
        .inspect_err(|err| tracing::error!(error = %err, "cannot encode a WebSocket message"))
        .ok()
}

/// The realtime session on one connection after another: change events are applied in order
/// by an applier task of the connection's own, which finishes before the next connection
/// starts, so the socket keeps answering pings while an apply waits for a sync.
pub(crate) struct RealtimeSession {
    inner: Arc<crate::manager::Inner>,
    realtime: Arc<Realtime>,
    applier: Mutex<Option<Applier>>,
}

struct Applier {
    queue: Offer,
    task: tokio::task::JoinHandle<()>,
}

/// The bounded way into a connection's applier.
#[derive(Clone)]
pub(crate) struct Offer {
    queue: mpsc::Sender<(SyncEventType, Value)>,
    /// Events dropped because the queue was full, since the applier last looked.
    dropped: Arc<AtomicU64>,
}

impl Offer {
    fn offer(&self, kind: SyncEventType, value: Value) {
        match self.queue.try_send((kind, value)) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

impl RealtimeSession {
    pub(crate) fn new(inner: Arc<crate::manager::Inner>, realtime: Arc<Realtime>) -> Self {
        RealtimeSession {
            inner,
            realtime,
            applier: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Session for RealtimeSession {
    async fn opened(&self, channels: Vec<String>) {
        let capacity = self.realtime.config().max_queued_events.max(1);
        let (queue, mut rx) = mpsc::channel::<(SyncEventType, Value)>(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let queue = Offer {
            queue,
            dropped: Arc::clone(&dropped),
        };
        let inner = Arc::clone(&self.inner);
        let subscribed = channels.clone();
        let task = tokio::spawn(async move {
            while let Some((kind, value)) = rx.recv().await {
                let overflowed = dropped.swap(0, Ordering::SeqCst);
                if overflowed > 0 {
                    // The server sends faster than the store applies: drop the backlog (this
                    // event included) and pull instead, which fetches all it carried.
                    let mut discarded = overflowed.saturating_add(1);
                    while rx.try_recv().is_ok() {
                        discarded = discarded.saturating_add(1);
                    }
                    tracing::warn!(
                        dropped = discarded,
                        "realtime events arrived faster than they were applied; pulling instead"
                    );
                    inner.emit_event(SyncEvent::RealtimeOverflow { dropped: discarded });
                    inner.spawn_catch_up(subscribed.clone());
                    continue;
                }
                if let Err(err) = apply_event(&inner, kind, &value).await {
                    tracing::warn!(error = %err, "skipping a realtime event");
                }
            }
        });
        if let Ok(mut slot) = self.applier.lock() {
            *slot = Some(Applier { queue, task });
        }
        self.inner.emit_event(SyncEvent::ConnectionEstablished);
        // Repair the gap: whatever changed while disconnected arrives by pulling from the cursor.
        self.inner.spawn_catch_up(channels);
    }

    fn received(&self, message: Value, _size: u64) {
        let queue = self
            .applier
            .lock()
            .ok()
            .and_then(|a| a.as_ref().map(|a| a.queue.clone()));
        handle_message(&self.realtime, queue.as_ref(), message);
    }

    async fn closed(&self) {
        let applier = self.applier.lock().ok().and_then(|mut a| a.take());
        if let Some(Applier { queue, task }) = applier {
            drop(queue);
            if let Err(err) = task.await {
                tracing::error!(error = %err, "the realtime applier task failed");
            }
        }
        self.inner.emit_event(SyncEvent::ConnectionClosed);
    }

    fn reconnecting(&self, attempt: u32) {
        self.inner.emit_event(SyncEvent::Reconnecting { attempt });
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
    realtime: &Realtime,
    applier: Option<&Offer>,
    value: Value,
) -> Option<ServerMessage> {
    if let Some(name) = value.get("event").and_then(Value::as_str) {
        let kind = realtime.config().event_mapper.event_type(name);
        match kind {
            Some(
                kind @ (SyncEventType::ModelAdded
                | SyncEventType::ModelUpdated
                | SyncEventType::ModelDeleted),
            ) => {
                // Applied in order by the connection's applier task, so the
                // socket keeps answering pings while an apply waits for a sync.
                if let Some(applier) = applier {
                    applier.offer(kind, value.clone());
                }
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
    fn the_auth_token_message_keeps_its_wire_shape() {
        assert_eq!(
            WebSocketConfig::new("ws://x/ws")
                .auth_token_message("t0k")
                .auth_message,
            Some(serde_json::json!({"type": "auth", "token": "t0k"}))
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
