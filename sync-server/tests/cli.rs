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
    std::fs::write(&tokens, "# users\ncarol:carol-secret-token\n").unwrap();
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    let mut child = Child(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--database", &db])
            .args(["--token", "alice:alice-secret-token", "--tokens-file"])
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
    for token in ["alice-secret-token", "carol-secret-token"] {
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

/// Starts the binary with `args` and `envs`, and returns it with its base URL.
fn spawn_with(args: &[&str], envs: &[(&str, &str)], db: &str) -> (Child, String) {
    let mut child = Child(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--database", db])
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (child, url)
}

/// Arguments and environment of one run of the binary.
type Run<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

/// Issue 13 point 7: the JWT secret can come from a file or the environment instead of the
/// command line, and a short one is refused at start-up.
#[tokio::test]
async fn the_jwt_secret_comes_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    let secret = "a-jwt-secret-from-a-file-0123456789";
    let file = dir.path().join("jwt.secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "dave", "exp": chrono::Utc::now().timestamp() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let file_arg = file.display().to_string();
    let runs: [Run<'_>; 2] = [
        (&["--jwt-secret-file", &file_arg], &[]),
        (&[], &[("SYNC_SERVER_JWT_SECRET", secret)]),
    ];
    for (args, envs) in runs {
        let (_child, url) = spawn_with(args, envs, &db);
        let reply = reqwest::Client::new()
            .get(format!("{url}/todos"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{args:?} {envs:?}");
    }
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--database", &db])
        .env("SYNC_SERVER_JWT_SECRET", "s3cret")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 16"), "{stderr}");
}
