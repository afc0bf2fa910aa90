//! Realtime fan-out of one sync-server (issue 18, goal 5): 2,000 WebSocket subscribers of 200
//! users (10 sockets each) on one server over loopback; 1,000 writes one at a time, each by
//! one user over HTTP, and the time from just before the write until each of that user's
//! subscribers has the event. Also the server's resident memory per idle connection.
//!
//! ```text
//! cargo bench -p offline-sync-kit --bench fanout
//! ```
//!
//! The server runs in this process on SQLite; the clients (sockets and writer) run in a child
//! process (this binary re-invoked as `child ...`), so the server's RSS (`VmRSS`, read before
//! and after the sockets connect and subscribe) counts no client memory. Both processes
//! raise their open-file limit to its hard limit (`prlimit`) when it is below what the
//! sockets need. Options: `SYNC_BENCH_SUBSCRIBERS` (2,000), `SYNC_BENCH_USERS` (200),
//! `SYNC_BENCH_WRITES` (1,000, after 50 warm-up writes). Goals: p99 < 50 ms, < 100 KiB per
//! idle connection.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sync_server::{Limits, SyncServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn user(u: usize) -> String {
    format!("user-{u:03}")
}

fn token(u: usize) -> String {
    format!("user-{u:03}-secret-token-for-the-bench")
}

fn status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The soft open-file limit, raised to the hard limit with `prlimit` when below `need`.
fn raise_nofile(need: u64) -> u64 {
    let read = || -> (u64, u64) {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap_or("");
        let mut numbers = line
            .split_whitespace()
            .filter_map(|w| w.parse::<u64>().ok());
        (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
    };
    let (soft, hard) = read();
    if soft < need {
        let pid = std::process::id().to_string();
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("warning: prlimit could not raise the open-file limit ({soft})");
        }
    }
    read().0
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

// ---------------------------------------------------------------------------------------------
// Child: the sockets and the writer.

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscriber(ws_url: &str, u: usize) -> Ws {
    let mut request = ws_url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token(u))).unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let subscribe = json!({"type": "subscription",
                           "data": {"action": "subscribe", "channel": "todos"}});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let v: Value = serde_json::from_str(text.as_str()).unwrap();
                if v["type"] == "subscribed" {
                    return ws;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("socket of {} closed while subscribing: {other:?}", user(u)),
        }
    }
}

async fn child(ws_url: String, http_url: String, subs: usize, users: usize, writes: usize) {
    raise_nofile(subs as u64 + 256);
    // Receipts: (record id, time it arrived) from every socket.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut connecting = Vec::new();
    for s in 0..subs {
        let ws_url = ws_url.clone();
        let tx = tx.clone();
        connecting.push(tokio::spawn(async move {
            let ws = subscriber(&ws_url, s % users).await;
            // Subscribed: from here each socket reports what it gets.
            tokio::spawn(async move {
                let (_sink, mut stream) = ws.split();
                while let Some(Ok(message)) = stream.next().await {
                    if let Message::Text(text) = message {
                        let at = Instant::now();
                        if let Ok(v) = serde_json::from_str::<Value>(text.as_str()) {
                            if let Some(id) = v["id"].as_str() {
                                let _ = tx.send((id.to_owned(), at));
                            }
                        }
                    }
                }
            });
        }));
        // A few at a time, as clients would arrive.
        if s % 100 == 99 {
            for c in connecting.drain(..) {
                c.await.unwrap();
            }
        }
    }
    for c in connecting {
        c.await.unwrap();
    }
    drop(tx);
    println!("READY");
    // Wait for the parent's go (it reads the server's memory with the sockets idle first).
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
    })
    .await
    .unwrap();

    let per_user = subs / users;
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let mut deliveries = Vec::with_capacity(writes * per_user);
    let mut last_of_write = Vec::with_capacity(writes);
    let warm = 50;
    let started = Instant::now();
    for w in 0..warm + writes {
        let u = w % users;
        let id = format!("w-{w}");
        let sent = Instant::now();
        let response = client
            .post(format!("{http_url}/todos"))
            .bearer_auth(token(u))
            .json(&json!({"id": id, "title": format!("write {w}"), "done": false}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let _ = response.bytes().await.unwrap();
        let mut got = 0;
        let mut last = 0.0f64;
        while got < per_user {
            let (rid, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("an event within 10 s")
                .expect("the sockets are open");
            if rid != id {
                panic!("event of {rid} while waiting for {id}: delivered to a wrong user?");
            }
            got += 1;
            let ms = at.duration_since(sent).as_secs_f64() * 1e3;
            last = last.max(ms);
            if w >= warm {
                deliveries.push(ms);
            }
        }
        if w >= warm {
            last_of_write.push(last);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    deliveries.sort_by(f64::total_cmp);
    last_of_write.sort_by(f64::total_cmp);
    let result = json!({
        "deliveries": deliveries.len(),
        "p50": quantile(&deliveries, 0.5),
        "p99": quantile(&deliveries, 0.99),
        "max": deliveries.last().copied().unwrap_or(f64::NAN),
        "last_p50": quantile(&last_of_write, 0.5),
        "last_p99": quantile(&last_of_write, 0.99),
        "writes_per_sec": (warm + writes) as f64 / secs,
        "client_rss_kb": status_kb("VmRSS"),
    });
    println!("RESULT {result}");
}

// ---------------------------------------------------------------------------------------------
// Parent: the server.

async fn parent() {
    let subs = env_or("SYNC_BENCH_SUBSCRIBERS", 2_000);
    let users = env_or("SYNC_BENCH_USERS", 200).max(1);
    let writes = env_or("SYNC_BENCH_WRITES", 1_000);
    let nofile = raise_nofile(subs as u64 + 256);
    let dir = tempfile::tempdir().unwrap();
    let mut limits = Limits::default();
    limits.max_connections = subs + 256;
    let mut builder = SyncServer::builder()
        .database(format!(
            "sqlite://{}",
            dir.path().join("fanout.db").display()
        ))
        .limits(limits);
    for u in 0..users {
        builder = builder.token(user(u), token(u));
    }
    let server = builder
        .build()
        .await
        .unwrap()
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    println!(
        "fanout: {subs} WebSocket subscribers of {users} users ({} each) on one sync-server \
         (SQLite, loopback, in this process; clients in a child process; open-file limit \
         {nofile}); {writes} writes one at a time over HTTP, after 50 warm-up writes",
        subs / users
    );
    // Settle the server's allocations with a few requests first.
    let probe = reqwest::Client::new();
    for _ in 0..20 {
        let _ = probe
            .get(format!("{}/health", server.url()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await;
    }
    let rss_before = status_kb("VmRSS");
    let exe = std::env::current_exe().unwrap();
    let mut child = tokio::process::Command::new(exe)
        .args([
            "child",
            &server.ws_url(),
            &server.url(),
            &subs.to_string(),
            &users.to_string(),
            &writes.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let connect_started = Instant::now();
    let mut result: Option<Value> = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        if line == "READY" {
            let connect_secs = connect_started.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let rss_idle = status_kb("VmRSS");
            let per = (rss_idle.saturating_sub(rss_before)) as f64 * 1024.0 / subs as f64;
            println!(
                "  connected and subscribed {subs} sockets in {connect_secs:.1} s; server RSS \
                 {:.1} MB before, {:.1} MB with them idle: {:.1} KiB per connection — goal < 100 \
                 KiB [{}]",
                rss_before as f64 / 1024.0,
                rss_idle as f64 / 1024.0,
                per / 1024.0,
                if per < 100.0 * 1024.0 { "PASS" } else { "FAIL" }
            );
            stdin.write_all(b"GO\n").await.unwrap();
            stdin.flush().await.unwrap();
        } else if let Some(json) = line.strip_prefix("RESULT ") {
            result = Some(serde_json::from_str(json).unwrap());
        }
    }
    let status = child.wait().await.unwrap();
    assert!(status.success(), "the client process failed");
    let r = result.expect("the client process printed no result");
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "  write -> subscriber, over {} deliveries: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms — \
         goal p99 < 50 ms [{}]",
        r["deliveries"],
        f("p50"),
        f("p99"),
        f("max"),
        if f("p99") < 50.0 { "PASS" } else { "FAIL" }
    );
    println!(
        "  write -> the last of its user's subscribers: p50 {:.2} ms, p99 {:.2} ms; {:.0} writes/s \
         closed loop; server peak RSS {:.1} MB; client process RSS {:.1} MB",
        f("last_p50"),
        f("last_p99"),
        f("writes_per_sec"),
        status_kb("VmHWM") as f64 / 1024.0,
        f("client_rss_kb") / 1024.0
    );
    println!(
        "  each event is serialised once by the hub and shared by the sockets that send it \
         (sync-server/src/events.rs, `Published`)"
    );
    server.shutdown().await.unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.first().map(String::as_str) == Some("child") {
        let number = |i: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
        runtime.block_on(child(
            args[1].clone(),
            args[2].clone(),
            number(3),
            number(4).max(1),
            number(5),
        ));
        return;
    }
    runtime.block_on(parent());
}
