//! Runs the todo CLI (`examples/todo.rs`) against an in-process sync-server:
//! what one database adds, completes and syncs, a second database sees.

#![allow(clippy::unwrap_used)]

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/support/todo_cli.rs"]
mod todo_cli;

use sync_server::{RunningServer, SyncServer};

const TOKEN: &str = "alice-secret-token";

async fn server(dir: &std::path::Path) -> RunningServer {
    SyncServer::builder()
        .database(format!("sqlite://{}", dir.join("server.db").display()))
        .token("alice", TOKEN)
        .build()
        .await
        .unwrap()
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap()
}

/// Runs the CLI; returns (exit code, stdout, stderr).
async fn todo(server: &str, db: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut argv = vec![
        "todo".to_owned(),
        "--server".to_owned(),
        server.to_owned(),
        "--db".to_owned(),
        db.display().to_string(),
        "--token".to_owned(),
        TOKEN.to_owned(),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = todo_cli::run(argv, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

async fn ok(server: &str, db: &std::path::Path, args: &[&str]) -> String {
    let (code, out, err) = todo(server, db, args).await;
    assert_eq!(code, 0, "todo {args:?} failed: {err}{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_and_completed_on_one_db_shows_done_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let running = server(dir.path()).await;
    let url = running.url();
    let (db1, db2) = (dir.path().join("one.db"), dir.path().join("two.db"));

    let added = ok(
        &url,
        &db1,
        &["add", "Buy milk", "--priority", "2", "--tag", "home"],
    )
    .await;
    ok(&url, &db1, &["add", "Write report", "--priority", "5"]).await;
    // "added <id> [ ] Buy milk (p2) #home"
    let id = added
        .split_whitespace()
        .nth(1)
        .expect("the id follows `added`")
        .to_owned();
    let listed = ok(&url, &db1, &["list", "--tag", "home"]).await;
    assert!(listed.contains("[ ] Buy milk (p2) #home"), "{listed}");
    assert!(!listed.contains("Write report"), "{listed}");
    let urgent = ok(&url, &db1, &["list", "--min-priority", "3"]).await;
    assert!(
        urgent.contains("Write report") && !urgent.contains("Buy milk"),
        "{urgent}"
    );

    ok(&url, &db1, &["done", &id]).await;
    let synced = ok(&url, &db1, &["sync"]).await;
    assert!(synced.contains("pushed 2"), "{synced}");

    let synced = ok(&url, &db2, &["sync"]).await;
    assert!(synced.contains("pulled 2"), "{synced}");
    let done = ok(&url, &db2, &["list", "--done"]).await;
    assert!(done.contains("[x] Buy milk (p2) #home"), "{done}");
    assert!(!done.contains("Write report"), "{done}");
    let open = ok(&url, &db2, &["list", "--open"]).await;
    assert!(open.contains("[ ] Write report (p5)"), "{open}");

    // An edit and a delete on db2 travel back to db1.
    let report_id = open.split_whitespace().next().unwrap().to_owned();
    ok(&url, &db2, &["edit", &report_id, "--priority", "9"]).await;
    ok(&url, &db2, &["rm", &id]).await;
    ok(&url, &db2, &["sync"]).await;
    ok(&url, &db1, &["sync"]).await;
    let all = ok(&url, &db1, &["list"]).await;
    assert!(all.contains("Write report (p9)"), "{all}");
    assert!(!all.contains("Buy milk"), "{all}");
    let status = ok(&url, &db1, &["status"]).await;
    assert!(status.contains("pending changes: 0"), "{status}");
    assert!(status.contains("(reachable)"), "{status}");

    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("todo.db");
    // Nothing listens on this port once the listener is dropped.
    let url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    ok(&url, &db, &["add", "offline is fine"]).await;

    let (code, _, err) = todo(&url, &db, &["sync"]).await;
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot reach the server at"),
        "{err}"
    );

    let (code, _, err) = todo(&url, &db, &["done", "no-such-id"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        r#"error: no todo with id "no-such-id" (see `todo list`)"#
    );

    let (code, _, err) = todo(&url, &db, &["list", "--done", "--open"]).await;
    assert_eq!(code, 2, "a usage error: {err}");

    // A local change stays queued until a sync succeeds.
    let status = ok(&url, &db, &["status"]).await;
    assert!(status.contains("pending changes: 1"), "{status}");
    assert!(status.contains("cannot reach the server"), "{status}");
}
