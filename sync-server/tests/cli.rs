//! The `sync-server` binary: starts, prints its address, serves, and refuses bad settings.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sync-server");

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_prints_its_address_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# users\ncarol:carol-secret\n").unwrap();
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    let mut child = Child(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--database", &db])
            .args(["--token", "alice:alice-secret", "--tokens-file"])
            .arg(&tokens)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    let http = reqwest::Client::new();
    let health = http.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    for token in ["alice-secret", "carol-secret"] {
        let reply = http
            .post(format!("{url}/todos"))
            .bearer_auth(token)
            .json(&serde_json::json!({"id": "t"}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201);
    }
    let refused = http.get(format!("{url}/todos")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
}

#[test]
fn binary_refuses_to_start_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--database", &db])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no authentication configured"), "{stderr}");
}
