//! Runs the attacks of issue 13 against a live sync-server on 127.0.0.1 and prints, per
//! attack, the server's peak RSS (`VmHWM` of the server process) and whether `/health`
//! answered within 100 ms throughout.
//!
//! ```sh
//! cargo run -p sync-server --example abuse            # about a minute and a half
//! ```
//!
//! Each attack gets a fresh server: this program starts itself again with `--serve DIR` as a
//! child process (default limits, a SQLite file in a temporary directory), so `VmHWM` is that
//! attack's peak. Bounded in time and count, loopback only. Linux only (`/proc`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const USER: &str = "alice";
const TOKEN: &str = "alice-abuse-secret-token";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.get(1).map(String::as_str) == Some("--serve") {
        let dir = args.get(2).expect("--serve DIR");
        runtime.block_on(serve(dir));
    } else {
        runtime.block_on(attack_all());
    }
}

/// The server child: default limits, prints its address, serves until killed.
async fn serve(dir: &str) {
    let server = sync_server::SyncServer::builder()
        .database(format!("sqlite://{dir}/abuse.db"))
        .token(USER, TOKEN)
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap());
    server.serve(listener).await.unwrap();
}

struct Server {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--serve")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Self {
            child,
            addr: line.trim().to_owned(),
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Peak resident set size in MiB (`VmHWM`).
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Probes `/health` every 50 ms on a new connection each time, until stopped; returns the
/// slowest answer (a failure counts as 10 s).
fn probe_health(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut worst = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            let ok = matches!(http.get(format!("{url}/health")).send().await, Ok(r) if r.status() == 200);
            let took = if ok {
                start.elapsed()
            } else {
                Duration::from_secs(10)
            };
            worst = worst.max(took);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worst
    })
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn push(url: &str, ops: Vec<Value>) -> reqwest::Response {
    http()
        .post(format!("{url}/sync/push"))
        .bearer_auth(TOKEN)
        .json(&json!({ "ops": ops }))
        .send()
        .await
        .unwrap()
}

async fn ws(
    addr: &str,
    token: Option<&str>,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// What one attack reports.
type Outcome = String;

async fn attack_all() {
    type Attack = fn(Arc<Server>) -> futures_util::future::BoxFuture<'static, Outcome>;
    let attacks: [(&str, Attack); 7] = [
        ("1 push of 300 stale ops on a 512 KiB record", |s| {
            Box::pin(stale_push(s))
        }),
        (
            "2 subscriber that stops reading, 2000 x 64 KiB events",
            |s| Box::pin(stalled_subscriber(s)),
        ),
        ("3 256 subscriptions with 1 MiB parameters", |s| {
            Box::pin(subscription_flood(s))
        }),
        ("4 900 half-sent requests held 12 s", |s| {
            Box::pin(slowloris(s))
        }),
        (
            "5 JSON readers cannot read back (depth 200, 1e400, \\u0000)",
            |s| Box::pin(bad_json(s)),
        ),
        ("6 pull of 200 x 512 KiB records, limit 1000", |s| {
            Box::pin(big_pull(s))
        }),
        ("7 5000 wrong tokens + 500 WebSocket auth guesses", |s| {
            Box::pin(guessing(s))
        }),
    ];
    println!("| attack | peak RSS before -> after (MiB) | slowest /health | /health < 100 ms | outcome |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, attack) in attacks {
        let server = Arc::new(Server::start());
        // Warm up, so the baseline includes the pools and the first request.
        let _ = http().get(format!("{}/health", server.url())).send().await;
        let before = server.peak_rss_mib();
        let stop = Arc::new(AtomicBool::new(false));
        let probe = probe_health(server.url(), stop.clone());
        let outcome = tokio::time::timeout(Duration::from_secs(60), attack(server.clone()))
            .await
            .unwrap_or_else(|_| "did not finish within 60 s".into());
        stop.store(true, Ordering::Relaxed);
        let worst = probe.await.unwrap();
        let after = server.peak_rss_mib();
        println!(
            "| {name} | {before:.0} -> {after:.0} | {} ms | {} | {outcome} |",
            worst.as_millis(),
            if worst < Duration::from_millis(100) {
                "yes"
            } else {
                "no"
            }
        );
    }
}

async fn stale_push(server: Arc<Server>) -> Outcome {
    let url = server.url();
    let blob = "x".repeat(512 * 1024);
    push(
        &url,
        vec![json!({"collection": "todos", "op": "create", "id": "big", "data": {"blob": blob}})],
    )
    .await;
    let ops = (0..300)
        .map(|n| json!({"collection": "todos", "op": "update", "id": "big", "base_version": 0, "data": {"n": n}}))
        .collect();
    let answer = push(&url, ops).await.bytes().await.unwrap();
    format!(
        "answer {:.1} MiB (unbounded: ~150 MiB)",
        answer.len() as f64 / 1048576.0
    )
}

async fn stalled_subscriber(server: Arc<Server>) -> Outcome {
    let url = server.url();
    let mut stalled = ws(&server.addr, Some(TOKEN)).await;
    stalled
        .send(Message::text(
            json!({"type": "subscription", "data": {"action": "subscribe", "channel": "todos"}})
                .to_string(),
        ))
        .await
        .unwrap();
    let pad = "p".repeat(64 * 1024);
    for batch in 0..40 {
        let ops = (0..50)
            .map(|n| json!({"collection": "todos", "op": "create", "id": format!("e{batch}-{n}"), "data": {"pad": pad}}))
            .collect();
        push(&url, ops).await;
    }
    let mut received = 0;
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(5), stalled.next()).await
    {
        if matches!(message, Message::Text(_)) {
            received += 1;
        }
    }
    format!("stalled socket got {received} of 2000 events, then was dropped")
}

async fn subscription_flood(server: Arc<Server>) -> Outcome {
    let mut socket = ws(&server.addr, Some(TOKEN)).await;
    let big = "v".repeat(1 << 20);
    let (mut refused, mut accepted, mut unanswered) = (0, 0, 0);
    for n in 0..256 {
        let message = json!({"type": "subscription", "data": {"action": "subscribe", "channel": format!("c{n}"), "parameters": {"p": big}}});
        if socket
            .send(Message::text(message.to_string()))
            .await
            .is_err()
        {
            break;
        }
        // The server's pings may come in between; the answer is the next text message.
        loop {
            match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
                Ok(Some(Ok(Message::Text(reply)))) => {
                    if reply.as_str().contains("\"subscribed\"") {
                        accepted += 1;
                    } else {
                        refused += 1;
                    }
                    break;
                }
                Ok(Some(Ok(_))) => {}
                _ => {
                    unanswered += 1;
                    break;
                }
            }
        }
    }
    format!("{refused} refused, {accepted} accepted, {unanswered} unanswered of 256")
}

async fn slowloris(server: Arc<Server>) -> Outcome {
    let mut held = Vec::new();
    for _ in 0..900 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(&server.addr).await {
            let _ = stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n")
                .await;
            held.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut cut = 0;
    for stream in &mut held {
        let mut buf = [0u8; 1];
        if matches!(
            tokio::time::timeout(
                Duration::from_millis(1),
                tokio::io::AsyncReadExt::read(stream, &mut buf)
            )
            .await,
            Ok(Ok(0) | Err(_))
        ) {
            cut += 1;
        }
    }
    format!(
        "{} opened, {cut} cut off by the server after 12 s",
        held.len()
    )
}

async fn bad_json(server: Arc<Server>) -> Outcome {
    let url = server.url();
    let deep = format!(r#"{{"d":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
    let bodies = [
        deep,
        r#"{"n":1e400}"#.to_owned(),
        r#"{"s":"a\u0000b"}"#.to_owned(),
    ];
    let mut refused = 0;
    for n in 0..1000 {
        let body = &bodies[n % bodies.len()];
        let reply = http()
            .post(format!("{url}/todos"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if reply.status() == 400 {
            refused += 1;
        }
    }
    format!("{refused} of 1000 refused (400)")
}

async fn big_pull(server: Arc<Server>) -> Outcome {
    let url = server.url();
    let blob = "b".repeat(512 * 1024);
    for batch in 0..20 {
        let ops = (0..10)
            .map(|n| json!({"collection": "todos", "op": "create", "id": format!("r{batch}-{n}"), "data": {"blob": blob}}))
            .collect();
        push(&url, ops).await;
    }
    let page = http()
        .get(format!("{url}/todos?limit=1000"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    format!(
        "first page {:.1} MiB of 100 MiB stored",
        page.len() as f64 / 1048576.0
    )
}

async fn guessing(server: Arc<Server>) -> Outcome {
    let url = server.url();
    let (mut unauthorized, mut throttled) = (0, 0);
    let client = http();
    for n in 0..5000 {
        let reply = client
            .get(format!("{url}/todos"))
            .bearer_auth(format!("guess-{n:012}"))
            .send()
            .await
            .unwrap();
        match reply.status().as_u16() {
            401 => unauthorized += 1,
            429 => throttled += 1,
            _ => {}
        }
    }
    let mut socket_guesses = 0;
    let mut socket = ws(&server.addr, None).await;
    for n in 0..500 {
        let guess = json!({"type": "auth", "token": format!("ws-guess-{n:012}")}).to_string();
        if socket.send(Message::text(guess)).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => socket_guesses += 1,
            _ => break,
        }
    }
    format!("HTTP: {unauthorized} answered 401, {throttled} 429; one socket allowed {socket_guesses} guess(es)")
}
