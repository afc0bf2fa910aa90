//! Syncing with a real Parse Server, configured only (no code against its API): URLs and
//! a delta sent as `PUT` from the derive's `rest(...)`, a `RestPull` (the bound inside a
//! JSON `where`, `order`, keyset pages by `skip` + `limit`, the total count as the paging
//! signal, records under `results`) and a `RestBackend` (ids the server assigns, `createdAt`
//! / `updatedAt` kept by the server, no versions, "exists" answered as code 137).
//!
//! Device A saves a note while offline under a local id; its sync creates the note and the
//! server's `objectId` replaces the local id (a `RecordRekeyed` event); an edit goes out as a
//! one-field `PUT`; device B pulls only what changed; A deletes the note.
//!
//! Needs a Parse Server (`npm install parse-server`, then e.g.
//! `parse-server --appId app --masterKey key --databaseURI postgres://... --mountPath /parse`):
//!
//! ```text
//! PARSE_URL=http://127.0.0.1:1337/parse PARSE_APP_ID=app PARSE_MASTER_KEY=key \
//!     cargo run --example parse_server
//! ```

use std::process::ExitCode;

use offline_sync_kit::prelude::*;
use offline_sync_kit::{
    CountAt, ManualConnectivity, ModelConfig, NextPage, Paging, RestBackend, RestPull, Since,
    TimeFormat, VersionSource,
};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A note of the Parse class `Note`. `localId` keeps the id the note had on the device
/// that made it, so a create sent twice (its answer lost) is found, never made twice.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(
    endpoint = "notes",
    rest(
        get(url = "classes/Note"),
        post(url = "classes/Note"),
        put(url = "classes/Note"),
        patch(url = "classes/Note", send_as = "PUT"),
        delete(url = "classes/Note")
    )
)]
#[serde(rename_all = "camelCase")]
pub struct Note {
    #[sync(id)]
    #[serde(rename = "objectId")]
    pub id: String,
    pub title: String,
    pub done: bool,
    #[serde(default)]
    pub local_id: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// How Parse Server is pulled and how it treats records.
pub fn parse_config() -> ModelConfig {
    let pull = RestPull::new()
        .since(
            Since::new("updatedAt", "where")
                .template(r#"{"updatedAt":{"$gte":{"__type":"Date","iso":"{since}"}}}"#)
                .format(TimeFormat::Iso8601)
                // Parse on PostgreSQL counts exactly only under a `where`.
                .initial("1970-01-01T00:00:00Z"),
        )
        .sort("order", "updatedAt")
        .paging(Paging::Keyset {
            limit_param: "limit".into(),
            skip_param: "skip".into(),
        })
        .next_page(NextPage::TotalCount(CountAt::Body("count".into())))
        .parameter("count", "1")
        .records_at("results");
    let backend = RestBackend::new()
        .idempotency_header(None)
        .version(VersionSource::None)
        .conditional(None)
        .conflict_statuses(&[])
        .already_exists(&[400], Some(("code", vec![serde_json::json!(137)])))
        .updated_at("updatedAt", TimeFormat::Iso8601)
        .server_fields(&["createdAt", "updatedAt"])
        .server_ids(
            "objectId",
            "localId",
            ("where", r#"{"localId":"{local_id}"}"#),
        );
    ModelConfig::new().pull(pull).backend(backend)
}

async fn device(
    url: &str,
    app_id: &str,
    master_key: &str,
    db: std::path::PathBuf,
    online: ManualConnectivity,
) -> Result<SyncManager, BoxError> {
    let mut options = SyncOptions::default();
    options.auto_sync = false;
    Ok(SyncManager::builder()
        .base_url(url)
        .header("X-Parse-Application-Id", app_id)
        .header("X-Parse-Master-Key", master_key)
        .store(DieselStore::open_sqlite(db).await?)
        .rest_only()
        .connectivity(online)
        .model_with::<Note>(parse_config())
        .options(options)
        .build()
        .await?)
}

/// Runs the walk-through against the Parse Server at `url`; returns the server's id of the
/// note.
pub async fn run(url: &str, app_id: &str, master_key: &str) -> Result<String, BoxError> {
    let dir = tempfile::tempdir()?;
    let online = ManualConnectivity::new(false);
    let a = device(
        url,
        app_id,
        master_key,
        dir.path().join("a.db"),
        online.clone(),
    )
    .await?;
    let mut events = a.events();
    let note = Note {
        id: "draft-1".into(),
        title: "Call the plumber".into(),
        done: false,
        local_id: None,
        created_at: None,
        updated_at: None,
    };
    a.save(&note).await?;
    println!(
        "1. A saved {:?} offline under the local id `draft-1`",
        note.title
    );

    online.set_online(true);
    let report = a.sync_all().await?;
    let server_id = loop {
        match events.try_recv() {
            Ok(SyncEvent::RecordRekeyed { from, id, .. }) if from == "draft-1" => break id,
            Ok(_) => continue,
            Err(_) => return Err("no RecordRekeyed event after the create".into()),
        }
    };
    println!(
        "2. A synced (pushed {}): Parse assigned `{server_id}`, and the note was re-keyed",
        report.pushed
    );

    let mut mine = a
        .get::<Note>(&server_id)
        .await?
        .ok_or("the note is not under the server's id")?;
    mine.done = true;
    a.save(&mine).await?;
    let report = a.sync_all().await?;
    println!(
        "3. A marked it done: one field went out as PUT ({} bytes)",
        report.bytes_sent
    );

    let b = device(
        url,
        app_id,
        master_key,
        dir.path().join("b.db"),
        ManualConnectivity::new(true),
    )
    .await?;
    let report = b.pull::<Note>().await?;
    let on_b = b
        .get::<Note>(&server_id)
        .await?
        .ok_or("B did not pull it")?;
    println!(
        "4. B pulled {} note(s): {:?}, done {}",
        report.pulled, on_b.title, on_b.done
    );
    if !on_b.done || on_b.local_id.as_deref() != Some("draft-1") {
        return Err(format!("B's copy is not A's: {on_b:?}").into());
    }

    a.delete::<Note>(&server_id).await?;
    a.sync_all().await?;
    println!("5. A deleted it");
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(server_id)
}

#[tokio::main]
async fn main() -> ExitCode {
    let var = |name: &str| std::env::var(name).ok();
    let (Some(url), Some(app_id), Some(key)) = (
        var("PARSE_URL"),
        var("PARSE_APP_ID"),
        var("PARSE_MASTER_KEY"),
    ) else {
        eprintln!("set PARSE_URL, PARSE_APP_ID and PARSE_MASTER_KEY (see the example's docs)");
        return ExitCode::FAILURE;
    };
    match run(&url, &app_id, &key).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("parse_server failed: {err}");
            ExitCode::FAILURE
        }
    }
}
