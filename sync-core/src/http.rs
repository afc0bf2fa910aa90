//! [`HttpRemote`]: the default protocol over HTTP, and any REST API described
//! by a model's [`RestRequests`](crate::RestRequests).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ETAG, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use sync_protocol::{PushRequest, PushResponse};

use crate::auth::TokenAuth;
use crate::backend::{CountAt, NextPage, Paging, PullState, RestPull};
use crate::disposition::Disposition;
use crate::protocol::OpKind;
use crate::remote::{
    fetch_omitted, parse_remote_record, push_outcomes, read_pull_page, wire_ops, ModelRoute,
    PushItem, PushOutcome, Remote, RemoteError, RemotePage, Traffic,
};
use crate::rest::{PullMode, RestMethod, RestRequest};
use crate::store::RemoteRecord;

/// Configuration of an [`HttpRemote`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HttpRemoteBuilder {
    base_url: String,
    headers: BTreeMap<String, String>,
    timeout: Duration,
    batch_push: Option<String>,
    max_batch: usize,
    health_path: String,
    max_response_bytes: u64,
    auth: Option<Arc<TokenAuth>>,
}

/// Default of [`HttpRemoteBuilder::max_response_bytes`]: 64 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

impl HttpRemoteBuilder {
    /// The largest response body read (default [`DEFAULT_MAX_RESPONSE_BYTES`], 64 MiB). A
    /// larger one is refused as a bad response after reading at most this much, so a broken
    /// or hostile server cannot make the client hold an unbounded body in memory. Pages and
    /// batches of the default sizes are far below it.
    pub fn max_response_bytes(mut self, bytes: u64) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Sends `Authorization: Bearer {token}` with every request.
    pub fn bearer_token(self, token: impl AsRef<str>) -> Self {
        self.header("Authorization", format!("Bearer {}", token.as_ref()))
    }

    /// Sends a header with every request (for other auth schemes).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Default timeout of a request (a model's `RestRequest::timeout` overrides it).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Push through the batch endpoint at `path` (default `sync/push`), or,
    /// with `None`, one REST call per change built from the model's `RestRequests`.
    pub fn batch_push(mut self, path: Option<&str>) -> Self {
        self.batch_push = path.map(str::to_owned);
        self
    }

    /// Largest batch sent to the batch endpoint.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Path probed by `health()` (default `health`).
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.health_path = path.into();
        self
    }

    /// Builds the remote; an invalid base URL or header is an error.
    pub fn build(self) -> Result<HttpRemote, RemoteError> {
        let lower = self.base_url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(RemoteError::config(format!(
                "base URL must start with http:// or https://, got {:?}",
                self.base_url
            )));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                RemoteError::config(format!("invalid header name {name:?}")).with_source(e)
            })?;
            let value = HeaderValue::from_str(value).map_err(|e| {
                RemoteError::config(format!("invalid value for header {name}")).with_source(e)
            })?;
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| RemoteError::config("the HTTP client cannot be built").with_source(e))?;
        Ok(HttpRemote {
            client,
            request_zstd: Arc::new(AtomicBool::new(false)),
            base_url: self.base_url.trim_end_matches('/').to_owned(),
            timeout: self.timeout,
            batch_push: self.batch_push,
            max_response_bytes: self.max_response_bytes,
            max_batch: self.max_batch,
            health_path: self.health_path,
            auth: self.auth,
        })
    }

    /// Bearer tokens from `auth` on every request (the manager's token provider), renewed
    /// once when the remote answers 401.
    pub(crate) fn token_auth(mut self, auth: Arc<TokenAuth>) -> Self {
        self.auth = Some(auth);
        self
    }
}

/// The default [`Remote`]: sync-server's protocol (batch push, cursor pulls)
/// or any REST API configured through `RestRequests` and [`PullMode`].
#[derive(Debug, Clone)]
pub struct HttpRemote {
    client: reqwest::Client,
    /// Whether the server's last answer said it reads zstd request bodies
    /// (`Accept-Encoding` in a response, RFC 7694); larger bodies are then compressed.
    request_zstd: Arc<AtomicBool>,
    base_url: String,
    timeout: Duration,
    batch_push: Option<String>,
    max_batch: usize,
    health_path: String,
    max_response_bytes: u64,
    auth: Option<Arc<TokenAuth>>,
}

/// One request to send.
struct Outgoing<'a> {
    method: Method,
    url: &'a str,
    config: Option<&'a RestRequest>,
    extra_headers: &'a [(&'a str, String)],
    query: &'a [(String, String)],
    body: Option<Payload<'a>>,
    /// Overrides the timeout of `config` and the remote's default.
    timeout: Option<Duration>,
    retries: u32,
    /// Leave a successful response's body unparsed (`body` is `Null`; read `raw`).
    raw_success: bool,
}

/// A request body.
enum Payload<'a> {
    /// Serialised when sent.
    Json(&'a Value),
    /// Already serialised JSON.
    Bytes(Vec<u8>),
}

struct Response {
    status: StatusCode,
    headers: HeaderMap,
    retry_after: Option<Duration>,
    body: Value,
    /// The body as received.
    raw: bytes::Bytes,
    /// Request and response body bytes (the request as sent: compressed if it was).
    bytes: u64,
    /// Request body bytes as sent.
    sent: u64,
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?;
    if let Ok(secs) = text.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(text.trim()).ok()?;
    (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

fn is_transient(status: StatusCode) -> bool {
    crate::disposition::is_outage(status.as_u16())
}

fn error_message(body: &Value, status: StatusCode) -> String {
    match body.get("error") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None if body.is_null() => status.to_string(),
        None => {
            let text = body.to_string();
            if text.len() > 300 {
                let cut: String = text.chars().take(300).collect();
                format!("{cut}...")
            } else {
                text
            }
        }
    }
}

impl HttpRemote {
    /// Starts configuring a remote at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn builder(base_url: impl Into<String>) -> HttpRemoteBuilder {
        HttpRemoteBuilder {
            base_url: base_url.into(),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(30),
            batch_push: Some("sync/push".to_owned()),
            max_batch: 500,
            health_path: "health".to_owned(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            auth: None,
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn absolute(&self, path: &str) -> String {
        format!("{}/{}", self.base_url, path.trim_start_matches('/'))
    }

    /// Sends one request, retrying transient failures `retries` times with a short backoff.
    async fn send(&self, req: Outgoing<'_>) -> Result<Response, RemoteError> {
        let Outgoing {
            method,
            url,
            config,
            extra_headers,
            query,
            body,
            timeout,
            retries,
            raw_success,
        } = req;
        let payload = match body {
            Some(Payload::Json(body)) => {
                Some(bytes::Bytes::from(serde_json::to_vec(body).map_err(
                    |e| RemoteError::config("the request body cannot be serialised").with_source(e),
                )?))
            }
            Some(Payload::Bytes(bytes)) => Some(bytes::Bytes::from(bytes)),
            None => None,
        };
        let mut encoded = payload
            .as_ref()
            .and_then(|p| self.compressed(p))
            .map(bytes::Bytes::from);
        let timeout = timeout
            .unwrap_or_else(|| config.map_or(self.timeout, |c| c.effective_timeout(self.timeout)));
        let mut attempt = 0u32;
        let mut renewed = false;
        loop {
            let mut request = self
                .client
                .request(method.clone(), url)
                .timeout(timeout)
                .header("Accept", "application/json");
            let token = match &self.auth {
                Some(auth) => {
                    let token = auth.token().await?;
                    request = request.bearer_auth(&token.value);
                    Some(token)
                }
                None => None,
            };
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(config) = config {
                for (name, value) in &config.headers {
                    request = request.header(name.as_str(), value.as_str());
                }
            }
            for (name, value) in extra_headers {
                request = request.header(*name, value.as_str());
            }
            if let Some(payload) = &payload {
                request = request.header("Content-Type", "application/json");
                request = match &encoded {
                    Some(zstd) => request
                        .header("Content-Encoding", "zstd")
                        .body(zstd.clone()),
                    None => request.body(payload.clone()),
                };
            }
            let result = self.read(request, raw_success).await;
            if encoded.is_some()
                && matches!(&result, Ok(r) if r.status == StatusCode::UNSUPPORTED_MEDIA_TYPE)
            {
                // The server no longer reads zstd (e.g. another instance behind the same
                // address): the same request again, plain, not counted as a retry.
                self.request_zstd.store(false, Ordering::Relaxed);
                encoded = None;
                continue;
            }
            if let (Some(auth), Some(token), Ok(response)) = (&self.auth, &token, &result) {
                let unauthorized = response.status == StatusCode::UNAUTHORIZED;
                if unauthorized && !renewed {
                    // Expired? One fresh token and one more try; a provider that fails
                    // leaves the manager needing authentication.
                    renewed = true;
                    auth.renew(Some(token)).await?;
                    continue;
                }
                auth.answered(unauthorized);
            }
            let transient = match &result {
                Ok(response) => is_transient(response.status),
                Err(err) => err.is_transient(),
            };
            if !transient || attempt >= retries {
                let sent = encoded.as_ref().or(payload.as_ref());
                return result.map(|mut r| {
                    r.sent = sent.map_or(0, |p| p.len() as u64);
                    r.bytes += r.sent;
                    r
                });
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(100 * (1 << attempt.min(6)))).await;
        }
    }

    /// `body` compressed with zstd when the server reads it and the body is worth it.
    fn compressed(&self, body: &[u8]) -> Option<Vec<u8>> {
        /// Smaller bodies (one record, a short batch) gain too little to be worth a coding.
        const MIN_COMPRESSED: usize = 1024;
        if body.len() < MIN_COMPRESSED || !self.request_zstd.load(Ordering::Relaxed) {
            return None;
        }
        // Level 1: the fastest, and most of the gain on JSON. Compressing a buffer in memory
        // does not fail in practice; if it does, the body goes out plain.
        zstd::bulk::compress(body, 1).ok()
    }

    async fn read(
        &self,
        request: reqwest::RequestBuilder,
        raw_success: bool,
    ) -> Result<Response, RemoteError> {
        let mut response = request
            .send()
            .await
            .map_err(|e| transport_error(e, Stage::Request))?;
        let status = response.status();
        let headers = response.headers().clone();
        let reads_zstd = headers
            .get_all(reqwest::header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|coding| {
                coding
                    .split(';')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("zstd"))
            });
        self.request_zstd.store(reads_zstd, Ordering::Relaxed);
        let retry_after = retry_after(&headers);
        let cap = self.max_response_bytes;
        let too_large = || {
            RemoteError::bad_response(format!(
                "HTTP {status}: the response is larger than the limit of {cap} bytes \
                 (HttpRemoteBuilder::max_response_bytes)"
            ))
        };
        if response.content_length().is_some_and(|len| len > cap) {
            return Err(too_large());
        }
        // Read chunk by chunk with a running count: never more than `cap` bytes held.
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(e, Stage::Response))?
        {
            let len = u64::try_from(body.len().saturating_add(chunk.len())).unwrap_or(u64::MAX);
            if len > cap {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let bytes = body.freeze();
        let body = if bytes.is_empty() || (raw_success && status.is_success()) {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(value) => value,
                Err(err) if status.is_success() => {
                    return Err(RemoteError::bad_response(format!(
                        "HTTP {status} with a body that is not JSON"
                    ))
                    .with_source(err))
                }
                // Error pages are often HTML; keep the status, drop the body.
                Err(_) => Value::Null,
            }
        };
        Ok(Response {
            status,
            headers,
            retry_after,
            body,
            bytes: bytes.len() as u64,
            sent: 0,
            raw: bytes,
        })
    }

    /// Pushes through the batch endpoint: one request per distinct (`timeout`, `retry_count`)
    /// of the items' methods (see [`RestRequest`]), usually one. When there are several, a
    /// request that fails as a whole answers for its own items only (as a retry or a refusal,
    /// by the one disposition table), so the items of the others keep their answers.
    async fn push_batch(
        &self,
        path: &str,
        route: &ModelRoute,
        items: &[PushItem],
    ) -> Result<(Vec<PushOutcome>, Traffic), RemoteError> {
        let mut classes: Vec<(Option<Duration>, u32, Vec<usize>)> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let config = route.rest.get_for(rest_method(item.kind));
            let timeout = config.and_then(|c| c.timeout);
            let retries = config.map_or(0, |c| c.effective_retry_count(0));
            match classes
                .iter_mut()
                .find(|(t, r, _)| *t == timeout && *r == retries)
            {
                Some((_, _, members)) => members.push(index),
                None => classes.push((timeout, retries, vec![index])),
            }
        }
        if classes.len() <= 1 {
            let (timeout, retries) = classes.first().map_or((None, 0), |(t, r, _)| (*t, *r));
            return self
                .push_batch_request(path, route, items, timeout, retries)
                .await;
        }
        let mut outcomes: Vec<Option<PushOutcome>> = vec![None; items.len()];
        let mut traffic = Traffic::default();
        for (timeout, retries, members) in classes {
            let part: Vec<PushItem> = members.iter().map(|&i| items[i].clone()).collect();
            let answered = self
                .push_batch_request(path, route, &part, timeout, retries)
                .await;
            let part_outcomes = match answered {
                Ok((part_outcomes, t)) => {
                    traffic.sent = traffic.sent.saturating_add(t.sent);
                    traffic.received = traffic.received.saturating_add(t.received);
                    part_outcomes
                }
                Err(err) => vec![outcome_of_failed_request(&err); part.len()],
            };
            if part_outcomes.len() != members.len() {
                return Err(RemoteError::bad_response(format!(
                    "the remote answered {} outcomes for {} pushed changes",
                    part_outcomes.len(),
                    members.len()
                )));
            }
            for (index, outcome) in members.into_iter().zip(part_outcomes) {
                outcomes[index] = Some(outcome);
            }
        }
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| RemoteError::bad_response("a pushed change got no outcome")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((outcomes, traffic))
    }

    /// One request to the batch endpoint.
    async fn push_batch_request(
        &self,
        path: &str,
        route: &ModelRoute,
        items: &[PushItem],
        timeout: Option<Duration>,
        retries: u32,
    ) -> Result<(Vec<PushOutcome>, Traffic), RemoteError> {
        // Serialised once, straight from the items.
        let body = serde_json::to_vec(&PushRequest {
            ops: wire_ops(route, items),
        })
        .map_err(|e| RemoteError::config("the push body cannot be serialised").with_source(e))?;
        let url = self.absolute(path);
        let response = self
            .send(Outgoing {
                method: Method::POST,
                url: &url,
                config: None,
                extra_headers: &[],
                query: &[],
                body: Some(Payload::Bytes(body)),
                timeout,
                retries,
                raw_success: true,
            })
            .await?;
        let traffic = Traffic {
            sent: response.sent,
            received: response.bytes.saturating_sub(response.sent),
        };
        if is_transient(response.status) {
            return Err(RemoteError::Unavailable {
                message: format!(
                    "push: HTTP {}: {}",
                    response.status,
                    error_message(&response.body, response.status)
                ),
                retry_after: response.retry_after,
                source: None,
            });
        }
        if !response.status.is_success() {
            return Err(RemoteError::Refused {
                status: response.status.as_u16(),
                message: error_message(&response.body, response.status),
            });
        }
        let parsed: PushResponse = serde_json::from_slice(&response.raw).map_err(|e| {
            RemoteError::bad_response("push response: not an answer of the protocol").with_source(e)
        })?;
        let (mut outcomes, omitted) = push_outcomes(route, items.len(), parsed)?;
        fetch_omitted(self, route, items, &mut outcomes, omitted).await;
        Ok((outcomes, traffic))
    }

    async fn push_rest(&self, route: &ModelRoute, item: &PushItem) -> (PushOutcome, Traffic) {
        let backend = &route.backend;
        let rest_method = rest_method(item.kind);
        let config = route.rest.resolve(rest_method);
        let sent_method = config.method_sent();
        let method = match sent_method {
            RestMethod::Get => Method::GET,
            RestMethod::Post => Method::POST,
            RestMethod::Patch => Method::PATCH,
            RestMethod::Put => Method::PUT,
            RestMethod::Delete => Method::DELETE,
        };
        let server_ids = backend
            .server_ids
            .as_ref()
            .filter(|_| item.kind == OpKind::Create);
        if let Some(ids) = server_ids.filter(|_| item.sent) {
            // The create was sent before (its answer lost, or the process stopped before the
            // re-key): the copy it made is found by the local id, never made twice.
            match self.lookup_local_id(route, ids, &item.id).await {
                Ok(Some(found)) => {
                    return (
                        PushOutcome::Applied {
                            version: found.version,
                            record: Some(found),
                        },
                        Traffic::default(),
                    )
                }
                Ok(None) => {}
                Err(err) => {
                    return (
                        PushOutcome::Transient {
                            message: format!(
                                "looking up an earlier copy of the create: {}",
                                crate::error::chain_text(&err)
                            ),
                            retry_after: None,
                        },
                        Traffic::default(),
                    )
                }
            }
        }
        let id = sent_method.targets_item().then_some(item.id.as_str());
        let url = match config.build_url(&self.base_url, &route.endpoint, id, item.data.as_ref()) {
            Ok(url) => url,
            Err(err) => {
                return (
                    PushOutcome::Rejected {
                        status: 0,
                        message: err.to_string(),
                    },
                    Traffic::default(),
                )
            }
        };
        // What is sent: without the server's fields (and the id, when the server assigns it),
        // with the local id in its field when it does.
        let data = item.data.clone().map(|mut data| {
            backend.outgoing(route.schema, &mut data);
            if let Some(ids) = server_ids {
                data.insert(ids.local_id_field.clone(), Value::String(item.id.clone()));
            }
            data
        });
        let body = data
            .clone()
            .map(|data| config.shape_body_for(data, Some(&item.id)));
        let mut owned_headers: Vec<(String, String)> = Vec::new();
        if let Some(name) = &backend.idempotency_header {
            owned_headers.push((name.clone(), item.idempotency_key.clone()));
        }
        if item.kind != OpKind::Create {
            owned_headers.extend(backend.conditional_header(item.base_version));
        }
        let headers: Vec<(&str, String)> = owned_headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.clone()))
            .collect();
        let sent = body
            .as_ref()
            .and_then(|b| serde_json::to_vec(b).ok())
            .map_or(0, |b| b.len() as u64);
        let retries = config.effective_retry_count(0);
        let response = match self
            .send(Outgoing {
                method,
                url: &url,
                config: Some(&config),
                extra_headers: &headers,
                query: &[],
                body: body.as_ref().map(Payload::Json),
                timeout: None,
                // A 2xx is read below: a body that is not JSON must not undo the success.
                raw_success: true,
                retries,
            })
            .await
        {
            Ok(response) => response,
            Err(err) => {
                let retry_after = match &err {
                    RemoteError::Unavailable { retry_after, .. } => *retry_after,
                    _ => None,
                };
                return (
                    PushOutcome::Transient {
                        message: crate::error::chain_text(&err),
                        retry_after,
                    },
                    Traffic { sent, received: 0 },
                );
            }
        };
        let traffic = Traffic {
            sent: response.sent,
            received: response.bytes.saturating_sub(response.sent),
        };
        let status = response.status;
        let etag = etag_of(&response.headers).map(str::to_owned);
        let outcome = if status.is_success() {
            // The write was accepted; a body that is empty, not JSON or not a record only means
            // there is no server copy to take (resending would apply the write twice on an
            // API without idempotency keys).
            let parsed = if response.raw.is_empty() {
                None
            } else {
                match serde_json::from_slice::<Value>(&response.raw) {
                    Ok(value) => Some(value),
                    Err(err) => {
                        tracing::warn!(status = %status, error = %err, "push answered with a body that is not JSON; taking the write as applied");
                        None
                    }
                }
            };
            let answer = match parsed.map(|body| config.extract_response(body)) {
                Some(Ok(Value::Object(object))) => Some(object),
                _ => None,
            };
            match server_ids {
                Some(ids) => self.created_with_server_id(route, ids, item, data, answer, etag),
                None => {
                    let record = answer.and_then(|object| {
                        // An answer that is part of a record (`{"updatedAt": ...}`) is laid
                        // over what was sent.
                        let mut merged = data.clone().unwrap_or_default();
                        merged.extend(object);
                        if !merged.contains_key(route.schema.id().wire_name) {
                            merged.insert(
                                route.schema.id().wire_name.to_owned(),
                                Value::String(item.id.clone()),
                            );
                        }
                        read_record(route, merged, etag.as_deref()).ok()
                    });
                    let version = match (&record, etag.as_deref()) {
                        (Some(r), _) => r.version,
                        (None, Some(tag))
                            if backend.version == crate::backend::VersionSource::ETag =>
                        {
                            crate::backend::etag_version(tag).unwrap_or(0)
                        }
                        _ => 0,
                    };
                    PushOutcome::Applied { version, record }
                }
            }
        } else if backend.conflict_statuses.contains(&status.as_u16())
            && !(item.kind == OpKind::Create
                && backend.is_already_exists(status.as_u16(), &response.body))
        {
            self.conflict_outcome(route, item, status, response.body, etag)
                .await
        } else if item.kind == OpKind::Create
            && backend.is_already_exists(status.as_u16(), &response.body)
        {
            self.already_exists_outcome(route, item, data.as_ref())
                .await
        } else if (status == StatusCode::NOT_FOUND || status == StatusCode::GONE)
            && item.kind == OpKind::Delete
        {
            // Already gone: the delete has the effect it wanted.
            PushOutcome::Applied {
                version: 0,
                record: None,
            }
        } else if Disposition::of_status(status.as_u16()) == Disposition::Retry {
            // Outages, and credentials that may be renewed (401/403): `crate::disposition`.
            PushOutcome::Transient {
                message: format!("HTTP {status}: {}", error_message(&response.body, status)),
                retry_after: response.retry_after,
            }
        } else {
            PushOutcome::Rejected {
                status: status.as_u16(),
                message: error_message(&response.body, status),
            }
        };
        (outcome, traffic)
    }

    /// The outcome of a create the backend answered with its own id: the record under that
    /// id (what was sent, with the answer laid over it). An answer without the id is taken
    /// as unknown: the create is tried again, and that try finds the copy by its local id.
    fn created_with_server_id(
        &self,
        route: &ModelRoute,
        ids: &crate::backend::ServerIds,
        item: &PushItem,
        data: Option<serde_json::Map<String, Value>>,
        answer: Option<serde_json::Map<String, Value>>,
        etag: Option<String>,
    ) -> PushOutcome {
        let answer_value = answer.clone().map(Value::Object).unwrap_or(Value::Null);
        let Some(server_id) =
            crate::backend::at_path(&answer_value, &ids.id_at).and_then(field_text)
        else {
            return PushOutcome::Transient {
                message: format!(
                    "the create of `{}` was answered without an id at `{}`",
                    item.id, ids.id_at
                ),
                retry_after: None,
            };
        };
        let mut merged = data.unwrap_or_default();
        merged.extend(answer.unwrap_or_default());
        merged.insert(
            route.schema.id().wire_name.to_owned(),
            Value::String(server_id),
        );
        match read_record(route, merged, etag.as_deref()) {
            Ok(record) => PushOutcome::Applied {
                version: record.version,
                record: Some(record),
            },
            Err(err) => PushOutcome::Transient {
                message: crate::error::chain_text(&err),
                retry_after: None,
            },
        }
    }

    /// A stale base version: the current record from the answer (where the backend
    /// configuration says) or, when the answer has none, fetched.
    async fn conflict_outcome(
        &self,
        route: &ModelRoute,
        item: &PushItem,
        status: StatusCode,
        body: Value,
        etag: Option<String>,
    ) -> PushOutcome {
        let from_body = route
            .backend
            .conflict_record_at
            .as_deref()
            .and_then(|path| crate::backend::at_path(&body, path))
            .or(Some(&body))
            .and_then(Value::as_object)
            .filter(|object| {
                object.contains_key(route.schema.id().wire_name)
                    || object.contains_key(sync_protocol::ID_KEY)
            })
            .and_then(|object| read_record(route, object.clone(), etag.as_deref()).ok());
        let current = match from_body {
            Some(current) => Some(current),
            None => match self.fetch(route, &item.id).await {
                Ok(found) => found,
                Err(err) => {
                    return PushOutcome::Transient {
                        message: format!(
                        "HTTP {status}: a conflict whose current record could not be fetched: {}",
                        crate::error::chain_text(&err)
                    ),
                        retry_after: None,
                    }
                }
            },
        };
        match current {
            Some(current) => PushOutcome::Conflict { current },
            None => PushOutcome::Rejected {
                status: status.as_u16(),
                message: "conflict, and the record is gone from the remote".to_owned(),
            },
        }
    }

    /// A create answered "exists already": a replay whose first answer was lost when the
    /// record holds what was sent (applied), else a record of the same id made by someone
    /// else (a conflict).
    async fn already_exists_outcome(
        &self,
        route: &ModelRoute,
        item: &PushItem,
        sent: Option<&serde_json::Map<String, Value>>,
    ) -> PushOutcome {
        match self.fetch(route, &item.id).await {
            Ok(Some(found)) => {
                let id_key = route.schema.id().wire_name;
                let same = sent.is_none_or(|sent| {
                    sent.iter()
                        .filter(|(key, _)| key.as_str() != id_key)
                        .all(|(key, value)| found.data.get(key) == Some(value))
                });
                if same {
                    PushOutcome::Applied {
                        version: found.version,
                        record: Some(found),
                    }
                } else {
                    PushOutcome::Conflict { current: found }
                }
            }
            Ok(None) => PushOutcome::Transient {
                message: format!(
                    "the create of `{}` was answered \"exists already\" but the record cannot be read",
                    item.id
                ),
                retry_after: None,
            },
            Err(err) => PushOutcome::Transient {
                message: format!(
                    "reading the record a create found existing: {}",
                    crate::error::chain_text(&err)
                ),
                retry_after: None,
            },
        }
    }

    fn records_of(
        &self,
        route: &ModelRoute,
        value: Value,
    ) -> Result<Vec<RemoteRecord>, RemoteError> {
        records_of(route, value)
    }

    /// A call of the default protocol's own endpoints (`sync/...`): the answer read as `T` (an
    /// empty body as JSON `null`), a status other than 2xx as the error.
    async fn protocol_call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
    ) -> Result<T, RemoteError> {
        let url = self.absolute(path);
        let response = self
            .send(Outgoing {
                method,
                url: &url,
                config: None,
                extra_headers: &[],
                query,
                body: None,
                timeout: None,
                raw_success: false,
                retries: 0,
            })
            .await?;
        let status = response.status.as_u16();
        if !response.status.is_success() {
            let message = error_message(&response.body, response.status);
            return Err(if crate::disposition::is_outage(status) {
                RemoteError::Unavailable {
                    message,
                    retry_after: response.retry_after,
                    source: None,
                }
            } else {
                RemoteError::Refused { status, message }
            });
        }
        serde_json::from_value(response.body).map_err(|e| {
            RemoteError::bad_response(format!("the answer of {path} cannot be read")).with_source(e)
        })
    }

    /// A GET of `url` with the `get` configuration, the body whole (no extraction): `query`,
    /// then the configuration's supplemental entries as query parameters (`id` fills their
    /// `{id}`).
    async fn get_body(
        &self,
        url: &str,
        config: &RestRequest,
        query: &[(String, String)],
        id: Option<&str>,
    ) -> Result<Response, RemoteError> {
        let mut query = query.to_vec();
        let extra = config.supplemental_query(id, &query);
        query.extend(extra);
        let response = self
            .send(Outgoing {
                method: Method::GET,
                url,
                config: Some(config),
                extra_headers: &[],
                query: &query,
                body: None,
                timeout: None,
                raw_success: false,
                retries: config.effective_retry_count(0),
            })
            .await?;
        if is_transient(response.status) {
            return Err(RemoteError::Unavailable {
                message: format!(
                    "HTTP {}: {}",
                    response.status,
                    error_message(&response.body, response.status)
                ),
                retry_after: response.retry_after,
                source: None,
            });
        }
        if !response.status.is_success() {
            return Err(RemoteError::Refused {
                status: response.status.as_u16(),
                message: error_message(&response.body, response.status),
            });
        }
        Ok(response)
    }

    /// The records of a list read's body: at `records_at` when set, else where the `get`
    /// configuration says.
    fn list_records(
        &self,
        route: &ModelRoute,
        config: &RestRequest,
        body: Value,
    ) -> Result<Vec<RemoteRecord>, RemoteError> {
        let value = match list_path(route) {
            Some(path) => crate::backend::take_path(body, path).ok_or_else(|| {
                RemoteError::bad_response(format!(
                    "the records are not at `{path}` (RestPull::records_at)"
                ))
            })?,
            None => config.extract_response(body).map_err(|e| {
                RemoteError::bad_response(
                    "the records are not where the request configuration says",
                )
                .with_source(e)
            })?,
        };
        self.records_of(route, value)
    }

    /// Finds the copy an earlier send of a create made on a backend that assigns ids (by the
    /// field that keeps the local id).
    async fn lookup_local_id(
        &self,
        route: &ModelRoute,
        ids: &crate::backend::ServerIds,
        local_id: &str,
    ) -> Result<Option<RemoteRecord>, RemoteError> {
        let config = route.rest.resolve(RestMethod::Get);
        let url = config
            .build_url(&self.base_url, &route.endpoint, None, None)
            .map_err(|e| RemoteError::config("the request URL cannot be built").with_source(e))?;
        let query = vec![(
            ids.lookup.0.clone(),
            ids.lookup.1.replace("{local_id}", local_id),
        )];
        let response = self.get_body(&url, &config, &query, None).await?;
        let records = self.list_records(route, &config, response.body)?;
        Ok(records
            .into_iter()
            .find(|r| r.data.get(&ids.local_id_field).and_then(Value::as_str) == Some(local_id)))
    }

    /// Reads one page of a [`PullMode::Rest`] pull.
    async fn pull_rest(
        &self,
        route: &ModelRoute,
        pull: &RestPull,
        url: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RemotePage, RemoteError> {
        let config = route.rest.resolve(RestMethod::Get);
        let state = PullState::from_cursor(cursor);
        let mut query: Vec<(String, String)> = Vec::new();
        // Keyset pages after the first ask from the largest value read, skipping the records
        // of that value already read (kept in `next`).
        let keyset_skip: Option<u64> = match (&pull.paging, &state.next) {
            (Paging::Keyset { .. }, Some(ties)) => Some(ties.parse().unwrap_or(0)),
            _ => None,
        };
        let bound = match keyset_skip {
            Some(_) => state.newest.as_ref(),
            None => state.since.as_ref(),
        }
        .or(pull.since.as_ref().and_then(|s| s.initial.as_ref()));
        if let (Some(since), Some(bound)) = (&pull.since, bound) {
            let parameter = since.parameter(bound).ok_or_else(|| {
                RemoteError::config(format!(
                    "the pull bound {bound:?} cannot be written as {:?}",
                    since.format
                ))
            })?;
            query.push(parameter);
        }
        if let Some((name, value)) = &pull.sort {
            query.push((name.clone(), value.clone()));
        }
        query.extend(pull.parameters.iter().cloned());
        let mut target = url.to_owned();
        let mut position: u64 = 0;
        match &pull.paging {
            Paging::None => {}
            Paging::PageNumber {
                page_param,
                size_param,
                first,
            } => {
                position = state
                    .next
                    .as_deref()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(*first);
                query.push((page_param.clone(), position.to_string()));
                query.push((size_param.clone(), limit.to_string()));
            }
            Paging::Offset {
                offset_param,
                limit_param,
            } => {
                position = state
                    .next
                    .as_deref()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                query.push((offset_param.clone(), position.to_string()));
                query.push((limit_param.clone(), limit.to_string()));
            }
            Paging::Cursor {
                cursor_param,
                limit_param,
            } => {
                if let Some(token) = &state.next {
                    query.push((cursor_param.clone(), token.clone()));
                }
                if let Some(name) = limit_param {
                    query.push((name.clone(), limit.to_string()));
                }
            }
            Paging::Keyset {
                limit_param,
                skip_param,
            } => {
                query.push((limit_param.clone(), limit.to_string()));
                query.push((skip_param.clone(), keyset_skip.unwrap_or(0).to_string()));
            }
            Paging::NextUrl { limit_param } => match &state.next {
                // The page the previous one named, as it named it.
                Some(next) => {
                    target = reqwest::Url::parse(url)
                        .and_then(|base| base.join(next))
                        .map_err(|e| {
                            RemoteError::bad_response(format!(
                                "the next page's URL {next:?} is not a URL"
                            ))
                            .with_source(e)
                        })?
                        .to_string();
                    query.clear();
                }
                None => {
                    if let Some(name) = limit_param {
                        query.push((name.clone(), limit.to_string()));
                    }
                }
            },
        }
        let response = self.get_body(&target, &config, &query, None).await?;
        let bytes = response.bytes;
        let header = |name: &str| {
            response
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let body = response.body;
        // The signal, read before the records are taken out of the body.
        /// What the page says about the next one.
        enum Signal {
            /// No next page.
            Last,
            /// The next page's URL or token.
            Named(String),
            /// The total count of the pass's records.
            Total(u64),
            /// More follow while pages are full.
            WhileFull,
        }
        let named = |text: Option<String>| text.map_or(Signal::Last, Signal::Named);
        let signal = match &pull.next {
            NextPage::Never => Signal::Last,
            NextPage::LinkHeader => {
                named(header("link").and_then(|link| crate::backend::link_next(&link)))
            }
            NextPage::Header(name) => named(header(name)),
            NextPage::BodyUrl(path) | NextPage::BodyCursor(path) => named(
                crate::backend::at_path(&body, path)
                    .and_then(field_text)
                    .filter(|t| !t.is_empty()),
            ),
            NextPage::TotalCount(at) => {
                let total = match at {
                    CountAt::Header(name) => header(name).and_then(|t| t.parse::<u64>().ok()),
                    CountAt::Body(path) => {
                        crate::backend::at_path(&body, path).and_then(|v| match v {
                            Value::Number(n) => n.as_u64(),
                            Value::String(s) => s.parse().ok(),
                            _ => None,
                        })
                    }
                };
                Signal::Total(total.ok_or_else(|| {
                    RemoteError::bad_response(format!("the page has no total count at {at:?}"))
                })?)
            }
            NextPage::FullPage => Signal::WhileFull,
        };
        let records = self.list_records(route, &config, body)?;
        let read = records.len() as u64;
        let more = match &signal {
            Signal::Last => false,
            Signal::Named(_) => true,
            // An empty page ends the pass whatever the count says (records deleted meanwhile).
            // A keyset page's count is of its own query, which skipped `keyset_skip`.
            Signal::Total(total) => match keyset_skip {
                Some(skip) => read > 0 && skip.saturating_add(read) < *total,
                None if matches!(pull.paging, Paging::Keyset { .. }) => read > 0 && read < *total,
                None => read > 0 && state.read.saturating_add(read) < *total,
            },
            Signal::WhileFull => read > 0 && read >= limit as u64,
        };
        let values: Vec<String> = pull.since.as_ref().map_or_else(Vec::new, |since| {
            records
                .iter()
                .filter_map(|r| r.data.get(&since.field).and_then(field_text))
                .collect()
        });
        let next = if more {
            Some(match (&pull.paging, signal) {
                (Paging::Keyset { .. }, _) => {
                    // Records of the largest value read so far, in this pass.
                    let newest = crate::rest::newest_cursor(
                        values.iter().cloned().chain(state.newest.clone()),
                        None,
                    );
                    let same = |v: &String| {
                        newest.as_deref().is_some_and(|n| {
                            crate::rest::cursor_order(v, n) == std::cmp::Ordering::Equal
                        })
                    };
                    let before = match (&state.newest, keyset_skip) {
                        (Some(old), Some(skip)) if same(old) => skip,
                        _ => 0,
                    };
                    let on_page = values.iter().filter(|v| same(v)).count() as u64;
                    before.saturating_add(on_page).to_string()
                }
                (Paging::PageNumber { .. }, _) => position.saturating_add(1).to_string(),
                (Paging::Offset { .. }, _) => position.saturating_add(read).to_string(),
                (_, Signal::Named(next)) => next,
                // `check` pairs a token or URL scheme with a signal that names the next page.
                _ => return Err(RemoteError::bad_response("the next page is not named")),
            })
        } else {
            None
        };
        let after = state.after_page(values.into_iter(), read, next);
        Ok(RemotePage {
            records,
            next_cursor: Some(after.to_cursor()),
            has_more: more,
            bytes,
            ..RemotePage::default()
        })
    }

    /// A GET of `url` with the `get` configuration: `query`, then the configuration's
    /// supplemental entries as query parameters (`id` fills their `{id}`).
    async fn get_json(
        &self,
        url: &str,
        config: &RestRequest,
        query: &[(String, String)],
        id: Option<&str>,
    ) -> Result<(Value, u64), RemoteError> {
        let response = self.get_body(url, config, query, id).await?;
        let value = config.extract_response(response.body).map_err(|e| {
            RemoteError::bad_response("the records are not where the request configuration says")
                .with_source(e)
        })?;
        Ok((value, response.bytes))
    }
}

/// Where a request failed.
#[derive(Clone, Copy)]
enum Stage {
    /// Connecting, or sending the request and waiting for the answer's head.
    Request,
    /// Reading the answer's body.
    Response,
}

/// A request that got no (complete) answer: the server is unavailable for now. The HTTP
/// client's error is kept as the source; the message says what failed, and where.
fn transport_error(err: reqwest::Error, stage: Stage) -> RemoteError {
    let url = err.url().map_or_else(String::new, |url| {
        let mut url = url.clone();
        url.set_query(None);
        format!(" {url}")
    });
    let message = match stage {
        Stage::Request if err.is_timeout() => format!("no answer from{url} in time"),
        Stage::Request if err.is_connect() => format!("cannot connect to{url}"),
        Stage::Request => format!("the request to{url} failed"),
        Stage::Response if err.is_timeout() => format!("the answer from{url} stalled"),
        Stage::Response => format!("reading the answer from{url} failed"),
    };
    RemoteError::unavailable(message).with_source(err)
}

/// The configured method whose options govern an op of `kind`.
fn rest_method(kind: OpKind) -> RestMethod {
    match kind {
        OpKind::Create => RestMethod::Post,
        OpKind::Update => RestMethod::Patch,
        OpKind::Replace => RestMethod::Put,
        OpKind::Delete => RestMethod::Delete,
    }
}

/// What a batch request that failed as a whole means for each of its items, when other
/// requests of the same push were answered: what the engine would do with the whole request
/// (`crate::disposition`), item by item.
fn outcome_of_failed_request(err: &RemoteError) -> PushOutcome {
    match err {
        RemoteError::Refused { status, message }
            if Disposition::of_status(*status) == Disposition::Fail =>
        {
            PushOutcome::Rejected {
                status: *status,
                message: message.clone(),
            }
        }
        RemoteError::Unavailable {
            message,
            retry_after,
            ..
        } => PushOutcome::Transient {
            message: message.clone(),
            retry_after: *retry_after,
        },
        other => PushOutcome::Transient {
            message: crate::error::chain_text(other),
            retry_after: None,
        },
    }
}

/// The records of a list body (an array, or an object with `items` or `data`), each read
/// through the model's [`RestBackend`](crate::RestBackend) into the protocol's keys.
fn records_of(route: &ModelRoute, value: Value) -> Result<Vec<RemoteRecord>, RemoteError> {
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut object) => match object.remove("items").or_else(|| object.remove("data"))
        {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(RemoteError::bad_response(
                    "expected an array of records (or an object with `items`)",
                ))
            }
        },
        other => {
            return Err(RemoteError::bad_response(format!(
                "expected an array of records, got {}",
                crate::error::JsonKind::of(&other)
            )))
        }
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(object) => read_record(route, object, None),
            other => Err(RemoteError::bad_response(format!(
                "a record is not a JSON object: {other}"
            ))),
        })
        .collect()
}

/// One received record through the model's backend configuration (`etag`: the answer's
/// `ETag`, for a single record).
fn read_record(
    route: &ModelRoute,
    mut object: serde_json::Map<String, Value>,
    etag: Option<&str>,
) -> Result<RemoteRecord, RemoteError> {
    route.backend.to_wire(&mut object, etag);
    parse_remote_record(route.schema, object)
}

/// Where a list read's records are, when the pull configuration says.
fn list_path(route: &ModelRoute) -> Option<&str> {
    match &route.pull {
        PullMode::Rest(pull) => pull.records_at.as_deref(),
        _ => None,
    }
}

fn etag_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(ETAG).and_then(|v| v.to_str().ok())
}

fn field_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[async_trait]
impl Remote for HttpRemote {
    fn max_batch(&self) -> usize {
        if self.batch_push.is_some() {
            self.max_batch
        } else {
            1
        }
    }

    async fn push(
        &self,
        route: &ModelRoute,
        items: &[PushItem],
    ) -> Result<(Vec<PushOutcome>, Traffic), RemoteError> {
        if let Some(path) = &self.batch_push {
            return self.push_batch(path, route, items).await;
        }
        let mut outcomes = Vec::with_capacity(items.len());
        let mut traffic = Traffic::default();
        for item in items {
            let (outcome, t) = self.push_rest(route, item).await;
            traffic.sent = traffic.sent.saturating_add(t.sent);
            traffic.received = traffic.received.saturating_add(t.received);
            outcomes.push(outcome);
        }
        Ok((outcomes, traffic))
    }

    async fn pull(
        &self,
        route: &ModelRoute,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RemotePage, RemoteError> {
        let config = route.rest.resolve(RestMethod::Get);
        let url = config
            .build_url(&self.base_url, &route.endpoint, None, None)
            .map_err(|e| RemoteError::config("the request URL cannot be built").with_source(e))?;
        match &route.pull {
            PullMode::Cursor => {
                let mut query = vec![("limit".to_owned(), limit.to_string())];
                if let Some(cursor) = cursor {
                    query.push(("since".to_owned(), cursor.to_owned()));
                }
                let (value, bytes) = self.get_json(&url, &config, &query, None).await?;
                read_pull_page(route, value, bytes)
            }
            PullMode::UpdatedSince { field, since_param } => {
                let mut query = vec![
                    ("_sort".to_owned(), field.clone()),
                    ("_limit".to_owned(), limit.to_string()),
                ];
                if let Some(cursor) = cursor {
                    query.push((since_param.clone(), cursor.to_owned()));
                }
                let (value, bytes) = self.get_json(&url, &config, &query, None).await?;
                let records = self.records_of(route, value)?;
                // The largest value by number or time, never as text ("9" < "10").
                let next_cursor = crate::rest::newest_cursor(
                    records
                        .iter()
                        .filter_map(|r| r.data.get(field).and_then(field_text)),
                    cursor,
                );
                // A full page whose newest value is the cursor again makes no progress.
                let has_more = records.len() >= limit && next_cursor.as_deref() != cursor;
                Ok(RemotePage {
                    records,
                    next_cursor,
                    has_more,
                    bytes,
                    ..RemotePage::default()
                })
            }
            PullMode::Rest(pull) => self.pull_rest(route, pull, &url, cursor, limit).await,
            PullMode::FullPaged => {
                let page: u64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(1);
                let query = vec![
                    ("_page".to_owned(), page.to_string()),
                    ("_limit".to_owned(), limit.to_string()),
                ];
                let (value, bytes) = self.get_json(&url, &config, &query, None).await?;
                let records = self.records_of(route, value)?;
                let has_more = records.len() >= limit;
                Ok(RemotePage {
                    next_cursor: has_more.then(|| (page + 1).to_string()),
                    records,
                    has_more,
                    bytes,
                    ..RemotePage::default()
                })
            }
        }
    }

    async fn fetch(
        &self,
        route: &ModelRoute,
        id: &str,
    ) -> Result<Option<RemoteRecord>, RemoteError> {
        let config = route.rest.resolve(RestMethod::Get);
        let url = config
            .build_url(&self.base_url, &route.endpoint, Some(id), None)
            .map_err(|e| RemoteError::config("the request URL cannot be built").with_source(e))?;
        let response = match self.get_body(&url, &config, &[], Some(id)).await {
            Ok(response) => response,
            Err(RemoteError::Refused { status: 404, .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        let etag = etag_of(&response.headers).map(str::to_owned);
        let value = config.extract_response(response.body).map_err(|e| {
            RemoteError::bad_response("the record is not where the request configuration says")
                .with_source(e)
        })?;
        match value {
            Value::Object(object) => read_record(route, object, etag.as_deref()).map(Some),
            other => Err(RemoteError::bad_response(format!(
                "expected a record object, got {}",
                crate::error::JsonKind::of(&other)
            ))),
        }
    }

    async fn fetch_page(
        &self,
        route: &ModelRoute,
        params: &[(String, String)],
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<RemotePage, RemoteError> {
        let config = route.rest.resolve(RestMethod::Get);
        let url = config
            .build_url(&self.base_url, &route.endpoint, None, None)
            .map_err(|e| RemoteError::config("the request URL cannot be built").with_source(e))?;
        let mut query: Vec<(String, String)> = params.to_vec();
        if let Some(limit) = limit {
            query.push(("limit".to_owned(), limit.to_string()));
            query.push(("_limit".to_owned(), limit.to_string()));
        }
        if let Some(offset) = offset {
            query.push(("_offset".to_owned(), offset.to_string()));
        }
        let response = self.get_body(&url, &config, &query, None).await?;
        let bytes = response.bytes;
        let records = self.list_records(route, &config, response.body)?;
        Ok(RemotePage {
            records,
            next_cursor: None,
            has_more: false,
            bytes,
            ..RemotePage::default()
        })
    }

    fn has_sync_metadata(&self) -> bool {
        // sync-server's protocol (its batch endpoint); a REST API has no metadata endpoint.
        self.batch_push.is_some()
    }

    async fn sync_metadata(&self) -> Result<crate::protocol::SyncMetadataResponse, RemoteError> {
        self.protocol_call(Method::GET, "sync/metadata", &[]).await
    }

    async fn digest_page(
        &self,
        route: &ModelRoute,
        after: &str,
        limit: usize,
    ) -> Result<crate::protocol::DigestPage, RemoteError> {
        let path = format!(
            "sync/digest/{}",
            percent_encoding::utf8_percent_encode(
                &route.endpoint,
                percent_encoding::NON_ALPHANUMERIC
            )
        );
        let query = [
            ("after".to_owned(), after.to_owned()),
            ("limit".to_owned(), limit.to_string()),
        ];
        self.protocol_call(Method::GET, &path, &query).await
    }

    async fn forget_device(&self, device: &str) -> Result<bool, RemoteError> {
        let path = format!(
            "sync/metadata/devices/{}",
            percent_encoding::utf8_percent_encode(device, percent_encoding::NON_ALPHANUMERIC)
        );
        match self
            .protocol_call::<serde::de::IgnoredAny>(Method::DELETE, &path, &[])
            .await
        {
            Ok(_) => Ok(true),
            Err(RemoteError::Refused { status: 404, .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    async fn health(&self) -> Result<(), RemoteError> {
        let config = RestRequest::new(RestMethod::Get).timeout(Duration::from_secs(5));
        let url = self.absolute(&self.health_path);
        let response = self
            .send(Outgoing {
                method: Method::GET,
                url: &url,
                config: Some(&config),
                extra_headers: &[],
                query: &[],
                body: None,
                timeout: None,
                raw_success: false,
                retries: 0,
            })
            .await?;
        let status = response.status.as_u16();
        if response.status.is_success() {
            Ok(())
        } else if crate::disposition::is_outage(status) {
            Err(RemoteError::Unavailable {
                message: format!("health check: HTTP {status}"),
                retry_after: response.retry_after,
                source: None,
            })
        } else {
            // The server answered, without a health endpoint (a REST API's 404) or refusing
            // the check: it is reachable, not healthy by its own word.
            Err(RemoteError::Refused {
                status,
                message: format!("health check: HTTP {status}"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// Guards against: a transport failure flattened into a string, so that an application
    /// cannot tell a refused connection from a timeout or reach the I/O error underneath.
    #[tokio::test]
    async fn a_refused_connection_keeps_the_http_clients_error_as_the_source() {
        // A port that was just free: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let remote = HttpRemote::builder(format!("http://127.0.0.1:{port}"))
            .build()
            .unwrap();
        let err = remote.health().await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("remote unavailable: cannot connect to http://127.0.0.1:"),
            "{err}"
        );
        // The chain goes from the remote error to reqwest's and down to the operating system's.
        let mut chain = Vec::new();
        let mut next = err.source();
        while let Some(source) = next {
            chain.push(source);
            next = source.source();
        }
        let reqwest = chain
            .iter()
            .find_map(|e| e.downcast_ref::<reqwest::Error>())
            .unwrap_or_else(|| panic!("no reqwest::Error in {chain:?}"));
        assert!(reqwest.is_connect(), "{reqwest:?}");
        let io = chain
            .iter()
            .find_map(|e| e.downcast_ref::<std::io::Error>())
            .unwrap_or_else(|| panic!("no io::Error in {chain:?}"));
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        // Through the crate's `Error` too (`Remote` is transparent), and in the text kept for
        // the status and op errors.
        let err = crate::Error::from(err);
        assert!(err
            .source()
            .is_some_and(|s| s.downcast_ref::<reqwest::Error>().is_some()));
        let text = crate::error::chain_text(&err);
        assert!(text.contains("error sending request"), "{text}");
    }

    /// Guards against: an invalid header reported as text only.
    #[test]
    fn invalid_headers_keep_their_parse_error() {
        let err = HttpRemote::builder("http://127.0.0.1:9")
            .header("bad header", "x")
            .build()
            .unwrap_err();
        assert!(matches!(err, RemoteError::Config { .. }), "{err:?}");
        assert!(err.source().is_some_and(|s| s
            .downcast_ref::<reqwest::header::InvalidHeaderName>()
            .is_some()));
    }
}
