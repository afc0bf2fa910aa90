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
use serde_json::{Map, Value};
use sync_protocol::{ClientMessage, ID_KEY, VERSION_KEY};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::connectivity::Observation;
use crate::events::{SyncEvent, SyncEventType, SyncReport};
use crate::remote::parse_remote_record;
use crate::ws_driver::{Driver, Session};

/// Maps the names of server events to [`SyncEventType`]s (incoming), and [`SyncEventType`]s to
/// the names the client sends ([`RealtimeHandle::send_event`](crate::RealtimeHandle::send_event),
/// outgoing). The two maps are separate, so a backend that names what it sends and what it
/// receives differently is configured as it is.
///
/// Incoming: an event mapped to `ModelAdded`, `ModelUpdated` or `ModelDeleted` is a change
/// of a record and is applied like a pulled one; an event mapped to any other kind
/// (`sync_completed`, `conflict_detected`, ...) is emitted as
/// [`SyncEvent::ServerEvent`] of that kind; an unmapped one goes to the handlers of its name
/// ([`RealtimeHandle::on_message`](crate::RealtimeHandle::on_message)).
///
/// The defaults, both ways: `item_created` / `item_updated` / `item_deleted` for the model
/// kinds, and `sync_started`, `sync_completed`, `sync_failed`, `conflict_detected`,
/// `conflict_resolved` for those kinds.
///
/// ```
/// use sync_core::{SyncEventMapper, SyncEventType};
///
/// let mapper = SyncEventMapper::new()
///     .map("todo.new", SyncEventType::ModelAdded)
///     .map_outgoing(SyncEventType::SyncCompleted, "client.synced");
/// assert_eq!(mapper.event_type("todo.new"), Some(SyncEventType::ModelAdded));
/// assert_eq!(mapper.event_type("item_created"), Some(SyncEventType::ModelAdded));
/// assert_eq!(mapper.outgoing_name(SyncEventType::SyncCompleted), Some("client.synced"));
/// assert_eq!(mapper.event_type("client.synced"), None);
/// ```
#[derive(Debug, Clone)]
pub struct SyncEventMapper {
    incoming: HashMap<String, SyncEventType>,
    outgoing: HashMap<SyncEventType, String>,
}

/// The default names, the same both ways.
const DEFAULT_NAMES: [(&str, SyncEventType); 8] = [
    ("item_created", SyncEventType::ModelAdded),
    ("item_updated", SyncEventType::ModelUpdated),
    ("item_deleted", SyncEventType::ModelDeleted),
    ("sync_started", SyncEventType::SyncStarted),
    ("sync_completed", SyncEventType::SyncCompleted),
    ("sync_failed", SyncEventType::SyncFailed),
    ("conflict_detected", SyncEventType::ConflictDetected),
    ("conflict_resolved", SyncEventType::ConflictResolved),
];

impl Default for SyncEventMapper {
    fn default() -> Self {
        SyncEventMapper {
            incoming: DEFAULT_NAMES
                .iter()
                .map(|(name, kind)| ((*name).to_owned(), *kind))
                .collect(),
            outgoing: DEFAULT_NAMES
                .iter()
                .map(|(name, kind)| (*kind, (*name).to_owned()))
                .collect(),
        }
    }
}

impl SyncEventMapper {
    /// The default mapping.
    pub fn new() -> Self {
        SyncEventMapper::default()
    }

    /// Reads the server event `name` as `kind` (added to or replacing the defaults).
    #[must_use]
    pub fn map(mut self, name: impl Into<String>, kind: SyncEventType) -> Self {
        self.incoming.insert(name.into(), kind);
        self
    }

    /// Sends `kind` under `name` (replacing the default name of `kind`).
    #[must_use]
    pub fn map_outgoing(mut self, kind: SyncEventType, name: impl Into<String>) -> Self {
        self.outgoing.insert(kind, name.into());
        self
    }

    /// The event type of a server event name, if known.
    pub fn event_type(&self, name: &str) -> Option<SyncEventType> {
        self.incoming.get(name).copied()
    }

    /// The name `kind` is sent under, if it has one.
    pub fn outgoing_name(&self, kind: SyncEventType) -> Option<&str> {
        self.outgoing.get(&kind).map(String::as_str)
    }
}

/// The shape of the messages on the realtime socket, by the names of their fields: what the
/// client sends to subscribe, unsubscribe and ping, how it knows a pong, and where it reads a
/// change event's name, collection, id, version and record. The default is sync-server's
/// protocol; a backend with its own names is configured here (event names are the
/// [`SyncEventMapper`]'s, the auth message is [`WebSocketConfig::auth_message`]).
///
/// Requests and responses of [`WebSocketRemote`](crate::WebSocketRemote) keep sync-server's
/// envelope (`{"type":"request","id",...}`), since only sync-server answers them.
///
/// ```
/// use sync_core::{MessageFormat, WebSocketConfig};
///
/// // {"op":"sub","topic":"todos","filter":{..}} / {"op":"unsub","topic":"todos"},
/// // {"op":"hb"} answered {"op":"hb_ack"},
/// // events {"kind":"created","table":"todos","key":"t1","rev":3,"row":{..}}.
/// let mut format = MessageFormat::default();
/// format.type_key = "op".into();
/// format.ping_type = "hb".into();
/// format.pong_type = "hb_ack".into();
/// format.subscribe_type = "sub".into();
/// format.unsubscribe_type = "unsub".into();
/// format.subscription_body_key = None;
/// format.action_key = None;
/// format.channel_key = "topic".into();
/// format.parameters_key = Some("filter".into());
/// format.event_key = "kind".into();
/// format.collection_key = "table".into();
/// format.id_key = "key".into();
/// format.version_key = "rev".into();
/// format.data_key = "row".into();
/// let mut config = WebSocketConfig::new("wss://example.com/live");
/// config.format = format;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageFormat {
    /// The field that names a control message's kind (`"type"`): written in pings and
    /// subscriptions, read to know a pong and to pick the handlers of
    /// [`RealtimeHandle::on_message`](crate::RealtimeHandle::on_message).
    pub type_key: String,
    /// The kind of the ping the client sends every `ping_interval` (`"ping"`).
    pub ping_type: String,
    /// The kind of the server's answer to a ping (`"pong"`).
    pub pong_type: String,
    /// The kind of the server's acknowledgement of a subscription, which names the channel
    /// under [`channel_key`](Self::channel_key) (`Some("subscribed")`); `None` for a server
    /// that does not acknowledge. After a (re)connect the catch-up pull waits for the
    /// acknowledgements of the opening subscriptions (at most `pong_timeout`), so no change
    /// falls between the pull and the subscription.
    pub subscribed_type: Option<String>,
    /// The kind of a subscribe message (`"subscription"`).
    pub subscribe_type: String,
    /// The kind of an unsubscribe message (`"subscription"`: the action tells them apart).
    pub unsubscribe_type: String,
    /// Where a subscription's fields (action, channel, parameters) go: under this field
    /// (`Some("data")`), or beside the kind (`None`).
    pub subscription_body_key: Option<String>,
    /// The field of the action (`Some("action")`); `None` sends no action (the kind tells).
    pub action_key: Option<String>,
    /// The action that subscribes (`"subscribe"`).
    pub subscribe_action: String,
    /// The action that unsubscribes (`"unsubscribe"`).
    pub unsubscribe_action: String,
    /// The field of the channel, a model's endpoint (`"channel"`).
    pub channel_key: String,
    /// The field of the subscription parameters (`Some("parameters")`); `None` puts each
    /// parameter beside the channel.
    pub parameters_key: Option<String>,
    /// The field of a change event's name (`"event"`), mapped by the [`SyncEventMapper`]. A
    /// message with this field is an event, never a control message.
    pub event_key: String,
    /// The field of an event's collection, a model's endpoint (`"collection"`).
    pub collection_key: String,
    /// The field of an event's record id (`"id"`), used when the record does not carry it.
    pub id_key: String,
    /// The field of an event's record version (`"version"`).
    pub version_key: String,
    /// The field of an event's record (`"data"`). An event without it (or with `null`) names
    /// the record by id only: the client fetches it.
    pub data_key: String,
}

impl Default for MessageFormat {
    fn default() -> Self {
        MessageFormat {
            type_key: "type".into(),
            ping_type: "ping".into(),
            pong_type: "pong".into(),
            subscribed_type: Some("subscribed".into()),
            subscribe_type: "subscription".into(),
            unsubscribe_type: "subscription".into(),
            subscription_body_key: Some("data".into()),
            action_key: Some("action".into()),
            subscribe_action: "subscribe".into(),
            unsubscribe_action: "unsubscribe".into(),
            channel_key: "channel".into(),
            parameters_key: Some("parameters".into()),
            event_key: "event".into(),
            collection_key: "collection".into(),
            id_key: "id".into(),
            version_key: "version".into(),
            data_key: "data".into(),
        }
    }
}

impl MessageFormat {
    /// The ping message.
    pub fn ping(&self) -> Value {
        let mut message = Map::new();
        message.insert(self.type_key.clone(), Value::String(self.ping_type.clone()));
        Value::Object(message)
    }

    /// True for the server's answer to a ping (an event never is one).
    pub fn is_pong(&self, message: &Value) -> bool {
        message.get(&self.event_key).is_none()
            && message.get(&self.type_key).and_then(Value::as_str) == Some(&self.pong_type)
    }

    /// The message that subscribes to `channel` with `parameters`.
    pub fn subscribe(&self, channel: &str, parameters: &Map<String, Value>) -> Value {
        self.subscription(true, channel, parameters)
    }

    /// The message that unsubscribes from `channel`.
    pub fn unsubscribe(&self, channel: &str) -> Value {
        self.subscription(false, channel, &Map::new())
    }

    fn subscription(
        &self,
        subscribe: bool,
        channel: &str,
        parameters: &Map<String, Value>,
    ) -> Value {
        let (kind, action) = if subscribe {
            (&self.subscribe_type, &self.subscribe_action)
        } else {
            (&self.unsubscribe_type, &self.unsubscribe_action)
        };
        let mut body = Map::new();
        if let Some(key) = &self.action_key {
            body.insert(key.clone(), Value::String(action.clone()));
        }
        body.insert(self.channel_key.clone(), Value::String(channel.to_owned()));
        match &self.parameters_key {
            Some(key) => {
                body.insert(key.clone(), Value::Object(parameters.clone()));
            }
            None => body.extend(parameters.iter().map(|(k, v)| (k.clone(), v.clone()))),
        }
        let mut message = match &self.subscription_body_key {
            Some(key) => {
                let mut message = Map::new();
                message.insert(key.clone(), Value::Object(body));
                message
            }
            None => body,
        };
        message.insert(self.type_key.clone(), Value::String(kind.clone()));
        Value::Object(message)
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
    /// Event names, incoming and outgoing.
    pub event_mapper: SyncEventMapper,
    /// The field names of subscriptions, pings, pongs and events (default: sync-server's).
    pub format: MessageFormat,
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
            format: MessageFormat::default(),
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
    /// `auth`: the manager's token provider, if any (a bearer token on every upgrade).
    pub(crate) fn new(
        config: WebSocketConfig,
        headers: BTreeMap<String, String>,
        auth: Option<Arc<crate::auth::TokenAuth>>,
    ) -> Self {
        Realtime {
            driver: Arc::new(Driver::new(config, headers).with_auth(auth)),
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
    /// The subscriptions of the connection's opening frames the server has not acknowledged
    /// yet, and who waits for them.
    unacknowledged: Mutex<Option<Unacknowledged>>,
}

struct Unacknowledged {
    channels: std::collections::HashSet<String>,
    all_done: Option<tokio::sync::oneshot::Sender<()>>,
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
            unacknowledged: Mutex::new(None),
        }
    }
}

impl RealtimeSession {
    /// Counts a subscription acknowledgement of the opening frames.
    fn acknowledge(&self, message: &Value) {
        let format = &self.realtime.config().format;
        let Some(subscribed) = &format.subscribed_type else {
            return;
        };
        if message.get(&format.type_key).and_then(Value::as_str) != Some(subscribed.as_str()) {
            return;
        }
        let Some(channel) = message.get(&format.channel_key).and_then(Value::as_str) else {
            return;
        };
        if let Ok(mut slot) = self.unacknowledged.lock() {
            if let Some(waiting) = slot.as_mut() {
                waiting.channels.remove(channel);
                if waiting.channels.is_empty() {
                    if let Some(done) = waiting.all_done.take() {
                        let _ = done.send(());
                    }
                    *slot = None;
                }
            }
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
        let realtime = Arc::clone(&self.realtime);
        let subscribed = channels.clone();
        let task = tokio::spawn(async move {
            let format = &realtime.config().format;
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
                if let Err(err) = take_event(&inner, format, kind, &value).await {
                    tracing::warn!(error = %err, "skipping a realtime event");
                }
            }
        });
        if let Ok(mut slot) = self.applier.lock() {
            *slot = Some(Applier { queue, task });
        }
        self.inner.connectivity.observe(Observation::Answered);
        self.inner.emit_event(SyncEvent::ConnectionEstablished);
        // Repair the gap: whatever changed while disconnected arrives by pulling from the
        // cursor. The pull starts once the server acknowledged the subscriptions (when its
        // format has acknowledgements): a change committed after a pull that started earlier
        // but before the server took the subscription would come neither way.
        let config = self.realtime.config();
        if config.format.subscribed_type.is_none() || channels.is_empty() {
            self.inner.spawn_catch_up(channels);
            return;
        }
        let (all_done, acknowledged) = tokio::sync::oneshot::channel();
        if let Ok(mut slot) = self.unacknowledged.lock() {
            *slot = Some(Unacknowledged {
                channels: channels.iter().cloned().collect(),
                all_done: Some(all_done),
            });
        }
        let inner = Arc::clone(&self.inner);
        // A server that refuses a subscription never acknowledges it: pull anyway.
        let wait = config.pong_timeout;
        let handle = tokio::spawn(async move {
            let _ = tokio::time::timeout(wait, acknowledged).await;
            inner.spawn_catch_up(channels);
        });
        self.inner.track(handle);
    }

    fn received(&self, message: Value, _size: u64) {
        self.acknowledge(&message);
        let queue = self
            .applier
            .lock()
            .ok()
            .and_then(|a| a.as_ref().map(|a| a.queue.clone()));
        handle_message(&self.realtime, queue.as_ref(), message);
    }

    async fn closed(&self) {
        // Whoever waits for acknowledgements pulls now.
        if let Ok(mut slot) = self.unacknowledged.lock() {
            *slot = None;
        }
        let applier = self.applier.lock().ok().and_then(|mut a| a.take());
        if let Some(Applier { queue, task }) = applier {
            drop(queue);
            if let Err(err) = task.await {
                tracing::error!(error = %err, "the realtime applier task failed");
            }
        }
        // The server may be gone: the connectivity probes it.
        self.inner.connectivity.observe(Observation::Failed);
        self.inner.emit_event(SyncEvent::ConnectionClosed);
    }

    fn reconnecting(&self, attempt: u32) {
        self.inner.emit_event(SyncEvent::Reconnecting { attempt });
    }
}

/// Takes an event delivered by a remote's change feed (not by the realtime connection):
/// a change is applied, another mapped event emitted; other messages are ignored.
pub(crate) async fn apply_change_message(
    inner: &Arc<crate::manager::Inner>,
    mapper: &SyncEventMapper,
    format: &MessageFormat,
    value: &Value,
) {
    let Some(name) = value.get(&format.event_key).and_then(Value::as_str) else {
        return;
    };
    match mapper.event_type(name) {
        Some(kind) => {
            if let Err(err) = take_event(inner, format, kind, value).await {
                tracing::warn!(error = %err, event = name, "skipping a change event");
            }
        }
        None => tracing::debug!(event = name, "ignoring an unknown change event"),
    }
}

fn is_change(kind: SyncEventType) -> bool {
    matches!(
        kind,
        SyncEventType::ModelAdded | SyncEventType::ModelUpdated | SyncEventType::ModelDeleted
    )
}

/// Hands an event the mapper knows to the applier (in order: changes and the other events
/// the server sends between them), and a control message or an unknown event to the handlers
/// of its kind or name.
fn handle_message(realtime: &Realtime, applier: Option<&Offer>, value: Value) {
    let config = realtime.config();
    let format = &config.format;
    if let Some(name) = value.get(&format.event_key).and_then(Value::as_str) {
        match config.event_mapper.event_type(name) {
            Some(kind) => {
                // Applied or emitted in order by the connection's applier task, so the socket
                // keeps answering pings while an apply waits for a sync.
                if !is_change(kind) {
                    dispatch(realtime, name, &value);
                }
                if let Some(applier) = applier {
                    applier.offer(kind, value);
                }
            }
            None => {
                if !dispatch(realtime, name, &value) {
                    tracing::debug!(event = name, "no handler for this realtime event");
                }
            }
        }
        return;
    }
    let kind = value
        .get(&format.type_key)
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind == "error" {
        let message = value.get("message").and_then(Value::as_str).unwrap_or("");
        tracing::warn!(message = %message, "the WebSocket server reported an error");
    }
    dispatch(realtime, kind, &value);
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

/// A change event is applied; any other event the mapper knows is emitted as a
/// [`SyncEvent::ServerEvent`].
async fn take_event(
    inner: &Arc<crate::manager::Inner>,
    format: &MessageFormat,
    kind: SyncEventType,
    value: &Value,
) -> Result<(), String> {
    if is_change(kind) {
        return apply_event(inner, format, kind, value).await;
    }
    let text = |key: &str| value.get(key).and_then(id_text);
    let model_type = value
        .get(&format.collection_key)
        .and_then(Value::as_str)
        .and_then(|collection| inner.route_for_endpoint(collection))
        .map(|route| route.schema.model_type);
    inner.emit_event(SyncEvent::ServerEvent {
        kind,
        name: text(&format.event_key).unwrap_or_default(),
        model_type,
        id: text(&format.id_key),
        message: match value {
            Value::Object(object) => object.clone(),
            _ => Map::new(),
        },
    });
    Ok(())
}

/// A record id as the wire may write it: a string, or a number.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

async fn apply_event(
    inner: &Arc<crate::manager::Inner>,
    format: &MessageFormat,
    kind: SyncEventType,
    value: &Value,
) -> Result<(), String> {
    let collection = value
        .get(&format.collection_key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("event without `{}`", format.collection_key))?;
    let route = inner
        .route_for_endpoint(collection)
        .ok_or_else(|| format!("event for unknown collection `{collection}`"))?;
    let event_id = value.get(&format.id_key);
    let mut data = match value.get(&format.data_key) {
        Some(Value::Object(object)) => object.clone(),
        Some(Value::Null) | None if kind != SyncEventType::ModelDeleted => {
            // The event names the record without carrying it.
            let id = event_id.and_then(id_text).ok_or_else(|| {
                format!("event without `{}` or `{}`", format.data_key, format.id_key)
            })?;
            return fetch_and_apply(inner, &route, &id).await;
        }
        Some(Value::Null) | None => Map::new(),
        Some(_) => return Err(format!("event `{}` is not an object", format.data_key)),
    };
    if let Some(id) = event_id {
        data.entry(ID_KEY.to_owned()).or_insert_with(|| id.clone());
    }
    if let Some(version) = value.get(&format.version_key) {
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

/// The record an id-only event names, fetched and applied like a pulled record: the same
/// conflict-aware path, so a pending local edit meets it as a conflict and is never
/// overwritten silently. When it cannot be had (the remote has none, or the fetch failed), a
/// catch-up pull of the model brings whatever changed.
async fn fetch_and_apply(
    inner: &Arc<crate::manager::Inner>,
    route: &Arc<crate::remote::ModelRoute>,
    id: &str,
) -> Result<(), String> {
    match inner.remote.fetch(route, id).await {
        Ok(Some(record)) => {
            let mut report = SyncReport::default();
            inner
                .apply_remote_outside_run(route, vec![record], &mut report)
                .await
                .map_err(|e| e.to_string())
        }
        Ok(None) => {
            inner.spawn_catch_up(vec![route.endpoint.clone()]);
            Ok(())
        }
        Err(err) => {
            inner.spawn_catch_up(vec![route.endpoint.clone()]);
            Err(format!("fetching `{id}`, named by an event: {err}"))
        }
    }
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
    fn event_names_map_both_ways_each_with_its_own_map() {
        let mapper = SyncEventMapper::new()
            .map("todo.new", SyncEventType::ModelAdded)
            .map_outgoing(SyncEventType::ModelAdded, "client.created");
        assert_eq!(
            mapper.event_type("todo.new"),
            Some(SyncEventType::ModelAdded)
        );
        assert_eq!(
            mapper.event_type("item_created"),
            Some(SyncEventType::ModelAdded)
        );
        assert_eq!(mapper.event_type("client.created"), None);
        assert_eq!(mapper.event_type("nope"), None);
        assert_eq!(
            mapper.outgoing_name(SyncEventType::ModelAdded),
            Some("client.created")
        );
        assert_eq!(
            mapper.outgoing_name(SyncEventType::ModelDeleted),
            Some("item_deleted")
        );
        for (name, kind) in [
            ("sync_completed", SyncEventType::SyncCompleted),
            ("conflict_detected", SyncEventType::ConflictDetected),
        ] {
            assert_eq!(mapper.event_type(name), Some(kind));
            assert_eq!(mapper.outgoing_name(kind), Some(name));
        }
        assert_eq!(mapper.outgoing_name(SyncEventType::Reconnecting), None);
    }

    #[test]
    fn the_default_format_writes_the_protocol_messages() {
        let format = MessageFormat::default();
        let parameters = match serde_json::json!({"done": "false"}) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let typed = |message: ClientMessage| serde_json::to_value(message).ok();
        assert_eq!(
            Some(format.subscribe("todos", &parameters)),
            typed(ClientMessage::subscribe("todos", parameters.clone()))
        );
        assert_eq!(
            format.unsubscribe("todos"),
            serde_json::json!({"type": "subscription", "data": {"action": "unsubscribe", "channel": "todos", "parameters": {}}})
        );
        assert_eq!(Some(format.ping()), typed(ClientMessage::Ping));
        assert!(format.is_pong(&serde_json::json!({"type": "pong"})));
        assert!(!format.is_pong(&serde_json::json!({"type": "ping"})));
        assert!(!format.is_pong(&serde_json::json!({"type": "pong", "event": "item_created"})));
    }

    #[test]
    fn a_custom_format_writes_flat_messages() {
        let format = MessageFormat {
            type_key: "op".into(),
            ping_type: "hb".into(),
            pong_type: "hb_ack".into(),
            subscribe_type: "sub".into(),
            unsubscribe_type: "unsub".into(),
            subscription_body_key: None,
            action_key: None,
            channel_key: "topic".into(),
            parameters_key: None,
            ..MessageFormat::default()
        };
        let parameters = match serde_json::json!({"owner": "me", "op": "not the kind"}) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        assert_eq!(
            format.subscribe("todos", &parameters),
            serde_json::json!({"op": "sub", "topic": "todos", "owner": "me"})
        );
        assert_eq!(
            format.unsubscribe("todos"),
            serde_json::json!({"op": "unsub", "topic": "todos"})
        );
        assert_eq!(format.ping(), serde_json::json!({"op": "hb"}));
        assert!(format.is_pong(&serde_json::json!({"op": "hb_ack"})));
        assert!(!format.is_pong(&serde_json::json!({"type": "pong"})));
    }
}
