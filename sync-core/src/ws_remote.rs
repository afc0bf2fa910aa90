//! [`WebSocketRemote`]: push, pull and reads as request/response messages over
//! one WebSocket, which also carries the realtime change events.
//!
//! Requests are [`WsRequest`]s,
//! `{"type":"request","id":N,"method":"push"|"pull"|"get"|"query"|"health","body":{...}}`;
//! the server answers a [`WsResponse`], `{"type":"response","id":N,"status":200,"body":{...}}`,
//! with HTTP status semantics. Every other message (change events, pongs) is passed to the
//! manager, which applies events exactly as it applies pulled records.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sync_protocol::{
    ClientMessage, GetRequestBody, PullPage, PullRequestBody, PushRequest, QueryRequestBody,
    RequestId, ServerMessage, SubscriptionAction, WsMethod, WsRequest, WsResponse,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::realtime::{subscription, to_text, WebSocketConfig};
use crate::remote::{
    parse_remote_record, push_outcomes, wire_ops, ModelRoute, PushItem, PushOutcome, Remote,
    RemoteError, RemotePage, Traffic,
};

type Pending = oneshot::Sender<Result<(u16, Value, u64), RemoteError>>;

struct Shared {
    config: WebSocketConfig,
    headers: BTreeMap<String, String>,
    request_timeout: Duration,
    pending: Mutex<HashMap<u64, Pending>>,
    outgoing: Mutex<Option<mpsc::UnboundedSender<String>>>,
    events: broadcast::Sender<Value>,
    connected: watch::Sender<bool>,
    next_id: AtomicU64,
    cancel: CancellationToken,
    subscriptions: Mutex<BTreeMap<String, Map<String, Value>>>,
}

/// A [`Remote`] that talks to sync-server over a single WebSocket.
///
/// Create it with [`WebSocketRemote::connect`] (it reconnects by itself with
/// the config's backoff) and give it to the manager with `.remote(...)`.
#[derive(Clone)]
pub struct WebSocketRemote {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WebSocketRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketRemote")
            .field("url", &self.shared.config.url)
            .field("connected", &*self.shared.connected.borrow())
            .finish_non_exhaustive()
    }
}

impl WebSocketRemote {
    /// Starts the connection task. `headers` go on the upgrade request (e.g.
    /// `Authorization`); requests wait at most `request_timeout` for their answer.
    /// Must be called inside a Tokio runtime.
    pub fn connect(
        config: WebSocketConfig,
        headers: BTreeMap<String, String>,
        request_timeout: Duration,
    ) -> WebSocketRemote {
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            config,
            headers,
            request_timeout,
            pending: Mutex::new(HashMap::new()),
            outgoing: Mutex::new(None),
            events,
            connected: watch::channel(false).0,
            next_id: AtomicU64::new(1),
            cancel: CancellationToken::new(),
            subscriptions: Mutex::new(BTreeMap::new()),
        });
        tokio::spawn(connection_loop(Arc::clone(&shared)));
        WebSocketRemote { shared }
    }

    /// Authenticates with `Authorization: Bearer {token}` on the upgrade request.
    pub fn connect_with_token(url: impl Into<String>, token: &str) -> WebSocketRemote {
        let mut headers = BTreeMap::new();
        headers.insert("Authorization".to_owned(), format!("Bearer {token}"));
        WebSocketRemote::connect(WebSocketConfig::new(url), headers, Duration::from_secs(30))
    }

    /// True while the socket is open.
    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// Closes the socket for good.
    pub fn close(&self) {
        self.shared.cancel.cancel();
    }

    async fn request<B: Serialize>(
        &self,
        method: WsMethod,
        body: B,
    ) -> Result<(u16, Value, Traffic), RemoteError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::SeqCst);
        let request = WsRequest {
            id: RequestId::from(id),
            method,
            body,
        };
        let text = serde_json::to_string(&request)
            .map_err(|e| RemoteError::Config(format!("{} request: {e}", method.as_str())))?;
        let sent = text.len() as u64;
        let (tx, rx) = oneshot::channel();
        let sender = self.shared.outgoing.lock().ok().and_then(|o| o.clone());
        let Some(sender) = sender else {
            return Err(RemoteError::Unavailable {
                message: "the WebSocket is not connected".into(),
                retry_after: None,
            });
        };
        if let Ok(mut pending) = self.shared.pending.lock() {
            pending.insert(id, tx);
        }
        if sender.send(text).is_err() {
            self.forget(id);
            return Err(RemoteError::Unavailable {
                message: "the WebSocket closed".into(),
                retry_after: None,
            });
        }
        match tokio::time::timeout(self.shared.request_timeout, rx).await {
            Ok(Ok(result)) => {
                result.map(|(status, body, received)| (status, body, Traffic { sent, received }))
            }
            Ok(Err(_)) => Err(RemoteError::Unavailable {
                message: "the WebSocket closed before the answer".into(),
                retry_after: None,
            }),
            Err(_) => {
                self.forget(id);
                Err(RemoteError::Unavailable {
                    message: format!("no answer within {:?}", self.shared.request_timeout),
                    retry_after: None,
                })
            }
        }
    }

    fn forget(&self, id: u64) {
        if let Ok(mut pending) = self.shared.pending.lock() {
            pending.remove(&id);
        }
    }

    async fn ok_body<B: Serialize>(
        &self,
        method: WsMethod,
        body: B,
    ) -> Result<(Value, Traffic), RemoteError> {
        let (status, body, traffic) = self.request(method, body).await?;
        check(status, &body)?;
        Ok((body, traffic))
    }
}

fn check(status: u16, body: &Value) -> Result<(), RemoteError> {
    let message = || match body.get("error") {
        Some(Value::String(s)) => s.clone(),
        _ => format!("status {status}"),
    };
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(RemoteError::Unavailable {
            message: message(),
            retry_after: None,
        }),
        _ => Err(RemoteError::Refused {
            status,
            message: message(),
        }),
    }
}

#[async_trait]
impl Remote for WebSocketRemote {
    fn max_batch(&self) -> usize {
        500
    }

    async fn push(
        &self,
        route: &ModelRoute,
        items: &[PushItem],
    ) -> Result<(Vec<PushOutcome>, Traffic), RemoteError> {
        let ops = wire_ops(route, items);
        let (body, traffic) = self.ok_body(WsMethod::Push, PushRequest { ops }).await?;
        let parsed = serde_json::from_value(body)
            .map_err(|e| RemoteError::BadResponse(format!("push response: {e}")))?;
        let outcomes = push_outcomes(route, items.len(), parsed)?;
        Ok((outcomes, traffic))
    }

    async fn pull(
        &self,
        route: &ModelRoute,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RemotePage, RemoteError> {
        let (body, bytes) = self
            .ok_body(
                WsMethod::Pull,
                PullRequestBody {
                    collection: route.endpoint.clone(),
                    since: cursor.map(str::to_owned),
                    limit: Some(limit as u64),
                    params: None,
                },
            )
            .await?;
        let page: PullPage = serde_json::from_value(body)
            .map_err(|e| RemoteError::BadResponse(format!("pull page: {e}")))?;
        let records = page
            .items
            .into_iter()
            .map(|object| parse_remote_record(route.schema, object))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RemotePage {
            records,
            next_cursor: Some(page.next_cursor),
            has_more: page.has_more,
            bytes: bytes.received,
        })
    }

    async fn fetch(
        &self,
        route: &ModelRoute,
        id: &str,
    ) -> Result<Option<crate::store::RemoteRecord>, RemoteError> {
        let (status, body, _) = self
            .request(
                WsMethod::Get,
                GetRequestBody {
                    collection: route.endpoint.clone(),
                    id: id.to_owned(),
                },
            )
            .await?;
        if status == 404 {
            return Ok(None);
        }
        check(status, &body)?;
        match body {
            Value::Object(object) => parse_remote_record(route.schema, object).map(Some),
            _ => Err(RemoteError::BadResponse("expected a record object".into())),
        }
    }

    async fn fetch_page(
        &self,
        route: &ModelRoute,
        params: &[(String, String)],
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<RemotePage, RemoteError> {
        let params: Map<String, Value> = params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let (body, bytes) = self
            .ok_body(
                WsMethod::Query,
                QueryRequestBody {
                    collection: route.endpoint.clone(),
                    params,
                    limit,
                    offset,
                },
            )
            .await?;
        let items = match body.get("items") {
            Some(Value::Array(items)) => items.clone(),
            _ => {
                return Err(RemoteError::BadResponse(
                    "query response without `items`".into(),
                ))
            }
        };
        let records = items
            .into_iter()
            .map(|item| match item {
                Value::Object(object) => parse_remote_record(route.schema, object),
                _ => Err(RemoteError::BadResponse("a record is not an object".into())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RemotePage {
            records,
            next_cursor: None,
            has_more: false,
            bytes: bytes.received,
        })
    }

    async fn health(&self) -> Result<(), RemoteError> {
        self.ok_body(WsMethod::Health, Value::Null)
            .await
            .map(|_| ())
    }

    fn change_events(&self) -> Option<broadcast::Receiver<Value>> {
        Some(self.shared.events.subscribe())
    }

    fn subscribe_changes(&self, channel: &str, parameters: Map<String, Value>) -> bool {
        let message = to_text(&subscription(
            SubscriptionAction::Subscribe,
            channel,
            &parameters,
        ));
        if let Ok(mut subs) = self.shared.subscriptions.lock() {
            subs.insert(channel.to_owned(), parameters);
        }
        if let (Some(tx), Some(message)) = (
            self.shared.outgoing.lock().ok().and_then(|o| o.clone()),
            message,
        ) {
            let _ = tx.send(message);
        }
        true
    }

    fn connection_state(&self) -> Option<watch::Receiver<bool>> {
        Some(self.shared.connected.subscribe())
    }

    fn subscribe_all_models(&self) -> bool {
        self.shared.config.subscribe_all_models
    }

    fn change_event_mapper(&self) -> crate::realtime::SyncEventMapper {
        self.shared.config.event_mapper.clone()
    }
}

fn fail_pending(shared: &Shared, why: &str) {
    let drained: Vec<Pending> = shared
        .pending
        .lock()
        .map(|mut p| p.drain().map(|(_, tx)| tx).collect())
        .unwrap_or_default();
    for tx in drained {
        let _ = tx.send(Err(RemoteError::Unavailable {
            message: why.to_owned(),
            retry_after: None,
        }));
    }
}

async fn connection_loop(shared: Arc<Shared>) {
    let mut failures: u32 = 0;
    loop {
        if shared.cancel.is_cancelled() {
            break;
        }
        match open(&shared).await {
            Ok(socket) => {
                failures = 0;
                serve(&shared, socket).await;
                if let Ok(mut out) = shared.outgoing.lock() {
                    *out = None;
                }
                shared.connected.send_replace(false);
                fail_pending(&shared, "the WebSocket connection was lost");
            }
            Err(err) => {
                tracing::debug!(url = %shared.config.url, error = %err, "WebSocket remote connect failed")
            }
        }
        failures += 1;
        if shared
            .config
            .max_reconnect_attempts
            .is_some_and(|max| failures > max)
        {
            break;
        }
        let step = shared
            .config
            .reconnect_delay
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(shared.config.max_reconnect_delay);
        let delay = step.mul_f64(0.1 + 0.9 * fastrand::f64());
        tokio::select! {
            () = shared.cancel.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    shared.connected.send_replace(false);
    fail_pending(&shared, "the WebSocket remote was closed");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(shared: &Shared) -> Result<Socket, String> {
    let mut request = shared
        .config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad WebSocket URL: {e}"))?;
    for (name, value) in shared.headers.iter().chain(shared.config.headers.iter()) {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        request.headers_mut().insert(name, value);
    }
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("connect timed out".into()),
    }
}

async fn serve(shared: &Arc<Shared>, socket: Socket) {
    let (mut sink, mut source) = socket.split();
    let mut opening = Vec::new();
    if let Some(auth) = &shared.config.auth_message {
        opening.push(auth.to_string());
    }
    let subs = shared
        .subscriptions
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    for (channel, parameters) in &subs {
        opening.extend(to_text(&subscription(
            SubscriptionAction::Subscribe,
            channel,
            parameters,
        )));
    }
    for text in opening {
        if sink.send(Message::text(text)).await.is_err() {
            return;
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    if let Ok(mut out) = shared.outgoing.lock() {
        *out = Some(tx);
    }
    shared.connected.send_replace(true);
    let config = &shared.config;
    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    let mut awaiting_pong: Option<Instant> = None;
    loop {
        let deadline = awaiting_pong.map(|at| at + config.pong_timeout);
        tokio::select! {
            () = shared.cancel.cancelled() => {
                let _ = sink.send(Message::Close(None)).await;
                return;
            }
            () = async { match deadline { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                tracing::warn!("WebSocket remote: no pong within the timeout; reconnecting");
                return;
            }
            _ = ping.tick() => {
                awaiting_pong.get_or_insert_with(Instant::now);
                if let Some(ping) = to_text(&ClientMessage::Ping) {
                    if sink.send(Message::text(ping)).await.is_err() {
                        return;
                    }
                }
            }
            out = rx.recv() => match out {
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
                    let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                        tracing::warn!("WebSocket remote: skipping a message that is not JSON");
                        continue;
                    };
                    match value.get("type").and_then(Value::as_str) {
                        Some(WsResponse::TYPE) => {
                            let id = value.get("id").and_then(Value::as_u64);
                            let waiter = id.and_then(|id| shared.pending.lock().ok().and_then(|mut p| p.remove(&id)));
                            match waiter {
                                Some(waiter) => {
                                    let result = match WsResponse::deserialize(value) {
                                        Ok(response) if response.status > 0 => {
                                            Ok((response.status, response.body, size))
                                        }
                                        Ok(_) => Err(RemoteError::BadResponse("response with status 0".into())),
                                        Err(err) => Err(RemoteError::BadResponse(format!("response: {err}"))),
                                    };
                                    let _ = waiter.send(result);
                                }
                                None => tracing::debug!(?id, "WebSocket remote: answer to an unknown request"),
                            }
                        }
                        Some(_) if value.get("event").is_none()
                            && ServerMessage::deserialize(&value).is_ok_and(|m| m == ServerMessage::Pong) =>
                        {
                            awaiting_pong = None;
                        }
                        _ => {
                            let _ = shared.events.send(value);
                        }
                    }
                }
                Some(Ok(Message::Pong(_))) => awaiting_pong = None,
                Some(Ok(_)) => {}
            },
        }
    }
}
