//! The manager's realtime WebSocket: connect, close, subscriptions, messages.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::SyncManager;
use crate::error::{Error, Result};
use crate::realtime::{self, Command, MessageHandler, Realtime};

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
        let mut slot = realtime
            .commands
            .lock()
            .map_err(|_| Error::Task("realtime state poisoned".into()))?;
        if slot.as_ref().is_some_and(|tx| !tx.is_closed()) {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *slot = Some(tx);
        drop(slot);
        let cancel = self.inner.cancel.child_token();
        if let Ok(mut c) = realtime.cancel.lock() {
            *c = Some(cancel.clone());
        }
        let handle = tokio::spawn(realtime::run(
            Arc::clone(&self.inner),
            Arc::clone(&realtime),
            rx,
            cancel,
            self.inner.auth_headers.clone(),
        ));
        self.inner.track(handle);
        Ok(())
    }

    /// Closes the realtime connection for good: no reconnect follows.
    pub fn close_websocket(&self) -> Result<()> {
        let realtime = self.realtime()?;
        if let Some(tx) = realtime.commands.lock().ok().and_then(|mut c| c.take()) {
            let _ = tx.send(Command::Close);
        }
        if let Some(cancel) = realtime.cancel.lock().ok().and_then(|mut c| c.take()) {
            cancel.cancel();
        }
        Ok(())
    }

    /// True while the realtime connection is open.
    pub fn is_websocket_connected(&self) -> bool {
        self.inner
            .realtime
            .as_ref()
            .is_some_and(|r| r.connected.load(Ordering::SeqCst))
    }

    /// Subscribes to a channel (a model's endpoint) with optional parameters
    /// (an equality filter on sync-server). Kept across reconnects.
    pub fn subscribe(&self, channel: &str, parameters: Map<String, Value>) -> Result<()> {
        let realtime = self.realtime()?;
        let message = realtime::subscription_message("subscribe", channel, &parameters);
        if let Ok(mut subs) = realtime.subscriptions.lock() {
            subs.insert(channel.to_owned(), parameters);
        }
        realtime.send(message);
        Ok(())
    }

    /// Unsubscribes from a channel.
    pub fn unsubscribe(&self, channel: &str) -> Result<()> {
        let realtime = self.realtime()?;
        if let Ok(mut subs) = realtime.subscriptions.lock() {
            subs.remove(channel);
        }
        realtime.send(realtime::subscription_message(
            "unsubscribe",
            channel,
            &Map::new(),
        ));
        Ok(())
    }

    /// Sends a JSON message over the realtime connection; `false` if it is not connected.
    pub fn send_websocket_message(&self, message: Value) -> Result<bool> {
        let realtime = self.realtime()?;
        Ok(realtime.connected.load(Ordering::SeqCst) && realtime.send(message))
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
