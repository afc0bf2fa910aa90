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
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sync_protocol::{
    GetRequestBody, PullRequestBody, PushRequest, QueryRequestBody, RequestId, WsMethod, WsRequest,
    WsResponse,
};
use tokio::sync::{broadcast, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::realtime::WebSocketConfig;
use crate::remote::{
    fetch_omitted, parse_remote_record, push_outcomes, read_pull_page, wire_ops, ChangeFeed,
    ModelRoute, PushItem, PushOutcome, Remote, RemoteError, RemotePage, Traffic,
};
use crate::ws_driver::{Driver, Session};

type Pending = oneshot::Sender<Result<(u16, Value, u64), RemoteError>>;

/// The remote's side of the connection: answers matched to waiting requests, everything else
/// (change events) broadcast to the manager. The connection itself is the [`Driver`]'s.
struct Shared {
    driver: Arc<Driver>,
    request_timeout: Duration,
    pending: Mutex<HashMap<u64, Pending>>,
    events: broadcast::Sender<Value>,
    next_id: AtomicU64,
    cancel: CancellationToken,
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
            .field("driver", &self.shared.driver)
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
            driver: Arc::new(Driver::new(config, headers)),
            request_timeout,
            pending: Mutex::new(HashMap::new()),
            events,
            next_id: AtomicU64::new(1),
            cancel: CancellationToken::new(),
        });
        let driver = Arc::clone(&shared.driver);
        let session = Arc::new(RemoteSession(Arc::clone(&shared)));
        let cancel = shared.cancel.clone();
        let closing = Arc::clone(&shared);
        tokio::spawn(async move {
            driver.run(session, cancel).await;
            fail_pending(&closing, "the WebSocket remote was closed");
        });
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
        self.shared.driver.is_connected()
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
        let text = serde_json::to_string(&request).map_err(|e| {
            RemoteError::config(format!("{} request cannot be serialised", method.as_str()))
                .with_source(e)
        })?;
        let sent = text.len() as u64;
        if !self.shared.driver.is_connected() {
            let err = RemoteError::unavailable("the WebSocket is not connected");
            return Err(match self.shared.driver.last_failure() {
                Some(failure) => err.with_source(failure),
                None => err,
            });
        }
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.shared.pending.lock() {
            pending.insert(id, tx);
        }
        if !self.shared.driver.send(text) {
            self.forget(id);
            return Err(RemoteError::unavailable("the WebSocket closed"));
        }
        match tokio::time::timeout(self.shared.request_timeout, rx).await {
            Ok(Ok(result)) => {
                result.map(|(status, body, received)| (status, body, Traffic { sent, received }))
            }
            Ok(Err(_)) => Err(RemoteError::unavailable(
                "the WebSocket closed before the answer",
            )),
            Err(_) => {
                self.forget(id);
                Err(RemoteError::unavailable(format!(
                    "no answer within {:?}",
                    self.shared.request_timeout
                )))
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
        _ if crate::disposition::is_outage(status) => Err(RemoteError::unavailable(message())),
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
        let parsed = serde_json::from_value(body).map_err(|e| {
            RemoteError::bad_response("push response: not an answer of the protocol").with_source(e)
        })?;
        let (mut outcomes, omitted) = push_outcomes(route, items.len(), parsed)?;
        fetch_omitted(self, route, items, &mut outcomes, omitted).await;
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
        read_pull_page(route, body, bytes.received)
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
            _ => Err(RemoteError::bad_response("expected a record object")),
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
            _ => return Err(RemoteError::bad_response("query response without `items`")),
        };
        let records = items
            .into_iter()
            .map(|item| match item {
                Value::Object(object) => parse_remote_record(route.schema, object),
                _ => Err(RemoteError::bad_response("a record is not an object")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RemotePage {
            records,
            next_cursor: None,
            has_more: false,
            bytes: bytes.received,
            ..RemotePage::default()
        })
    }

    async fn health(&self) -> Result<(), RemoteError> {
        self.ok_body(WsMethod::Health, Value::Null)
            .await
            .map(|_| ())
    }

    fn change_feed(&self) -> Option<&dyn ChangeFeed> {
        Some(self)
    }

    fn connection_state(&self) -> Option<watch::Receiver<bool>> {
        Some(self.shared.driver.connection_state())
    }
}

impl ChangeFeed for WebSocketRemote {
    fn events(&self) -> broadcast::Receiver<Value> {
        self.shared.events.subscribe()
    }

    fn subscribe(&self, channel: &str, parameters: Map<String, Value>) {
        self.shared.driver.subscribe(channel, parameters);
    }

    fn subscribe_all_models(&self) -> bool {
        self.shared.driver.config().subscribe_all_models
    }

    fn event_mapper(&self) -> crate::realtime::SyncEventMapper {
        self.shared.driver.config().event_mapper.clone()
    }

    fn message_format(&self) -> crate::realtime::MessageFormat {
        self.shared.driver.config().format.clone()
    }
}

fn fail_pending(shared: &Shared, why: &str) {
    let drained: Vec<Pending> = shared
        .pending
        .lock()
        .map(|mut p| p.drain().map(|(_, tx)| tx).collect())
        .unwrap_or_default();
    for tx in drained {
        let _ = tx.send(Err(RemoteError::unavailable(why.to_owned())));
    }
}

struct RemoteSession(Arc<Shared>);

#[async_trait]
impl Session for RemoteSession {
    async fn opened(&self, _channels: Vec<String>) {}

    fn received(&self, value: Value, size: u64) {
        let shared = &self.0;
        match value.get("type").and_then(Value::as_str) {
            Some(WsResponse::TYPE) => {
                let id = value.get("id").and_then(Value::as_u64);
                let waiter =
                    id.and_then(|id| shared.pending.lock().ok().and_then(|mut p| p.remove(&id)));
                let Some(waiter) = waiter else {
                    tracing::debug!(?id, "WebSocket remote: answer to an unknown request");
                    return;
                };
                let result = match WsResponse::deserialize(value) {
                    Ok(response) if response.status > 0 => {
                        Ok((response.status, response.body, size))
                    }
                    Ok(_) => Err(RemoteError::bad_response("response with status 0")),
                    Err(err) => Err(RemoteError::bad_response(
                        "a response that is not an answer of the protocol",
                    )
                    .with_source(err)),
                };
                let _ = waiter.send(result);
            }
            // Pongs only keep the connection alive (the driver's business).
            _ if shared.driver.config().format.is_pong(&value) => {}
            _ => {
                let _ = shared.events.send(value);
            }
        }
    }

    async fn closed(&self) {
        fail_pending(&self.0, "the WebSocket connection was lost");
    }

    fn reconnecting(&self, attempt: u32) {
        tracing::debug!(attempt, "WebSocket remote reconnecting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// Guards against: "not connected" with nothing to say why, when the driver knows the
    /// last connection attempt failed (refused, a 401 on the upgrade ...).
    #[tokio::test]
    async fn a_request_while_disconnected_carries_the_last_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let remote = WebSocketRemote::connect(
            WebSocketConfig::new(format!("ws://127.0.0.1:{port}/ws")),
            BTreeMap::new(),
            Duration::from_secs(1),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let err = loop {
            let err = remote.health().await.unwrap_err();
            if err.source().is_some() || tokio::time::Instant::now() > deadline {
                break err;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        remote.close();
        assert!(err.is_transient(), "{err:?}");
        let mut chain = Vec::new();
        let mut next = err.source();
        while let Some(source) = next {
            chain.push(source.to_string());
            if source
                .downcast_ref::<tokio_tungstenite::tungstenite::Error>()
                .is_some()
            {
                break;
            }
            next = source.source();
        }
        assert!(
            next.is_some(),
            "no tungstenite error under {err}: {chain:?}"
        );
        assert!(
            chain[0].starts_with("cannot connect to ws://127.0.0.1:"),
            "{chain:?}"
        );
    }
}
