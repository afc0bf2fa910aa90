//! Test support: a real server on 127.0.0.1:0 over a real SQLite file or a fresh Postgres
//! schema (`sync_testkit::TestDb`), a real HTTP client and a real WebSocket client. The users,
//! the database per test and the backend matrix are `sync_testkit`'s; what needs
//! `sync_server`'s types is here, since the testkit sits below this crate.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sync_server::{RunningServer, SyncServer, SyncServerBuilder};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use sync_testkit::{TestDb, ALICE, BOB};

/// Starts a server on a test database (`db.builder()`, `db.start()`).
#[allow(async_fn_in_trait)]
pub trait Serve {
    /// A server builder on this database that knows [`ALICE`] and [`BOB`].
    fn builder(&self) -> SyncServerBuilder;
    /// Starts a server with [`Serve::builder`]'s configuration.
    async fn start(&self) -> RunningServer;
}

impl Serve for TestDb {
    fn builder(&self) -> SyncServerBuilder {
        SyncServer::builder()
            .database(self.url.clone())
            .token(ALICE.0, ALICE.1)
            .token(BOB.0, BOB.1)
    }

    async fn start(&self) -> RunningServer {
        start(self.builder()).await
    }
}

/// Builds `builder` and serves it on a free loopback port.
pub async fn start(builder: SyncServerBuilder) -> RunningServer {
    let server = builder.build().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    server.spawn(listener).unwrap()
}

/// An HTTP client of one user.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

/// Status and JSON body of a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Client {
    pub fn new(server: &RunningServer, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: server.url(),
            token: Some(token.to_owned()),
        }
    }

    pub fn anonymous(server: &RunningServer) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: server.url(),
            token: None,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    pub async fn send(req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.unwrap();
        let status = res.status();
        let bytes = res.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "response is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply { status, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        Self::send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        Self::send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn create(&self, collection: &str, body: &Value) -> Reply {
        self.post(&format!("/{collection}"), body).await
    }

    pub async fn push(&self, ops: Value) -> Reply {
        self.post("/sync/push", &json!({ "ops": ops })).await
    }

    /// Pulls every page from `since` and returns the items.
    pub async fn pull_all(&self, collection: &str, query: &str, limit: usize) -> Vec<Value> {
        let mut cursor = "0".to_owned();
        let mut items = Vec::new();
        loop {
            let reply = self
                .get(&format!(
                    "/{collection}?since={cursor}&limit={limit}{query}"
                ))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
            let page = reply.body;
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            cursor = page["next_cursor"].as_str().unwrap().to_owned();
            if !page["has_more"].as_bool().unwrap() {
                return items;
            }
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects a WebSocket, with an `Authorization` header when `token` is given.
pub async fn ws_connect(server: &RunningServer, token: Option<&str>) -> Ws {
    let mut request = server.ws_url().into_client_request().unwrap();
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws
}

pub async fn ws_send(ws: &mut Ws, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

/// The next JSON text message, or `None` if none arrives within `wait`.
pub async fn ws_next(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match msg.unwrap() {
            Message::Text(text) => return Some(serde_json::from_str(text.as_str()).unwrap()),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// The next message, failing the test if none arrives within 10 s.
pub async fn ws_expect(ws: &mut Ws) -> Value {
    ws_next(ws, Duration::from_secs(10))
        .await
        .expect("expected a WebSocket message within 10 s")
}

/// Subscribes and waits for the acknowledgement.
pub async fn ws_subscribe(ws: &mut Ws, channel: &str, parameters: Value) {
    ws_send(
        ws,
        json!({"type": "subscription", "data": {"action": "subscribe", "channel": channel, "parameters": parameters}}),
    )
    .await;
    let ack = ws_expect(ws).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    assert_eq!(ack["channel"], channel);
}
