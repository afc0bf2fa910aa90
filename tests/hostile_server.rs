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

/// Guards against: a server that answers `has_more: true` with a new cursor and no records,
/// forever; the pull looped without end. It stops with a bad-response error after a few such
/// pages (the limit in `engine/pull.rs`, `MAX_EMPTY_PAGES`, is 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_empty_pages_stop_the_pull_with_an_error() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let calls = std::sync::Arc::new(AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&calls);
    let app = Router::new().route(
        "/todos",
        axum::routing::get(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                axum::Json(serde_json::json!({
                    "items": [], "next_cursor": format!("c{n}"), "has_more": true
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync = false;
    options.direction = SyncDirection::PullOnly;
    let sync = SyncManager::builder()
        .base_url(format!("http://{addr}"))
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), sync.sync_all())
        .await
        .expect("the pull ends");
    let err = outcome.expect_err("an endless run of empty pages is an error");
    assert!(err.to_string().contains("empty"), "{err}");
    assert!(
        calls.load(Ordering::SeqCst) <= 5,
        "{} pages asked",
        calls.load(Ordering::SeqCst)
    );
    sync.shutdown().await.unwrap();
    server.abort();
}

/// Guards against: response bodies read whole into memory (600 MiB -> 632 MB RSS). With
/// `max_response_bytes(1 MiB)`, a 256 MiB answer is refused with a clear error after at most a
/// few MiB were read: the server manages to send far less than the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_larger_than_the_cap_is_refused_without_reading_it_whole() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: u64 = 4096; // 256 MiB
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&sent);
    let app = Router::new().route(
        "/todos",
        axum::routing::get(move || {
            let counter = std::sync::Arc::clone(&counter);
            async move {
                let head = futures_util::stream::once(async {
                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"items\":[\""))
                });
                let body = futures_util::StreamExt::map(
                    futures_util::stream::iter(0..CHUNKS),
                    move |_| {
                        counter.fetch_add(CHUNK as u64, Ordering::SeqCst);
                        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; CHUNK]))
                    },
                );
                axum::body::Body::from_stream(futures_util::StreamExt::chain(head, body))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync = false;
    options.direction = SyncDirection::PullOnly;
    let remote = offline_sync_kit::HttpRemote::builder(format!("http://{addr}"))
        .max_response_bytes(1024 * 1024)
        .build()
        .unwrap();
    let sync = SyncManager::builder()
        .remote(remote)
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    let err = sync.sync_all().await.expect_err("refused");
    assert!(err.to_string().contains("1048576 bytes"), "{err}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent < 32 * 1024 * 1024, "the server sent {sent} bytes");
    sync.shutdown().await.unwrap();
    server.abort();
}

/// Guards against: record ids that a URL parser normalises (`.`, `..`) escaping their REST
/// path (a delete of `..` addressed the collection's parent). They are refused at save time,
/// with nothing stored or queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_are_dot_segments_are_refused_at_save() {
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync = false;
    let sync = SyncManager::builder()
        .base_url("http://127.0.0.1:9")
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    for id in [".", "..", "", "a\u{0}b"] {
        let err = sync.save(&todo(id, "x")).await.expect_err(id);
        assert!(err.to_string().contains("id"), "{id:?}: {err}");
        let err = sync
            .save_all(&[todo("fine", "x"), todo(id, "x")])
            .await
            .expect_err(id);
        assert!(err.to_string().contains("id"), "{id:?}: {err}");
    }
    assert_eq!(sync.status().borrow().pending_changes, 0);
    assert!(sync.get::<Todo>("fine").await.unwrap().is_none());
    sync.shutdown().await.unwrap();
}

/// Guards against: one record that does not fit the model stopping that model's pull on every
/// device, forever (a web client wrote `"title": 5`). The record is quarantined (event, status,
/// `quarantined()`), the cursor moves past it, the records around it arrive, and a later
/// version that fits supersedes it. `retry_quarantined` applies what fits the model now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_fit_the_model_is_quarantined_and_the_pull_goes_on() {
    let server = Server::start().await;
    let http = reqwest::Client::new();
    let wire = |id: &str, title: serde_json::Value| {
        let mut value = serde_json::to_value(todo(id, "x")).unwrap();
        value["title"] = title;
        value
    };
    for body in [
        wire("good1", "fine".into()),
        wire("bad", 5.into()),
        wire("good2", "fine".into()),
    ] {
        let response = http
            .post(format!("{}/todos", server.url()))
            .bearer_auth(ALICE.1)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    let db = ClientDb::new();
    let mut options = fast_options();
    options.auto_sync = false;
    let sync = client_builder(&server.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    let mut events = sync.events();
    sync.sync_all()
        .await
        .expect("the pull goes on past the bad record");
    assert!(sync.get::<Todo>("good1").await.unwrap().is_some());
    assert!(sync.get::<Todo>("good2").await.unwrap().is_some());
    assert!(sync.get::<Todo>("bad").await.unwrap().is_none());
    let event = next_event(
        &mut events,
        offline_sync_kit::SyncEventType::RecordQuarantined,
        Some("bad"),
    )
    .await;
    assert!(
        matches!(event, offline_sync_kit::SyncEvent::RecordQuarantined { ref error, .. } if error.contains("title")),
        "{event:?}"
    );
    assert_eq!(sync.status().borrow().quarantined, 1);
    let kept = sync.quarantined::<Todo>().await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].id.as_deref(), Some("bad"));
    assert_eq!(kept[0].raw["title"], 5, "kept as it came");
    // A second sync does not meet it again: the cursor moved past it.
    sync.sync_all().await.unwrap();
    assert_eq!(sync.quarantined::<Todo>().await.unwrap().len(), 1);
    // Still the same model: trying again applies nothing and keeps it.
    assert_eq!(sync.retry_quarantined::<Todo>().await.unwrap(), 0);
    assert_eq!(sync.status().borrow().quarantined, 1);

    // The web client fixes it: the version that fits supersedes the quarantined copy.
    let response = http
        .patch(format!("{}/todos/bad", server.url()))
        .bearer_auth(ALICE.1)
        .json(&serde_json::json!({"title": "fixed"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    sync.sync_all().await.unwrap();
    assert_eq!(
        sync.get::<Todo>("bad").await.unwrap().unwrap().title,
        "fixed"
    );
    assert!(sync.quarantined::<Todo>().await.unwrap().is_empty());
    assert_eq!(sync.status().borrow().quarantined, 0);
    sync.shutdown().await.unwrap();
}

/// `retry_quarantined` applies a kept record that fits the model as it is now (as after a
/// model change), through the conflict-aware apply path, and releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_quarantined_applies_what_fits_now() {
    use offline_sync_kit::store::{LocalStore, QuarantinedRecord};
    use offline_sync_kit::SyncModel;
    let db = ClientDb::new();
    let mut fits = serde_json::to_value(todo("q1", "now it fits")).unwrap();
    fits["version"] = 4.into();
    let mut never = serde_json::to_value(todo("q2", "x")).unwrap();
    never["title"] = 7.into();
    {
        // Kept aside by an earlier build whose model this record did not fit.
        let store = store_at(&db.path()).await;
        store.prepare_model(Todo::SCHEMA, true).unwrap();
        LocalStore::quarantine(
            &store,
            Todo::SCHEMA,
            &[
                QuarantinedRecord::new(Some("q1".into()), fits, "did not fit an older model"),
                QuarantinedRecord::new(Some("q2".into()), never, "title is a number"),
            ],
        )
        .unwrap();
    }
    let mut options = fast_options();
    options.auto_sync = false;
    let sync = SyncManager::builder()
        .base_url("http://127.0.0.1:9")
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    assert_eq!(sync.status().borrow().quarantined, 2);
    assert_eq!(sync.retry_quarantined::<Todo>().await.unwrap(), 1);
    let q1 = sync.record_state::<Todo>("q1").await.unwrap();
    assert_eq!(q1.meta.map(|m| m.version), Some(4));
    assert_eq!(
        sync.get::<Todo>("q1").await.unwrap().unwrap().title,
        "now it fits"
    );
    let left = sync.quarantined::<Todo>().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key, "q2");
    assert!(left[0].error.contains("model"), "{}", left[0].error);
    assert_eq!(sync.status().borrow().quarantined, 1);
    sync.shutdown().await.unwrap();
}
