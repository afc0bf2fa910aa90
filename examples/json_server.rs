//! Syncing with json-server 0.17 (npm `json-server@0.17.4`), configured only: the client's
//! ids, a one-field `PATCH`, and a `RestPull` that asks for `modifiedAt_gte` the largest
//! value seen (compared as a number), sorted by `_sort`, in `_page` / `_limit` pages that
//! follow json-server's `Link: rel="next"` header. json-server keeps no versions or
//! timestamps of its own, so the app keeps `modifiedAt`.
//!
//! ```text
//! echo '{"notes": []}' > db.json && npx json-server@0.17.4 db.json --port 3000 &
//! JSON_SERVER_URL=http://127.0.0.1:3000 cargo run --example json_server
//! ```

use std::process::ExitCode;

use offline_sync_kit::prelude::*;
use offline_sync_kit::{
    ModelConfig, NextPage, Paging, RestBackend, RestPull, Since, VersionSource,
};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A note; `modifiedAt` (ms) is the pull's bound.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "notes")]
#[serde(rename_all = "camelCase")]
pub struct Note {
    #[sync(id)]
    pub id: String,
    pub title: String,
    pub done: bool,
    pub modified_at: i64,
}

/// How json-server is pulled and how it treats records.
pub fn json_server_config() -> ModelConfig {
    let pull = RestPull::new()
        .since(Since::new("modifiedAt", "modifiedAt_gte"))
        .sort("_sort", "modifiedAt")
        .paging(Paging::PageNumber {
            page_param: "_page".into(),
            size_param: "_limit".into(),
            first: 1,
        })
        .next_page(NextPage::LinkHeader);
    let backend = RestBackend::new()
        .idempotency_header(None)
        .version(VersionSource::None)
        .conditional(None)
        .conflict_statuses(&[])
        // A create of an id that exists is answered 500 ("Insert failed, duplicate id"): the
        // record is read back, and a replay whose first answer was lost is applied.
        .already_exists(&[500], None);
    ModelConfig::new().pull(pull).backend(backend)
}

async fn device(url: &str, db: std::path::PathBuf) -> Result<SyncManager, BoxError> {
    let mut options = SyncOptions::default();
    options.auto_sync = false;
    options.batch_size = 2;
    Ok(SyncManager::builder()
        .base_url(url)
        .store(DieselStore::open_sqlite(db).await?)
        .rest_only()
        .connectivity(offline_sync_kit::ManualConnectivity::new(true))
        .model_with::<Note>(json_server_config())
        .options(options)
        .build()
        .await?)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs the walk-through against json-server at `url`; returns how many notes the second
/// device pulled.
pub async fn run(url: &str) -> Result<u64, BoxError> {
    let dir = tempfile::tempdir()?;
    let a = device(url, dir.path().join("a.db")).await?;
    for n in 1..=3 {
        a.save(&Note {
            id: format!("n{n}"),
            title: format!("note {n}"),
            done: false,
            modified_at: now_ms(),
        })
        .await?;
    }
    let report = a.sync_all().await?;
    println!("1. A created 3 notes (pushed {})", report.pushed);

    let b = device(url, dir.path().join("b.db")).await?;
    let report = b.pull::<Note>().await?;
    println!(
        "2. B pulled {} notes in pages of 2, following `Link: rel=\"next\"`",
        report.pulled
    );
    let pulled = report.pulled;

    let mut n2 = a.get::<Note>("n2").await?.ok_or("n2 is missing on A")?;
    n2.done = true;
    n2.modified_at = now_ms() + 1;
    a.save(&n2).await?;
    let report = a.sync_all().await?;
    println!(
        "3. A marked n2 done: a PATCH of the changed fields ({} bytes)",
        report.bytes_sent
    );
    b.pull::<Note>().await?;
    let on_b = b.get::<Note>("n2").await?.ok_or("n2 is missing on B")?;
    println!(
        "4. B pulled from the largest modifiedAt it had: n2 done {}",
        on_b.done
    );
    if !on_b.done {
        return Err("B did not get the change".into());
    }
    for n in 1..=3 {
        a.delete::<Note>(&format!("n{n}")).await?;
    }
    a.sync_all().await?;
    println!("5. A deleted the notes");
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(pulled)
}

#[tokio::main]
async fn main() -> ExitCode {
    let Ok(url) = std::env::var("JSON_SERVER_URL") else {
        eprintln!("set JSON_SERVER_URL (see the example's docs)");
        return ExitCode::FAILURE;
    };
    match run(&url).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("json_server failed: {err}");
            ExitCode::FAILURE
        }
    }
}
