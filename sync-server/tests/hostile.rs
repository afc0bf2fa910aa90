//! Hostile and broken peers (issue 13, server points): each test reproduces an attack against a
//! real server on 127.0.0.1 over real sockets and asserts the limit that now bounds it.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{ws_connect, ws_next, ws_send, ws_subscribe, Client, Serve, TestDb, ALICE};
use tokio_tungstenite::tungstenite::Message;

sync_testkit::backend_matrix!(
    async:
    a_push_answer_stays_within_its_byte_budget,
    a_websocket_that_stops_reading_is_dropped_not_buffered,
    subscription_channels_and_parameters_are_bounded,
    json_the_readers_cannot_read_back_is_refused_on_the_way_in,
    a_pull_page_stays_within_its_byte_budget,
    framework_rejections_answer_json_and_reserved_collections_are_refused,
    short_secrets_are_refused_at_start_up,
    a_failed_websocket_auth_closes_the_socket,
    repeated_failed_authentications_from_one_address_are_throttled,
    jwt_claims_are_checked_and_subjects_do_not_meet_static_users,
    a_websocket_session_ends_when_its_jwt_expires,
    a_half_sent_request_header_is_cut_off,
    a_slowly_sent_body_is_answered_408,
    connections_past_the_cap_wait_for_a_free_slot,
    a_user_holds_at_most_max_ws_connections_per_user,
    a_websocket_that_answers_no_pings_is_closed,
    a_batch_of_ops_on_one_record_makes_one_event,
    a_compressed_body_is_limited_by_its_decompressed_size,
);

/// `Limits::max_push_answer_bytes` by default (8 MiB).
const PUSH_ANSWER_BUDGET: usize = 8 * 1024 * 1024;

/// Point 1: 64 stale ops on a 512 KiB record used to answer the record 64 times (32 MiB).
/// The answer stays within `max_push_answer_bytes`; results past it carry the version and
/// `record_omitted: true`, and the client fetches the record.
async fn a_push_answer_stays_within_its_byte_budget(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let blob = "x".repeat(512 * 1024);
    let created = alice
        .create("todos", &json!({"id": "big", "blob": blob}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let version = created.body["version"].as_i64().unwrap();
    let ops: Vec<Value> = (0..64)
        .map(|n| {
            json!({"collection": "todos", "op": "update", "id": "big", "base_version": 0,
                   "data": {"n": n}})
        })
        .collect();
    let response = alice
        .request(Method::POST, "/sync/push")
        .json(&json!({ "ops": ops }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.unwrap();
    // Each result without its record is well under 512 bytes.
    assert!(
        bytes.len() <= PUSH_ANSWER_BUDGET + 64 * 512,
        "a push answer of {} bytes exceeds max_push_answer_bytes ({PUSH_ANSWER_BUDGET})",
        bytes.len()
    );
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 64);
    assert_eq!(
        results[0]["record"]["blob"].as_str().unwrap().len(),
        blob.len()
    );
    let mut omitted = 0;
    for result in results {
        assert_eq!(result["status"], "conflict", "{result}");
        assert_eq!(result["version"], version);
        if result.get("record").is_none() {
            assert_eq!(result["record_omitted"], true, "{result}");
            omitted += 1;
        }
    }
    assert!(omitted > 0, "no record was omitted");
    server.shutdown().await.unwrap();
}

/// Point 2: a subscriber that stops reading used to pin every event in the hub (up to 16,384)
/// while its loop blocked in `send`. Now its queue is bounded (`max_ws_queue_bytes`, 4 MiB by
/// default): it is dropped long before it could be sent every event, and the other
/// connections keep getting theirs.
async fn a_websocket_that_stops_reading_is_dropped_not_buffered(db: TestDb) {
    const EVENTS: usize = 800;
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let mut stalled = ws_connect(&server, Some(ALICE.1)).await;
    ws_subscribe(&mut stalled, "todos", json!({})).await;
    let pad = "p".repeat(64 * 1024);
    for batch in 0..(EVENTS / 50) {
        let ops: Vec<Value> = (0..50)
            .map(|n| {
                json!({"collection": "todos", "op": "create", "id": format!("e{batch}-{n}"),
                       "data": {"pad": pad}})
            })
            .collect();
        let reply = alice.push(Value::Array(ops)).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // Now read what the stalled socket was sent: it must end (a close, or the connection
    // dropped) before all events arrive.
    let mut events = 0;
    let mut close_code = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stalled.next()).await {
            Err(_) => panic!("the stalled socket is still open after {events} events"),
            Ok(None | Some(Err(_))) => break,
            Ok(Some(Ok(Message::Close(frame)))) => {
                close_code = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(Some(Ok(Message::Text(_)))) => events += 1,
            Ok(Some(Ok(_))) => {}
        }
    }
    assert!(
        events < EVENTS,
        "the stalled socket was sent all {events} events: it was buffered, not dropped"
    );
    if let Some(code) = close_code {
        assert!(code == 1013 || code == 1008, "close code {code}");
    }
    // The server still serves a fresh subscriber.
    let mut fresh = ws_connect(&server, Some(ALICE.1)).await;
    ws_subscribe(&mut fresh, "todos", json!({})).await;
    alice.create("todos", &json!({"id": "after"})).await;
    let event = ws_next(&mut fresh, Duration::from_secs(10)).await.unwrap();
    assert_eq!(event["id"], "after");
    server.shutdown().await.unwrap();
}

/// Point 3: channel names and subscription parameters are bounded
/// (`max_collection_len` 128 bytes, `max_subscription_parameters` 16,
/// `max_subscription_bytes` 4 KiB); past them the socket gets an error and stays open.
async fn subscription_channels_and_parameters_are_bounded(db: TestDb) {
    let server = db.start().await;
    let mut ws = ws_connect(&server, Some(ALICE.1)).await;
    let subscribe = |channel: String, parameters: Value| {
        json!({"type": "subscription", "data": {"action": "subscribe", "channel": channel,
               "parameters": parameters}})
    };
    let cases = [
        ("a long channel", subscribe("c".repeat(10_000), json!({}))),
        (
            "a huge parameter",
            subscribe("todos".into(), json!({"p": "v".repeat(1 << 20)})),
        ),
        (
            "too many parameters",
            subscribe(
                "todos".into(),
                Value::Object((0..100).map(|n| (format!("f{n}"), json!(n))).collect()),
            ),
        ),
    ];
    for (case, message) in cases {
        ws_send(&mut ws, message).await;
        let reply = ws_next(&mut ws, Duration::from_secs(10)).await.unwrap();
        let shown: String = reply.to_string().chars().take(200).collect();
        assert_eq!(reply["type"], "error", "{case}: {shown}");
        assert!(
            reply["message"].as_str().unwrap().contains("limit"),
            "{case}: {shown}"
        );
    }
    // Still open and usable.
    ws_subscribe(&mut ws, "todos", json!({"project": "p1"})).await;
    server.shutdown().await.unwrap();
}

/// Point 5: nesting deeper than `max_json_depth` (64), numbers outside f64 (`1e400`) and
/// `\u0000` (which Postgres text cannot hold) used to be stored and then broke PATCH, pushes,
/// events and filtered pulls. They are refused on the way in: a REST write is a 400, a push
/// op is rejected alone.
async fn json_the_readers_cannot_read_back_is_refused_on_the_way_in(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let deep = format!(
        r#"{{"id":"deep","d":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let huge = r#"{"id":"huge","n":1e400}"#.to_owned();
    let long_int = format!(r#"{{"id":"long","n":{}}}"#, "9".repeat(400));
    let nul = r#"{"id":"nul","s":"a\u0000b"}"#.to_owned();
    let nul_key = r#"{"id":"nulkey","a\u0000":1}"#.to_owned();
    for body in [&deep, &huge, &long_int, &nul, &nul_key] {
        let reply = Client::send(
            alice
                .request(Method::POST, "/todos")
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
        let shown: String = body.chars().take(60).collect();
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{shown}: {}",
            reply.body
        );
        assert_eq!(reply.body["code"], "invalid_data", "{shown}");
    }
    // In a push, each bad op is rejected alone and the good one applies.
    let ops = format!(
        r#"{{"ops":[{{"collection":"todos","op":"create","id":"deep","data":{deep}}},
            {{"collection":"todos","op":"create","id":"ok","data":{{"title":"fine"}}}},
            {{"collection":"todos","op":"create","id":"huge","data":{huge}}},
            {{"collection":"todos","op":"create","id":"nul","data":{nul}}}]}}"#
    );
    let reply = Client::send(
        alice
            .request(Method::POST, "/sync/push")
            .header("content-type", "application/json")
            .body(ops),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let statuses: Vec<&str> = reply.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["rejected", "applied", "rejected", "rejected"]);
    // An update (PATCH) with such data is refused too, and the record still reads back.
    let reply = Client::send(
        alice
            .request(Method::PATCH, "/todos/ok")
            .header("content-type", "application/json")
            .body(r#"{"n":-1e999}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    let items = alice.pull_all("todos", "&title=fine", 100).await;
    assert_eq!(items.len(), 1);
    server.shutdown().await.unwrap();
}

/// `Limits::max_page_bytes` by default (8 MiB).
const PAGE_BUDGET: usize = 8 * 1024 * 1024;

/// Point 6: a page was capped in rows only (1000 rows of up to 8 MiB could make one GET load
/// ~8 GiB). It is now cut at `max_page_bytes` (the first row always goes), with `has_more`,
/// and the next page continues from its cursor, over REST and WebSocket alike.
async fn a_pull_page_stays_within_its_byte_budget(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let blob = "b".repeat(512 * 1024);
    for batch in 0..4 {
        let ops: Vec<Value> = (0..10)
            .map(|n| {
                json!({"collection": "todos", "op": "create", "id": format!("r{batch}-{n}"),
                       "data": {"blob": blob}})
            })
            .collect();
        assert_eq!(alice.push(Value::Array(ops)).await.status, StatusCode::OK);
    }
    let response = alice
        .request(Method::GET, "/todos?limit=1000")
        .send()
        .await
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    assert!(
        bytes.len() <= PAGE_BUDGET + blob.len() + 1024,
        "a page of {} bytes exceeds max_page_bytes ({PAGE_BUDGET})",
        bytes.len()
    );
    let page: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(page["has_more"], true);
    // Paging on reaches every record exactly once.
    let items = alice.pull_all("todos", "", 1000).await;
    let mut ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 40);
    // The WebSocket `pull` request reads pages through the same function.
    let mut ws = ws_connect(&server, Some(ALICE.1)).await;
    ws_send(
        &mut ws,
        json!({"type": "request", "id": 1, "method": "pull",
               "body": {"collection": "todos", "since": "0", "limit": 1000}}),
    )
    .await;
    let answer = ws_next(&mut ws, Duration::from_secs(20)).await.unwrap();
    let shown: String = answer.to_string().chars().take(300).collect();
    assert_eq!(answer["status"], 200, "{shown}");
    let items = answer["body"]["items"].as_array().expect(&shown).len();
    assert!(
        items < 40 && items > 0,
        "{items} items in one WebSocket page"
    );
    assert_eq!(answer["body"]["has_more"], true);
    server.shutdown().await.unwrap();
}

/// Point 9: axum's own rejections (405, a path that is not valid percent-encoded UTF-8)
/// answered plain text; they answer the server's JSON error. A collection named like the
/// server's own routes (`health`, `ws`, `sync`) is refused.
async fn framework_rejections_answer_json_and_reserved_collections_are_refused(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let reply = Client::send(alice.request(Method::DELETE, "/sync/push")).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.body["code"], "method_not_allowed", "{}", reply.body);
    let reply = alice.get("/todos/%FF%FE").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body["code"], "invalid_path", "{}", reply.body);
    for collection in ["health", "ws", "sync"] {
        let reply = alice
            .push(json!([{"collection": collection, "op": "create", "id": "x", "data": {}}]))
            .await;
        let result = &reply.body["results"][0];
        assert_eq!(result["status"], "rejected", "{collection}: {result}");
        assert_eq!(
            result["code"], "reserved_collection",
            "{collection}: {result}"
        );
    }
    let reply = alice.create("sync", &json!({"id": "x"})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body["code"], "reserved_collection", "{}", reply.body);
    server.shutdown().await.unwrap();
}

const JWT_SECRET: &[u8] = b"a-jwt-secret-of-32-bytes-or-more";

fn jwt(claims: &Value, crit: Option<Vec<String>>) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.crit = crit;
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Point 7: secrets shorter than `MIN_SECRET_BYTES` (16) are refused at start-up.
async fn short_secrets_are_refused_at_start_up(db: TestDb) {
    let static_token = sync_server::SyncServer::builder()
        .database(db.url.clone())
        .token("carol", "carol-secret")
        .build()
        .await;
    let err = static_token.expect_err("a 12-byte token secret was accepted");
    assert!(err.to_string().contains("16"), "{err}");
    let jwt = sync_server::SyncServer::builder()
        .database(db.url.clone())
        .jwt_secret(b"s3cret".to_vec())
        .build()
        .await;
    let err = jwt.expect_err("a 6-byte JWT secret was accepted");
    assert!(err.to_string().contains("16"), "{err}");
}

/// Point 7: a socket whose `auth` message fails is closed (one guess per socket); it used to
/// stay open for the next guess (110,000 guesses/s).
async fn a_failed_websocket_auth_closes_the_socket(db: TestDb) {
    let server = db.start().await;
    let mut ws = ws_connect(&server, None).await;
    ws_send(
        &mut ws,
        json!({"type": "auth", "token": "wrong-guess-0000"}),
    )
    .await;
    let reply = ws_next(&mut ws, Duration::from_secs(10)).await.unwrap();
    assert_eq!(reply["type"], "error", "{reply}");
    // Whatever is sent next, the socket ends.
    let _ = futures_util::SinkExt::send(
        &mut ws,
        Message::text(json!({"type": "auth", "token": "wrong-guess-0001"}).to_string()),
    )
    .await;
    let next = ws_next(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(next, None, "the socket stayed open after a failed auth");
    server.shutdown().await.unwrap();
}

/// Point 7: past `max_auth_failures_per_minute` (60) failed authentications from one
/// address, its requests with credentials are answered 429 with `Retry-After`; `/health`
/// still answers.
async fn repeated_failed_authentications_from_one_address_are_throttled(db: TestDb) {
    let server = db.start().await;
    let guesser = Client::new(&server, "not-a-valid-token-000");
    let mut statuses = Vec::new();
    for _ in 0..70 {
        let response = guesser.request(Method::GET, "/todos").send().await.unwrap();
        statuses.push(response.status());
    }
    let unauthorized = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(unauthorized, 60, "{statuses:?}");
    let response = guesser.request(Method::GET, "/todos").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "too_many_requests");
    // The WebSocket `auth` message of a throttled address is refused too.
    let mut ws = ws_connect(&server, None).await;
    ws_send(&mut ws, json!({"type": "auth", "token": ALICE.1})).await;
    let reply = ws_next(&mut ws, Duration::from_secs(10)).await.unwrap();
    assert_eq!(reply["type"], "error", "{reply}");
    let health = Client::anonymous(&server).get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    server.shutdown().await.unwrap();
}

/// Point 8: `nbf` in the future, an unknown `crit` header, a `sub` with control characters or
/// over 255 bytes are refused; a JWT whose `sub` names a static-token user is refused unless
/// `jwt_subjects_share_static_users` is set.
async fn jwt_claims_are_checked_and_subjects_do_not_meet_static_users(db: TestDb) {
    let server = support::start(db.builder().jwt_secret(JWT_SECRET.to_vec())).await;
    let exp = now() + 3600;
    let ok = jwt(&json!({"sub": "carol", "exp": exp}), None);
    assert_eq!(
        Client::new(&server, &ok).get("/todos").await.status,
        StatusCode::OK
    );
    let refused = [
        (
            "nbf in an hour",
            jwt(
                &json!({"sub": "carol", "exp": exp, "nbf": now() + 3600}),
                None,
            ),
        ),
        (
            "unknown crit",
            jwt(
                &json!({"sub": "carol", "exp": exp}),
                Some(vec!["x-bank".into()]),
            ),
        ),
        (
            "control character",
            jwt(&json!({"sub": "car\u{7}ol", "exp": exp}), None),
        ),
        (
            "long sub",
            jwt(&json!({"sub": "c".repeat(256), "exp": exp}), None),
        ),
        (
            "static user",
            jwt(&json!({"sub": ALICE.0, "exp": exp}), None),
        ),
    ];
    for (case, token) in refused {
        let reply = Client::new(&server, &token).get("/todos").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}");
    }
    server.shutdown().await.unwrap();
    let shared = support::start(
        db.builder()
            .jwt_secret(JWT_SECRET.to_vec())
            .jwt_subjects_share_static_users(true)
            .jwt_issuer("https://issuer.test")
            .jwt_audience("sync"),
    )
    .await;
    let alice = jwt(
        &json!({"sub": ALICE.0, "exp": exp, "iss": "https://issuer.test", "aud": "sync"}),
        None,
    );
    let reply = Client::new(&shared, &alice).get("/todos").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let no_issuer = jwt(&json!({"sub": "carol", "exp": exp, "aud": "sync"}), None);
    let reply = Client::new(&shared, &no_issuer).get("/todos").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    shared.shutdown().await.unwrap();
}

/// Point 8: a WebSocket session authenticated by a JWT ends when the token's `exp` (plus the
/// 60 s leeway) passes; it used to stay open for good.
async fn a_websocket_session_ends_when_its_jwt_expires(db: TestDb) {
    let server = support::start(db.builder().jwt_secret(JWT_SECRET.to_vec())).await;
    // Expired 55 s ago: still valid for the 60 s leeway, so the session ends in ~5 s.
    let token = jwt(&json!({"sub": "carol", "exp": now() - 55}), None);
    let mut ws = ws_connect(&server, Some(&token)).await;
    ws_subscribe(&mut ws, "todos", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut ended = false;
    while tokio::time::Instant::now() < deadline {
        match ws_next(&mut ws, Duration::from_secs(1)).await {
            Some(message) if message["type"] == "error" => {}
            Some(other) => panic!("unexpected {other}"),
            None => {
                // `None` is also a quiet second: the socket must be closed, not idle.
                if futures_util::SinkExt::send(&mut ws, Message::text(r#"{"type":"ping"}"#))
                    .await
                    .is_err()
                {
                    ended = true;
                    break;
                }
                if let Ok(None | Some(Err(_) | Ok(Message::Close(_)))) =
                    tokio::time::timeout(Duration::from_millis(500), ws.next()).await
                {
                    ended = true;
                    break;
                }
            }
        }
    }
    assert!(ended, "the session outlived its token by 30 s");
    server.shutdown().await.unwrap();
}

/// Reads from `stream` until the server closes it; `false` if it is still open after `wait`.
async fn closed_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> (bool, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (false, seen),
            Ok(Ok(0) | Err(_)) => return (true, seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Point 4: a client that never finishes its request headers is cut off after
/// `header_read_timeout` (10 s by default); such connections used to stay open for good.
async fn a_half_sent_request_header_is_cut_off(db: TestDb) {
    use tokio::io::AsyncWriteExt;
    let server = db.start().await;
    let mut slow = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let (closed, _) = closed_within(&mut slow, Duration::from_secs(25)).await;
    assert!(
        closed,
        "a half-sent request header held its connection for 25 s"
    );
    server.shutdown().await.unwrap();
}

/// Point 4: a body sent too slowly is answered 408 after `body_read_timeout` (30 s by default)
/// and applies nothing.
async fn a_slowly_sent_body_is_answered_408(db: TestDb) {
    use tokio::io::AsyncWriteExt;
    let server = db.start().await;
    let mut slow = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let head = format!(
        "POST /todos HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\":",
        ALICE.1
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let (_, seen) = closed_within(&mut slow, Duration::from_secs(45)).await;
    let answer = String::from_utf8_lossy(&seen);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a body still incomplete after 45 s got: {answer:?}"
    );
    assert!(answer.contains("request_timeout"), "{answer}");
    let alice = Client::new(&server, ALICE.1);
    assert!(alice.pull_all("todos", "", 100).await.is_empty());
    server.shutdown().await.unwrap();
}

/// Point 4: past `max_connections` the server stops accepting until a connection closes, so
/// descriptors never run out; the slow ones are cut by `header_read_timeout` and the server
/// serves again.
async fn connections_past_the_cap_wait_for_a_free_slot(db: TestDb) {
    let mut limits = sync_server::Limits::default();
    limits.max_connections = 4;
    limits.header_read_timeout = Duration::from_secs(1);
    let server = support::start(db.builder().limits(limits)).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(
            tokio::net::TcpStream::connect(server.local_addr())
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let health = format!("{}/health", server.url());
    assert!(
        http.get(&health).send().await.is_err(),
        "a fifth connection was served past max_connections = 4"
    );
    // The idle connections are cut after 1 s; then the server serves again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(
        http.get(&health).send().await.unwrap().status(),
        StatusCode::OK
    );
    drop(idle);
    server.shutdown().await.unwrap();
}

/// Point 4: one user holds at most `max_ws_connections_per_user` (32) WebSockets; the next
/// upgrade is 429, and a closed one frees its place.
async fn a_user_holds_at_most_max_ws_connections_per_user(db: TestDb) {
    let server = db.start().await;
    let mut sockets = Vec::new();
    for _ in 0..32 {
        sockets.push(ws_connect(&server, Some(ALICE.1)).await);
    }
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            server.ws_url(),
        )
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", ALICE.1).parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(request.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        }
        other => panic!(
            "a 33rd WebSocket of one user was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    // Another user is not affected.
    let _bob = ws_connect(&server, Some(support::BOB.1)).await;
    // Closing one frees its place.
    let mut first = sockets.remove(0);
    first.close(None).await.unwrap();
    drop(first);
    let mut reconnected = None;
    for _ in 0..50 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(request.clone()).await {
            reconnected = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reconnected.is_some(),
        "a closed WebSocket did not free its place"
    );
    server.shutdown().await.unwrap();
}

/// Point 4: the server pings every `ws_ping_interval` and closes a WebSocket from which
/// nothing, not even a pong, arrived for `ws_idle_timeout`; a client that reads (and so
/// answers pings) stays.
async fn a_websocket_that_answers_no_pings_is_closed(db: TestDb) {
    let mut limits = sync_server::Limits::default();
    limits.ws_ping_interval = Duration::from_millis(200);
    limits.ws_idle_timeout = Duration::from_secs(1);
    let server = support::start(db.builder().limits(limits)).await;
    let mut deaf = ws_connect(&server, Some(ALICE.1)).await;
    let mut awake = ws_connect(&server, Some(ALICE.1)).await;
    // The awake client reads (tungstenite answers pings while reading) for 3 s.
    let reading = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(message) = awake.next().await {
            if message.is_err() {
                return false;
            }
        }
        false
    })
    .await;
    assert!(reading.is_err(), "the reading client was closed");
    ws_send(&mut awake, json!({"type": "ping"})).await;
    assert_eq!(
        ws_next(&mut awake, Duration::from_secs(5)).await.unwrap()["type"],
        "pong"
    );
    // The deaf one read nothing for 3 s: after the queued pings, its socket ends.
    let mut ended = false;
    for _ in 0..100 {
        match tokio::time::timeout(Duration::from_secs(5), deaf.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => {}
            Ok(None | Some(Err(_) | Ok(Message::Close(_)))) => {
                ended = true;
                break;
            }
            Ok(Some(Ok(other))) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
    assert!(ended, "a WebSocket that answered no pings stayed open");
    server.shutdown().await.unwrap();
}

/// A batch of many ops on one large record builds one event for it (the batch commits at once,
/// so nobody can see the versions between), not one copy of the record per op.
async fn a_batch_of_ops_on_one_record_makes_one_event(db: TestDb) {
    let server = db.start().await;
    let alice = Client::new(&server, ALICE.1);
    let mut ws = ws_connect(&server, Some(ALICE.1)).await;
    ws_subscribe(&mut ws, "todos", json!({})).await;
    let big = "x".repeat(64 * 1024);
    let mut ops = vec![json!({"collection": "todos", "op": "create", "id": "e1",
        "data": {"blob": big, "n": 0}})];
    for n in 1..=50 {
        ops.push(json!({"collection": "todos", "op": "update", "id": "e1", "data": {"n": n}}));
    }
    ops.push(json!({"collection": "todos", "op": "create", "id": "e2", "data": {}}));
    ops.push(json!({"collection": "todos", "op": "delete", "id": "e2", "data": {}}));
    let reply = alice.push(Value::Array(ops)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let last_e1 = reply.body["results"][50]["version"].clone();
    let mut events = Vec::new();
    while let Some(event) = ws_next(&mut ws, Duration::from_millis(500)).await {
        if event["type"] == "event" || event.get("event").is_some() {
            events.push(event);
        }
    }
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default().to_owned(),
                e["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("item_created".to_owned(), "e1".to_owned()),
            ("item_deleted".to_owned(), "e2".to_owned())
        ]
    );
    assert_eq!(events[0]["version"], last_e1);
    assert_eq!(events[0]["data"]["n"], 50);
    server.shutdown().await.unwrap();
}

/// Issue 18: the server reads gzip and zstd request bodies. A small compressed body that
/// inflates to far more than `max_body_bytes` (a "zip bomb") is cut off at the limit and
/// answered 413, as a plain body of that size is; a corrupt one is answered 400, and a coding
/// the server does not read 415.
async fn a_compressed_body_is_limited_by_its_decompressed_size(db: TestDb) {
    use std::io::Write;
    let limit = 64 * 1024;
    let server = support::start(db.builder().max_body_bytes(limit)).await;
    let alice = Client::new(&server, ALICE.1);
    // 16 MiB of JSON whitespace inside a push body: 256 times the limit, in a compressed
    // body small enough (about 16 KiB of gzip) to be sent whole before the server answers, so
    // the client reads the 413 rather than a connection closed under its upload.
    let mut inflated = b"{\"ops\": [".to_vec();
    inflated.resize(16 * 1024 * 1024, b' ');
    inflated.extend_from_slice(b"]}");
    let zstd_bomb = zstd::bulk::compress(&inflated, 19).unwrap();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gzip.write_all(&inflated).unwrap();
    let gzip_bomb = gzip.finish().unwrap();
    drop(inflated);
    for (coding, body) in [("zstd", zstd_bomb), ("gzip", gzip_bomb)] {
        assert!(body.len() < limit / 2, "{coding}: {} bytes", body.len());
        let reply = Client::send(
            alice
                .request(Method::POST, "/sync/push")
                .header("Content-Type", "application/json")
                .header("Content-Encoding", coding)
                .body(body),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{coding}: {}",
            reply.body
        );
        assert_eq!(
            reply.body["code"], "payload_too_large",
            "{coding}: {}",
            reply.body
        );
    }
    // Not zstd at all, though it says so.
    let reply = Client::send(
        alice
            .request(Method::POST, "/sync/push")
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "zstd")
            .body(b"{\"ops\": []}".to_vec()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(reply.body["code"], "invalid_body", "{}", reply.body);
    // A coding the server does not read.
    let response = alice
        .request(Method::POST, "/sync/push")
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "br")
        .body(b"{\"ops\": []}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // The server stays up and reads plain bodies.
    let reply = alice.push(json!([])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    server.shutdown().await.unwrap();
}
