//! HTTP compression between the client and sync-server (issue 18): the client compresses
//! push bodies only once an answer of the server said it reads them (`Accept-Encoding` in a
//! response), the server reads them, and compressed answers (pull pages) are decoded.

#![allow(clippy::unwrap_used)]

mod support;

use offline_sync_kit::prelude::*;
use support::{always_online_builder, todo, ClientDb, Server, Todo, ALICE};

fn todos(prefix: &str, n: usize) -> Vec<Todo> {
    (0..n)
        .map(|i| {
            let mut t = todo(&format!("{prefix}-{i:04}"), &format!("Task number {i}"));
            t.description = "Something to do, described in a sentence or two.".into();
            t.tags = vec!["home".into(), "errands".into()];
            t
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_bodies_are_compressed_once_the_server_says_it_reads_them() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let mut options = support::fast_options();
    options.auto_sync = false;
    options.direction = SyncDirection::PushOnly;
    options.batch_size = 100;
    // Always online: no health probe, so the first push is this client's first request.
    let sync = always_online_builder(&server.url(), &db, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();

    // The first request: nothing said yet what the server reads, so the body goes plain.
    sync.save_all(&todos("a", 100)).await.unwrap();
    let first = sync.sync_all().await.unwrap();
    assert_eq!(first.pushed, 100);
    // Its answer said zstd: the next batch of the same size is sent compressed.
    sync.save_all(&todos("b", 100)).await.unwrap();
    let second = sync.sync_all().await.unwrap();
    assert_eq!(second.pushed, 100);
    assert!(
        second.bytes_sent * 3 < first.bytes_sent,
        "plain {} B, then {} B",
        first.bytes_sent,
        second.bytes_sent
    );
    let stored = server.records(ALICE.1, "todos").await;
    assert_eq!(stored.len(), 200);
    assert!(stored
        .iter()
        .any(|r| r["id"] == "b-0042" && r["title"] == "Task number 42"));
    sync.shutdown().await.unwrap();

    // A fresh client pulls the 200 records in compressed pages and stores them as they were.
    let db2 = ClientDb::new();
    let mut options = support::fast_options();
    options.auto_sync = false;
    options.batch_size = 1000;
    let reader = always_online_builder(&server.url(), &db2, ALICE.1)
        .await
        .model::<Todo>()
        .options(options)
        .build()
        .await
        .unwrap();
    let report = reader.pull::<Todo>().await.unwrap();
    assert_eq!(report.pulled, 200);
    let got: Option<Todo> = reader.get("b-0042").await.unwrap();
    assert_eq!(got, Some(todos("b", 100).swap_remove(42)));
    reader.shutdown().await.unwrap();
}
