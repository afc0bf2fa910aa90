//! The one WebSocket driver under both the realtime session (`realtime.rs`) and
//! [`WebSocketRemote`](crate::WebSocketRemote) (`ws_remote.rs`): connecting with headers, the
//! opening frames (auth message, remembered subscriptions), the ping/pong deadline, reconnecting
//! with jittered backoff, the outgoing queue and closing. What the messages of a connection
//! mean is the [`Session`]'s business; the driver only keeps the connection alive.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenAuth;
use crate::realtime::WebSocketConfig;

/// How long a connection attempt (TCP, TLS and the upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection attempt failed. Kept by the driver until the next connection opens, so a
/// request made meanwhile can say why there is no connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The URL is not a WebSocket URL.
    #[error("bad WebSocket URL {url:?}")]
    Url {
        url: String,
        #[source]
        source: tokio_tungstenite::tungstenite::Error,
    },
    /// A configured header name is invalid.
    #[error("invalid WebSocket header name {name:?}")]
    HeaderName {
        name: String,
        #[source]
        source: tokio_tungstenite::tungstenite::http::header::InvalidHeaderName,
    },
    /// A configured header value is invalid.
    #[error("invalid value for WebSocket header {name}")]
    HeaderValue {
        name: String,
        #[source]
        source: tokio_tungstenite::tungstenite::http::header::InvalidHeaderValue,
    },
    /// The token provider gave no token.
    #[error("no credentials for the WebSocket: {0}")]
    NoCredentials(String),
    /// TCP, TLS or the upgrade failed (refused, a non-101 answer such as 401 ...).
    #[error("cannot connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: tokio_tungstenite::tungstenite::Error,
    },
    /// The attempt took longer than its deadline.
    #[error("connecting to {url} timed out after {after:?}")]
    Timeout { url: String, after: Duration },
}

/// What a connection's messages mean: the realtime session applies change events, the
/// WebSocket remote matches answers to requests.
#[async_trait]
pub(crate) trait Session: Send + Sync {
    /// A connection is open and its opening frames are sent; `channels` are the subscriptions
    /// those frames carried.
    async fn opened(&self, channels: Vec<String>);
    /// A text message that is JSON, `size` bytes long. Pongs are passed on too; the driver has
    /// already cleared its pong deadline for them.
    fn received(&self, message: Value, size: u64);
    /// The connection that [`opened`](Self::opened) ended; the next attempt waits for this.
    async fn closed(&self);
    /// The driver is about to wait before reconnect attempt `attempt` (1 for the first).
    fn reconnecting(&self, attempt: u32);
}

/// The connection state shared by the driver task and the handles that send through it.
pub(crate) struct Driver {
    config: WebSocketConfig,
    /// Headers of the upgrade request: the caller's (auth) first, then the config's.
    headers: BTreeMap<String, String>,
    /// Subscriptions, sent in the opening frames of every connection.
    subscriptions: Mutex<BTreeMap<String, Map<String, Value>>>,
    /// The queue into the current connection; `None` while there is none.
    outgoing: Mutex<Option<mpsc::UnboundedSender<String>>>,
    connected: watch::Sender<bool>,
    /// Why the last connection attempt failed; cleared when a connection opens.
    last_failure: Mutex<Option<Arc<ConnectError>>>,
    /// Bearer tokens from the manager's token provider, on every upgrade request.
    auth: Option<Arc<TokenAuth>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("url", &self.config.url)
            .field("connected", &*self.connected.borrow())
            .finish_non_exhaustive()
    }
}

impl Driver {
    pub(crate) fn new(config: WebSocketConfig, headers: BTreeMap<String, String>) -> Driver {
        Driver {
            config,
            headers,
            subscriptions: Mutex::new(BTreeMap::new()),
            outgoing: Mutex::new(None),
            connected: watch::channel(false).0,
            last_failure: Mutex::new(None),
            auth: None,
        }
    }

    /// Sends `Authorization: Bearer` with `auth`'s token on every upgrade request, and asks
    /// for a fresh token when the server refuses one with 401.
    #[must_use]
    pub(crate) fn with_auth(mut self, auth: Option<Arc<TokenAuth>>) -> Driver {
        self.auth = auth;
        self
    }

    pub(crate) fn config(&self) -> &WebSocketConfig {
        &self.config
    }

    /// True while a connection is open and its opening frames are sent.
    pub(crate) fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Why the last connection attempt failed, unless a connection opened since.
    pub(crate) fn last_failure(&self) -> Option<Arc<ConnectError>> {
        self.last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_last_failure(&self, failure: Option<Arc<ConnectError>>) {
        *self
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = failure;
    }

    /// Follows [`is_connected`](Self::is_connected).
    pub(crate) fn connection_state(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    /// Queues `text` on the current connection (after its opening frames); `false` if there
    /// is no connection, in which case the text is not sent later either.
    pub(crate) fn send(&self, text: String) -> bool {
        match self.outgoing.lock().ok().and_then(|o| o.clone()) {
            Some(tx) => tx.send(text).is_ok(),
            None => false,
        }
    }

    /// Subscribes to `channel` now (if connected) and on every later connection.
    pub(crate) fn subscribe(&self, channel: &str, parameters: Map<String, Value>) {
        let message = self.config.format.subscribe(channel, &parameters);
        if let Ok(mut subscriptions) = self.subscriptions.lock() {
            subscriptions.insert(channel.to_owned(), parameters);
        }
        self.send(message.to_string());
    }

    /// Unsubscribes from `channel` now (if connected) and forgets it for later connections.
    pub(crate) fn unsubscribe(&self, channel: &str) {
        if let Ok(mut subscriptions) = self.subscriptions.lock() {
            subscriptions.remove(channel);
        }
        self.send(self.config.format.unsubscribe(channel).to_string());
    }

    /// Connects, serves and reconnects until `cancel` fires or the config's
    /// `max_reconnect_attempts` run out. `cancel` is cancelled when this returns, so a token
    /// that is not cancelled means a driver task is still running.
    pub(crate) async fn run(self: Arc<Self>, session: Arc<dyn Session>, cancel: CancellationToken) {
        let mut failures: u32 = 0;
        while !cancel.is_cancelled() {
            match self.open().await {
                Ok(socket) => {
                    failures = 0;
                    self.set_last_failure(None);
                    self.serve(&*session, socket, &cancel).await;
                    if cancel.is_cancelled() {
                        break;
                    }
                }
                Err(err) => {
                    tracing::debug!(url = %self.config.url, error = %crate::error::chain_text(&err), "WebSocket connect failed");
                    self.set_last_failure(Some(Arc::new(err)));
                }
            }
            failures = failures.saturating_add(1);
            if self
                .config
                .max_reconnect_attempts
                .is_some_and(|max| failures > max)
            {
                tracing::warn!(url = %self.config.url, failures, "giving up reconnecting the WebSocket");
                break;
            }
            session.reconnecting(failures);
            let delay = backoff(&self.config, failures);
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        self.connected.send_replace(false);
        cancel.cancel();
    }

    async fn open(&self) -> Result<Socket, ConnectError> {
        let url = &self.config.url;
        let mut request =
            url.as_str()
                .into_client_request()
                .map_err(|source| ConnectError::Url {
                    url: url.clone(),
                    source,
                })?;
        for (name, value) in self.headers.iter().chain(self.config.headers.iter()) {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|source| {
                ConnectError::HeaderName {
                    name: name.clone(),
                    source,
                }
            })?;
            let value =
                HeaderValue::from_str(value).map_err(|source| ConnectError::HeaderValue {
                    name: name.clone(),
                    source,
                })?;
            request.headers_mut().insert(header, value);
        }
        let token = match &self.auth {
            Some(auth) => match auth.token().await {
                Ok(token) => {
                    let value = HeaderValue::from_str(&format!("Bearer {}", token.value)).map_err(
                        |source| ConnectError::HeaderValue {
                            name: "Authorization".to_owned(),
                            source,
                        },
                    )?;
                    request.headers_mut().insert(
                        tokio_tungstenite::tungstenite::http::header::AUTHORIZATION,
                        value,
                    );
                    Some(token)
                }
                // No token: the connection would be refused; the reconnect backoff retries.
                Err(err) => return Err(ConnectError::NoCredentials(err.to_string())),
            },
            None => None,
        };
        let limits = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(self.config.max_message_bytes))
            .max_frame_size(Some(self.config.max_message_bytes));
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(limits), true);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok((socket, _))) => {
                if let Some(auth) = &self.auth {
                    auth.answered(false);
                }
                Ok(socket)
            }
            Ok(Err(source)) => {
                if let (Some(auth), Some(token)) = (&self.auth, &token) {
                    if let tokio_tungstenite::tungstenite::Error::Http(response) = &source {
                        if response.status() == 401 {
                            // The next attempt goes with a fresh token, if there is one.
                            // (A provider that fails marks the manager as needing auth.)
                            let _ = auth.renew(Some(token)).await;
                        }
                    }
                }
                Err(ConnectError::Connect {
                    url: url.clone(),
                    source,
                })
            }
            Err(_) => Err(ConnectError::Timeout {
                url: url.clone(),
                after: CONNECT_TIMEOUT,
            }),
        }
    }

    /// Serves one open socket until it is lost or `cancel` fires.
    async fn serve(&self, session: &dyn Session, socket: Socket, cancel: &CancellationToken) {
        let (mut sink, mut source) = socket.split();
        // The queue exists before the subscriptions are read, so a subscription made meanwhile
        // is in the opening frames or queued behind them (perhaps both: subscribing is
        // idempotent), never lost.
        let (tx, mut outgoing) = mpsc::unbounded_channel::<String>();
        if let Ok(mut slot) = self.outgoing.lock() {
            *slot = Some(tx);
        }
        let subscriptions = self
            .subscriptions
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let mut opening: Vec<String> = self
            .config
            .auth_message
            .iter()
            .map(Value::to_string)
            .collect();
        for (channel, parameters) in &subscriptions {
            opening.push(
                self.config
                    .format
                    .subscribe(channel, parameters)
                    .to_string(),
            );
        }
        for text in opening {
            if sink.send(Message::text(text)).await.is_err() {
                self.drop_queue();
                return;
            }
        }
        self.connected.send_replace(true);
        session.opened(subscriptions.into_keys().collect()).await;
        self.exchange(session, &mut sink, &mut source, &mut outgoing, cancel)
            .await;
        self.drop_queue();
        self.connected.send_replace(false);
        session.closed().await;
    }

    fn drop_queue(&self) {
        if let Ok(mut slot) = self.outgoing.lock() {
            *slot = None;
        }
    }

    /// The message loop of one connection: pings with a pong deadline, the outgoing queue,
    /// incoming messages.
    async fn exchange(
        &self,
        session: &dyn Session,
        sink: &mut futures_util::stream::SplitSink<Socket, Message>,
        source: &mut futures_util::stream::SplitStream<Socket>,
        outgoing: &mut mpsc::UnboundedReceiver<String>,
        cancel: &CancellationToken,
    ) {
        let config = &self.config;
        let mut ping =
            tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
        let mut awaiting_pong: Option<Instant> = None;
        let ping_text = config.format.ping().to_string();
        loop {
            let pong_deadline = awaiting_pong.map(|sent| sent + config.pong_timeout);
            tokio::select! {
                () = cancel.cancelled() => {
                    let _ = sink.send(Message::Close(None)).await;
                    return;
                }
                () = sleep_until(pong_deadline) => {
                    tracing::warn!(url = %config.url, "no pong within the timeout; reconnecting");
                    return;
                }
                _ = ping.tick() => {
                    awaiting_pong.get_or_insert_with(Instant::now);
                    if sink.send(Message::text(ping_text.clone())).await.is_err() {
                        return;
                    }
                }
                text = outgoing.recv() => match text {
                    Some(text) => {
                        if sink.send(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                incoming = source.next() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(text))) => {
                        let size = text.len() as u64;
                        match serde_json::from_str::<Value>(text.as_str()) {
                            Ok(value) => {
                                if config.format.is_pong(&value) {
                                    awaiting_pong = None;
                                }
                                session.received(value, size);
                            }
                            Err(err) => tracing::warn!(error = %err, "skipping a WebSocket message that is not JSON"),
                        }
                    }
                    Some(Ok(Message::Pong(_))) => awaiting_pong = None,
                    Some(Ok(Message::Binary(_))) => tracing::warn!("skipping a binary WebSocket message"),
                    Some(Ok(_)) => {}
                },
            }
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The wait before reconnect attempt `attempt` (1-based): doubling from `reconnect_delay` up
/// to `max_reconnect_delay`, with full jitter but never less than a tenth of the step, so a
/// flapping server is not hammered and many clients do not come back in step.
pub(crate) fn backoff(config: &WebSocketConfig, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let ceiling = config
        .reconnect_delay
        .saturating_mul(1u32 << exp)
        .min(config.max_reconnect_delay);
    ceiling.mul_f64(0.1 + 0.9 * fastrand::f64())
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
            (u32::MAX, 1_000),
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
}
