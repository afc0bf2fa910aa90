//! The manager's realtime WebSocket: connect, close, subscriptions, messages.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::SyncManager;
use crate::error::{Error, Result};
use crate::realtime::{MessageHandler, Realtime, RealtimeSession};

impl SyncManager {
    pub(crate) fn realtime(&self) -> Result<&Arc<Realtime>> {
        self.inner.realtime.as_ref().ok_or_else(|| {
            Error::Config(
                "no WebSocket configured: add .websocket(WebSocketConfig::new(url)) to the builder"
                    .into(),
            )
        })
    }

    /// Opens the realtime connection (a no-op if it is already running). It
    /// reconnects by itself until [`close_websocket`](Self::close_websocket).
    pub fn connect_websocket(&self) -> Result<()> {
        self.check_open()?;
        let realtime = Arc::clone(self.realtime()?);
        let mut running = realtime
            .running
            .lock()
            .map_err(|_| Error::Task("realtime state poisoned".into()))?;
        // The driver cancels its token when it stops by itself (reconnects exhausted).
        if running.as_ref().is_some_and(|token| !token.is_cancelled()) {
            return Ok(());
        }
        let cancel = self.inner.cancel.child_token();
        *running = Some(cancel.clone());
        drop(running);
        let session = Arc::new(RealtimeSession::new(
            Arc::clone(&self.inner),
            Arc::clone(&realtime),
        ));
        let handle = tokio::spawn(Arc::clone(&realtime.driver).run(session, cancel));
        self.inner.track(handle);
        Ok(())
    }

    /// Closes the realtime connection for good: no reconnect follows.
    pub fn close_websocket(&self) -> Result<()> {
        let realtime = self.realtime()?;
        if let Some(cancel) = realtime.running.lock().ok().and_then(|mut c| c.take()) {
            cancel.cancel();
        }
        Ok(())
    }

    /// True while the realtime connection is open.
    pub fn is_websocket_connected(&self) -> bool {
        self.inner
            .realtime
            .as_ref()
            .is_some_and(|r| r.driver.is_connected())
    }

    /// Subscribes to a channel (a model's endpoint) with optional parameters
    /// (an equality filter on sync-server). Kept across reconnects.
    pub fn subscribe(&self, channel: &str, parameters: Map<String, Value>) -> Result<()> {
        self.realtime()?.driver.subscribe(channel, parameters);
        Ok(())
    }

    /// Unsubscribes from a channel.
    pub fn unsubscribe(&self, channel: &str) -> Result<()> {
        self.realtime()?.driver.unsubscribe(channel);
        Ok(())
    }

    /// Sends a JSON message over the realtime connection; `false` if it is not connected.
    pub fn send_websocket_message(&self, message: Value) -> Result<bool> {
        let driver = &self.realtime()?.driver;
        Ok(driver.is_connected() && driver.send(message.to_string()))
    }

    /// Calls `handler` for every server message whose `type` (or, for events
    /// the mapper does not know, whose `event`) is `kind`.
    pub fn register_message_handler(
        &self,
        kind: &str,
        handler: impl Fn(&Value) + Send + Sync + 'static,
    ) -> Result<()> {
        let realtime = self.realtime()?;
        let handler: MessageHandler = Arc::new(handler);
        if let Ok(mut handlers) = realtime.handlers.lock() {
            handlers.entry(kind.to_owned()).or_default().push(handler);
        }
        Ok(())
    }
}
