//! The client against a hostile or broken server: stand-in servers on 127.0.0.1 that answer
//! what no honest server would, and the engine keeping its promises (no panic, no op frozen,
//! memory bounded, nothing lost).

#![allow(clippy::unwrap_used)]

mod support;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::Router;
use offline_sync_kit::prelude::*;
use offline_sync_kit::store::OpState;
use offline_sync_kit::SyncDirection;
use support::*;

/// A server on 127.0.0.1 whose `/sync/push` answers 503 with the `Retry-After` header
/// `retry_after`.
async fn busy_server(retry_after: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    let app = Router::new().route(
        "/sync/push",
        axum::routing::post(move || async move {
            let mut headers = HeaderMap::new();
            headers.insert("Retry-After", HeaderValue::from_static(retry_after));
            (StatusCode::SERVICE_UNAVAILABLE, headers, "busy")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), server)
}

/// Guards against: a `Retry-After` the engine cannot add to a time (it panicked with
/// "DateTime + TimeDelta overflowed"), or one that freezes the op until year 9999. Both are
/// clamped to the retry policy's largest delay (here 200 ms, from `fast_options`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_or_far_retry_after_is_clamped_to_the_policy_max() {
    for retry_after in ["99999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"] {
        let (url, server) = busy_server(retry_after).await;
        let db = ClientDb::new();
        let mut options = fast_options();
        options.auto_sync = false;
        options.direction = SyncDirection::PushOnly;
        let max = options.retry.max;
        let sync = SyncManager::builder()
            .base_url(&url)
            .store(store_at(&db.path()).await)
            .model::<Todo>()
            .options(options)
            .build()
            .await
            .unwrap();
        sync.save(&todo("t1", "x")).await.unwrap();
        let before = chrono::Utc::now();
        let outcome = tokio::spawn({
            let sync = sync.clone();
            async move { sync.sync_all().await.map(|_| ()) }
        })
        .await;
        assert!(outcome.is_ok(), "{retry_after}: the sync task panicked");
        let state = sync.record_state::<Todo>("t1").await.unwrap();
        assert_eq!(state.ops.len(), 1, "{retry_after}: {state:?}");
        let op = &state.ops[0];
        assert_eq!(op.state, OpState::Pending, "{retry_after}: {op:?}");
        let next = op.next_attempt_at.expect("rescheduled");
        let limit =
            before + chrono::Duration::from_std(max).unwrap() + chrono::Duration::seconds(5);
        assert!(
            next <= limit,
            "{retry_after}: next attempt at {next}, limit {limit}"
        );
        sync.shutdown().await.unwrap();
        server.abort();
    }
}
