//! HTTP compression both ways (issue 18), negotiated per request: answers are compressed
//! (zstd or gzip) only for a client that sends `Accept-Encoding`, request bodies are read
//! compressed when they say so (`Content-Encoding`), every answer tells which request codings
//! the server reads, and a plain client sees plain JSON as before. The zip-bomb limit is in
//! `hostile.rs`.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};

use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{Client, Serve, TestDb, ALICE};

sync_testkit::backend_matrix!(
    async:
    answers_are_compressed_only_for_clients_that_ask,
    compressed_request_bodies_are_read_like_plain_ones,
);

/// A client that decodes nothing itself, whatever features reqwest has in this build, so the
/// test sees the bytes the server sent.
fn raw_client(server: &sync_server::RunningServer) -> Client {
    let mut client = Client::new(server, ALICE.1);
    client.http = reqwest::Client::builder()
        .no_gzip()
        .no_zstd()
        .no_brotli()
        .no_deflate()
        .build()
        .unwrap();
    client
}

fn ops(n: usize, prefix: &str) -> Value {
    let ops: Vec<Value> = (0..n)
        .map(|i| {
            json!({"collection": "todos", "op": "create", "id": format!("{prefix}-{i}"),
                   "data": {"title": format!("Task number {i}"), "done": i % 3 == 0,
                            "notes": "Something to do, described in a sentence or two."}})
        })
        .collect();
    json!({ "ops": ops })
}

fn decode(coding: Option<&str>, bytes: &[u8]) -> Vec<u8> {
    match coding {
        None => bytes.to_vec(),
        Some("zstd") => zstd::stream::decode_all(bytes).unwrap(),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Some(other) => panic!("unexpected coding {other}"),
    }
}

async fn answers_are_compressed_only_for_clients_that_ask(db: TestDb) {
    let server = db.start().await;
    let client = raw_client(&server);
    let reply = client.post("/sync/push", &ops(300, "r")).await;
    assert_eq!(reply.status, StatusCode::OK);

    let mut bodies = Vec::new();
    for accept in [
        None,
        Some("zstd"),
        Some("gzip"),
        Some("gzip, zstd;q=0.5"),
        Some("br"),
    ] {
        let mut request = client.request(Method::GET, "/todos?limit=300");
        if let Some(accept) = accept {
            request = request.header(ACCEPT_ENCODING, accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        let coding = headers
            .get(CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap().to_owned());
        let expected = match accept {
            Some("zstd") => Some("zstd"),
            Some(a) if a.starts_with("gzip") => Some("gzip"),
            _ => None,
        };
        assert_eq!(coding.as_deref(), expected, "Accept-Encoding {accept:?}");
        // Every answer says which request codings the server reads.
        let reads = headers.get(ACCEPT_ENCODING).unwrap().to_str().unwrap();
        assert!(reads.contains("zstd") && reads.contains("gzip"), "{reads}");
        let wire = response.bytes().await.unwrap();
        let plain = decode(coding.as_deref(), &wire);
        if coding.is_some() {
            assert!(
                wire.len() * 2 < plain.len(),
                "{coding:?}: {} bytes on the wire for {} of JSON",
                wire.len(),
                plain.len()
            );
        }
        let page: Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 300);
        bodies.push(page);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));

    // Small answers go out plain even to a client that asks.
    let response = client
        .request(Method::GET, "/todos/r-1")
        .header(ACCEPT_ENCODING, "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(CONTENT_ENCODING).is_none());
    server.shutdown().await.unwrap();
}

async fn compressed_request_bodies_are_read_like_plain_ones(db: TestDb) {
    let server = db.start().await;
    let client = raw_client(&server);
    for coding in ["zstd", "gzip", "identity"] {
        let body = serde_json::to_vec(&ops(200, coding)).unwrap();
        let encoded = match coding {
            "zstd" => zstd::bulk::compress(&body, 1).unwrap(),
            "gzip" => {
                let mut gzip =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gzip.write_all(&body).unwrap();
                gzip.finish().unwrap()
            }
            _ => body.clone(),
        };
        let reply = Client::send(
            client
                .request(Method::POST, "/sync/push")
                .header("Content-Type", "application/json")
                .header(CONTENT_ENCODING, coding)
                .body(encoded),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{coding}: {}", reply.body);
        let results = reply.body["results"].as_array().unwrap();
        assert_eq!(results.len(), 200, "{coding}");
        assert!(
            results.iter().all(|r| r["status"] == "applied"),
            "{coding}: {}",
            results[0]
        );
        let record = client.get(&format!("/todos/{coding}-7")).await;
        assert_eq!(record.status, StatusCode::OK, "{coding}");
        assert_eq!(record.body["title"], "Task number 7", "{coding}");
    }
    server.shutdown().await.unwrap();
}
