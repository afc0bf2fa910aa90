//! Third-party servers from npm, installed on first use into a cache folder under `target/`
//! of the workspace (one folder per package, so their dependencies never meet).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use serde_json::{json, Value};

use super::eventually;

/// The application id Parse Server is started with.
pub const APP_ID: &str = "sync-test";
/// Its master key.
pub const MASTER_KEY: &str = "sync-test-master-key";

/// The path of `bin` of npm package `spec` (`json-server@0.17.4`), installed into
/// `target/{folder}` when missing. `None`, with the reason printed, when npm is missing or the
/// install fails, unless `SYNC_TEST_REQUIRE_NPM` is set (as in CI): then the test fails
/// rather than skipping.
pub fn npm_bin(spec: &str, folder: &str, bin: &str) -> Option<PathBuf> {
    // The tests of one binary run on threads: one install at a time.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(folder);
    let path = root.join("node_modules/.bin").join(bin);
    if path.exists() {
        return Some(path);
    }
    std::fs::create_dir_all(&root).unwrap();
    let status = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&root)
        .arg(spec)
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() && path.exists() => Some(path),
        other => {
            let reason = format!("`npm install {spec}` failed ({other:?})");
            // CI (`.ci/run`) sets this so that a test can never pass by skipping.
            assert!(
                std::env::var_os("SYNC_TEST_REQUIRE_NPM").is_none(),
                "{reason}; SYNC_TEST_REQUIRE_NPM is set, so this fails instead of skipping"
            );
            eprintln!("skipping: {reason}");
            None
        }
    }
}

/// Starts json-server 0.17 on a free loopback port; installs it into
/// `target/npm` on first use. `None` (with the reason printed) if npm is missing, unless
/// `SYNC_TEST_REQUIRE_NPM` is set (as in CI): then the test fails.
pub async fn json_server() -> Option<(tokio::process::Child, String, tempfile::TempDir)> {
    let bin = npm_bin("json-server@0.17.4", "npm", "json-server")?;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.json");
    std::fs::write(&db, r#"{"notes": []}"#).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = tokio::process::Command::new(&bin)
        .arg(&db)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("json-server starts");
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(30), "json-server answers", || {
        let client = client.clone();
        let url = url.clone();
        async move { client.get(format!("{url}/notes")).send().await.is_ok() }
    })
    .await;
    Some((child, url, dir))
}

/// A Parse Server on a free loopback port, on a database of its own; the database is dropped
/// with it.
pub struct Parse {
    child: tokio::process::Child,
    pub url: String,
    pub port: u16,
    admin_url: String,
    database: String,
    _logs: tempfile::TempDir,
}

impl Drop for Parse {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if let Ok(mut conn) = PgConnection::establish(&self.admin_url) {
            let _ = conn.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.database
            ));
        }
    }
}

impl Parse {
    /// Starts Parse Server, with the client's ids (`--allowCustomObjectId`) or its own.
    pub async fn start(custom_ids: bool) -> Option<Parse> {
        let Ok(admin_url) = std::env::var(sync_testkit::POSTGRES_URL_ENV) else {
            eprintln!(
                "skipping Parse Server interop: set {} (e.g. postgres://postgres@127.0.0.1:5432/test)",
                sync_testkit::POSTGRES_URL_ENV
            );
            return None;
        };
        let bin = npm_bin("parse-server@9.10.0", "npm-parse", "parse-server")?;
        let database = format!("parse_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let mut conn = PgConnection::establish(&admin_url).unwrap();
        conn.batch_execute(&format!("CREATE DATABASE \"{database}\""))
            .unwrap();
        let (server, _) = admin_url
            .split_once('?')
            .map_or((admin_url.as_str(), ""), |(a, b)| (a, b));
        let (server, _) = server.rsplit_once('/').unwrap();
        let database_uri = format!("{server}/{database}");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let logs = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(&bin);
        command
            .args(["--appId", APP_ID, "--masterKey", MASTER_KEY])
            .args(["--databaseURI", &database_uri])
            .args(["--port", &port.to_string(), "--mountPath", "/parse"])
            .arg("--logsFolder")
            .arg(logs.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if custom_ids {
            command.arg("--allowCustomObjectId");
        }
        let child = command.spawn().expect("parse-server starts");
        let url = format!("http://127.0.0.1:{port}/parse");
        let parse = Parse {
            child,
            url,
            port,
            admin_url,
            database,
            _logs: logs,
        };
        let client = reqwest::Client::new();
        eventually(Duration::from_secs(120), "Parse Server is healthy", || {
            let client = client.clone();
            let url = parse.url.clone();
            async move {
                match client.get(format!("{url}/health")).send().await {
                    Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["status"] == "ok"),
                    Err(_) => false,
                }
            }
        })
        .await;
        Some(parse)
    }

    /// A request with the app's keys, as another client of the backend would send it.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}/{path}", self.url))
            .header("X-Parse-Application-Id", APP_ID)
            .header("X-Parse-Master-Key", MASTER_KEY)
    }

    /// The notes on the server whose `field` is `value`.
    pub async fn notes_where(&self, field: &str, value: &str) -> Vec<Value> {
        let body: Value = self
            .request(reqwest::Method::GET, "classes/Note")
            .query(&[("where", json!({ field: value }).to_string())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["results"].as_array().unwrap().clone()
    }
}
