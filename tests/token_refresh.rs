//! Expiring credentials (issue 14, point 6): a token provider on the builder; a 401 refreshes
//! once and retries (HTTP and the WebSocket upgrade); a provider that keeps failing leaves the
//! manager in `NeedsAuth` with its queue intact and sending nothing until credentials work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use offline_sync_kit::{
    Error, ManualConnectivity, SyncManager, SyncState, TokenError, WebSocketConfig,
};
use support::{eventually, fast_options, store_at, todo, ClientDb, FaultProxy, Server, Todo};

/// Hands out `alice-token-one-0001` first, then `alice-token-two-0002`; counts its calls; fails while `broken`.
#[derive(Clone, Default)]
struct Provider {
    calls: Arc<AtomicUsize>,
    broken: Arc<AtomicBool>,
}

impl Provider {
    fn closure(
        &self,
    ) -> impl Fn() -> std::future::Ready<Result<String, TokenError>> + Send + Sync + 'static {
        let this = self.clone();
        move || {
            let n = this.calls.fetch_add(1, Ordering::SeqCst);
            let result = if this.broken.load(Ordering::SeqCst) {
                Err::<String, TokenError>("the identity provider is down".into())
            } else if n == 0 {
                Ok("alice-token-one-0001".to_owned())
            } else {
                Ok("alice-token-two-0002".to_owned())
            };
            std::future::ready(result)
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn manager(url: &str, db: &ClientDb, provider: &Provider, ws: Option<String>) -> SyncManager {
    let mut options = fast_options();
    options.auto_sync = false;
    let mut builder = SyncManager::builder()
        .base_url(url)
        .store(store_at(&db.path()).await)
        .connectivity(ManualConnectivity::new(true))
        .options(options)
        .token_provider(provider.closure())
        .user_id("alice")
        .model::<Todo>();
    if let Some(ws) = ws {
        builder = builder.websocket(WebSocketConfig::new(ws));
    }
    builder.build().await.unwrap()
}

async fn ids_on_server(server: &Server, token: &str) -> Vec<String> {
    let mut ids: Vec<String> = server
        .records(token, "todos")
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_push_and_socket_go_on() {
    let mut server = Server::start().await;
    server
        .restart_with_tokens(&[("alice", "alice-token-one-0001")])
        .await;
    let db = ClientDb::new();
    let provider = Provider::default();
    let ws = format!("ws://{}/ws", server.addr);
    let sync = manager(&server.url(), &db, &provider, Some(ws)).await;
    sync.save(&todo("t1", "with the first token"))
        .await
        .unwrap();
    assert!(sync.sync_all().await.unwrap().is_success());
    assert_eq!(provider.calls(), 1, "one token fetched at start");
    let realtime = sync.realtime().unwrap();
    realtime.connect().unwrap();
    eventually(Duration::from_secs(10), "the socket is open", || async {
        realtime.is_connected()
    })
    .await;

    // The first token expires: the server now takes only the second.
    server
        .restart_with_tokens(&[("alice", "alice-token-two-0002")])
        .await;
    sync.save(&todo("t2", "after the expiry")).await.unwrap();
    let report = sync.sync_all().await.unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(
        report.retried, 0,
        "the 401 was answered by a refresh, not a retry"
    );
    assert_eq!(
        ids_on_server(&server, "alice-token-two-0002").await,
        vec!["t1", "t2"]
    );
    // The socket reconnected with the fresh token.
    eventually(
        Duration::from_secs(15),
        "the socket reconnected",
        || async { realtime.is_connected() },
    )
    .await;
    assert_eq!(
        provider.calls(),
        2,
        "exactly one refresh for the HTTP and WebSocket 401s"
    );
    // (The reconnect's catch-up pull may still be running.)
    let mut status = sync.status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.state == SyncState::Completed),
    )
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test]
async fn a_provider_that_keeps_failing_gives_needs_auth_with_the_queue_intact() {
    let mut server = Server::start().await;
    server
        .restart_with_tokens(&[("alice", "alice-token-one-0001")])
        .await;
    let proxy = FaultProxy::start(server.addr).await;
    let db = ClientDb::new();
    let provider = Provider::default();
    let sync = manager(&proxy.url(), &db, &provider, None).await;
    sync.save(&todo("t1", "first")).await.unwrap();
    assert!(sync.sync_all().await.unwrap().is_success());

    server
        .restart_with_tokens(&[("alice", "alice-token-three-003")])
        .await;
    provider.broken.store(true, Ordering::SeqCst);
    for id in ["t2", "t3", "t4"] {
        sync.save(&todo(id, "queued")).await.unwrap();
    }
    let result = sync.sync_all().await;
    assert!(
        matches!(&result, Err(Error::NeedsAuth { .. }))
            || matches!(&result, Ok(r) if r.pushed == 0),
        "{result:?}"
    );
    let status = sync.status().borrow().clone();
    assert_eq!(status.state, SyncState::NeedsAuth, "{status:?}");
    assert_eq!(status.pending_changes, 3);
    assert_eq!(
        status.failed_changes, 0,
        "a refused token must not fail the ops"
    );

    // No retry storm: with automatic sync on and more saves, nothing goes out.
    let mut options = fast_options();
    options.auto_sync = true;
    sync.update_options(options);
    let connections = proxy.connections.load(Ordering::SeqCst);
    let calls = provider.calls();
    sync.save(&todo("t5", "queued too")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        proxy.connections.load(Ordering::SeqCst),
        connections,
        "requests went out"
    );
    assert_eq!(provider.calls(), calls, "the provider was hammered");
    // An explicit sync asks the provider once and sends nothing.
    match sync.sync_all().await {
        Err(Error::NeedsAuth { .. }) => {}
        other => panic!("expected NeedsAuth, got {other:?}"),
    }
    assert_eq!(provider.calls(), calls + 1);
    assert_eq!(proxy.connections.load(Ordering::SeqCst), connections);
    assert_eq!(sync.status().borrow().pending_changes, 4);

    // The identity provider is back with a token the server takes: the queue goes out.
    server
        .restart_with_tokens(&[("alice", "alice-token-two-0002")])
        .await;
    provider.broken.store(false, Ordering::SeqCst);
    sync.refresh_credentials().await.unwrap();
    eventually(Duration::from_secs(10), "the queue went out", || async {
        sync.status().borrow().pending_changes == 0
    })
    .await;
    assert_eq!(
        ids_on_server(&server, "alice-token-two-0002").await,
        vec!["t1", "t2", "t3", "t4", "t5"]
    );
    assert_eq!(sync.status().borrow().failed_changes, 0);
}
