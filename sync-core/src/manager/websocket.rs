//! The manager's realtime WebSocket, behind one handle: connect, close, subscriptions,
//! messages.

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::SyncManager;
use crate::engine::Inner;
use crate::error::{Error, Result};
use crate::events::SyncEventType;
use crate::realtime::{MessageHandler, Realtime, RealtimeSession};

/// The realtime connection of a [`SyncManager`] configured with
/// [`websocket`](crate::SyncManagerBuilder::websocket); from [`SyncManager::realtime`].
/// Cheap to clone; every clone drives the same connection.
#[derive(Clone)]
pub struct RealtimeHandle {
    inner: Arc<Inner>,
    realtime: Arc<Realtime>,
}

impl fmt::Debug for RealtimeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealtimeHandle")
            .field("realtime", &self.realtime)
            .finish_non_exhaustive()
    }
}

impl SyncManager {
    /// The realtime connection; an error if the builder was given no
    /// [`websocket`](crate::SyncManagerBuilder::websocket) configuration.
    pub fn realtime(&self) -> Result<RealtimeHandle> {
        let realtime = self.inner.realtime.as_ref().ok_or_else(|| {
            Error::Config(
                "no WebSocket configured: add .websocket(WebSocketConfig::new(url)) to the builder"
                    .into(),
            )
        })?;
        Ok(RealtimeHandle {
            inner: Arc::clone(&self.inner),
            realtime: Arc::clone(realtime),
        })
    }
}

impl RealtimeHandle {
    /// Opens the connection (a no-op if it is already running). It reconnects by itself
    /// until [`close`](Self::close).
    pub fn connect(&self) -> Result<()> {
        if self.inner.cancel.is_cancelled() {
            return Err(Error::Shutdown);
        }
        // The slot is a plain `Option` written whole, so a panic elsewhere cannot leave it
        // half-written: a poisoned lock is used as it is.
        let mut running = self
            .realtime
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The driver cancels its token when it stops by itself (reconnects exhausted).
        if running.as_ref().is_some_and(|token| !token.is_cancelled()) {
            return Ok(());
        }
        let cancel = self.inner.cancel.child_token();
        *running = Some(cancel.clone());
        drop(running);
        let session = Arc::new(RealtimeSession::new(
            Arc::clone(&self.inner),
            Arc::clone(&self.realtime),
        ));
        let handle = tokio::spawn(Arc::clone(&self.realtime.driver).run(session, cancel));
        self.inner.track(handle);
        Ok(())
    }

    /// Closes the connection for good: no reconnect follows.
    pub fn close(&self) {
        if let Some(cancel) = self.realtime.running.lock().ok().and_then(|mut c| c.take()) {
            cancel.cancel();
        }
    }

    /// True while the connection is open.
    pub fn is_connected(&self) -> bool {
        self.realtime.driver.is_connected()
    }

    /// Subscribes to a channel (a model's endpoint) with optional parameters, in the
    /// [`MessageFormat`](crate::MessageFormat) of the config; kept across reconnects (with the
    /// same parameters). On sync-server, `since` is a version floor (only changes of a later
    /// version, e.g. the pull cursor) and every other parameter an equality filter on a
    /// top-level field of the record; see sync-server's README.
    ///
    /// ```no_run
    /// # async fn demo(sync: sync_core::SyncManager) -> sync_core::Result<()> {
    /// let parameters = serde_json::json!({"since": "42", "project": "p1"});
    /// if let serde_json::Value::Object(parameters) = parameters {
    ///     sync.realtime()?.subscribe("todos", parameters);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscribe(&self, channel: &str, parameters: Map<String, Value>) {
        self.realtime.driver.subscribe(channel, parameters);
    }

    /// Unsubscribes from a channel.
    pub fn unsubscribe(&self, channel: &str) {
        self.realtime.driver.unsubscribe(channel);
    }

    /// Sends a JSON message; `false` if the connection is not open (it is not sent later).
    pub fn send(&self, message: &Value) -> bool {
        let driver = &self.realtime.driver;
        driver.is_connected() && driver.send(message.to_string())
    }

    /// Sends an event of `kind` under its outgoing name
    /// ([`SyncEventMapper::map_outgoing`](crate::SyncEventMapper::map_outgoing)), in the
    /// config's [`MessageFormat`](crate::MessageFormat): `{"event": name, "data": data}` by
    /// default. `false` if `kind` has no outgoing name or the connection is not open (it is
    /// not sent later).
    pub fn send_event(&self, kind: SyncEventType, data: Value) -> bool {
        let config = self.realtime.config();
        let Some(name) = config.event_mapper.outgoing_name(kind) else {
            tracing::debug!(?kind, "no outgoing name for this event kind; not sent");
            return false;
        };
        let mut message = Map::new();
        message.insert(
            config.format.event_key.clone(),
            Value::String(name.to_owned()),
        );
        message.insert(config.format.data_key.clone(), data);
        self.send(&Value::Object(message))
    }

    /// Calls `handler` for every server message whose `type` is `kind`, and for every event
    /// named `kind` that is not a change of a record (the mapper does not know it, or maps it
    /// to a kind that is not a model change). The field names are the config's
    /// [`MessageFormat`](crate::MessageFormat)'s.
    pub fn on_message(&self, kind: &str, handler: impl Fn(&Value) + Send + Sync + 'static) {
        let handler: MessageHandler = Arc::new(handler);
        if let Ok(mut handlers) = self.realtime.handlers.lock() {
            handlers.entry(kind.to_owned()).or_default().push(handler);
        }
    }
}
