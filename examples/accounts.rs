//! Users on one device, the way an app built on Datum works, with offline-sync-kit:
//!
//! 1. **Initial sync on app start that never blocks the app**: the app shows local data at
//!    once while the first sync runs in the background.
//! 2. **A status listener driving a loading state**: a task follows the status channel and
//!    shows "loading" while the first sync runs, with its progress, then "ready".
//! 3. **Relogin with cleared metadata**: alice signs out (keeping her data), bob uses the
//!    device, alice signs in again; her sync metadata is cleared and a `PullThenPush` run with
//!    `force_full` brings everything fresh before her queued change goes out.
//!
//! sync-server runs in process on a SQLite file in a temporary directory; each user's local
//! store is a file of its own in another one.
//!
//! ```text
//! cargo run --example accounts
//! ```

use std::process::ExitCode;

use offline_sync_kit::prelude::*;
use offline_sync_kit::{
    Credentials, ManualConnectivity, SignOut, SqliteAccountStores, SyncAccounts,
};
use serde::{Deserialize, Serialize};
use sync_server::SyncServer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A note of the signed-in user.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "notes")]
struct Note {
    #[sync(id)]
    id: String,
    text: String,
}

const ALICE: (&str, &str) = ("alice", "alice-secret-token");
const BOB: (&str, &str) = ("bob", "bob-secret-token");

/// What the run ended with, for the test that runs this example.
#[derive(Debug)]
pub struct Outcome {
    /// The states the loading listener saw, in order, without repeats.
    pub states: Vec<SyncState>,
    /// Alice's notes after her relogin.
    pub alice_notes: Vec<String>,
    /// Bob's notes while he used the device.
    pub bob_notes: Vec<String>,
    /// Alice's notes the server has versioned after the relogin (her draft included).
    pub relogin_known: u64,
}

/// Runs the three patterns, writing what happens to `out`.
pub async fn run(out: &mut Vec<String>) -> Result<Outcome, BoxError> {
    let server_dir = tempfile::tempdir()?;
    let server = SyncServer::builder()
        .database(format!(
            "sqlite://{}",
            server_dir.path().join("server.db").display()
        ))
        .token(ALICE.0, ALICE.1)
        .token(BOB.0, BOB.1)
        .build()
        .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let running = server.spawn(listener)?;

    // Alice's other device already has notes on the server.
    let other_dir = tempfile::tempdir()?;
    let other = SyncManager::builder()
        .base_url(url.clone())
        .bearer_token(ALICE.1)
        .user_id(ALICE.0)
        .store(DieselStore::open_sqlite(other_dir.path().join("other.db")).await?)
        .connectivity(ManualConnectivity::new(true))
        .model::<Note>()
        .build()
        .await?;
    let notes: Vec<Note> = (0..200)
        .map(|n| Note {
            id: format!("n{n:03}"),
            text: format!("note {n} from alice's phone"),
        })
        .collect();
    other.save_all(&notes).await?;
    other.sync_all().await?;

    // This device: one store per user, one template for every user's manager.
    let stores_dir = tempfile::tempdir()?;
    let template_url = url.clone();
    let accounts = SyncAccounts::new(SqliteAccountStores::new(stores_dir.path()), move |_user| {
        let mut options = SyncOptions::default();
        options.batch_size = 50; // small pages, so the progress moves visibly
        SyncManager::builder()
            .base_url(template_url.clone())
            .connectivity(ManualConnectivity::new(true))
            .options(options)
            .model::<Note>()
    });

    // 2. The loading state follows alice's status, whoever is signed in.
    let mut status = accounts.status_for_user(ALICE.0);
    let listener = tokio::spawn(async move {
        let mut seen: Vec<SyncState> = Vec::new();
        let mut lines = Vec::new();
        loop {
            let now = status.borrow_and_update().clone();
            if seen.last() != Some(&now.state) {
                seen.push(now.state);
                let line = match now.state {
                    SyncState::Syncing => format!(
                        "  [loading] syncing... {:.0}%",
                        now.progress_fraction() * 100.0
                    ),
                    SyncState::Completed => "  [ready] up to date".to_owned(),
                    other => format!("  [{other:?}]"),
                };
                lines.push(line);
            }
            if now.state == SyncState::Completed || status.changed().await.is_err() {
                return (seen, lines);
            }
        }
    });

    // 1. App start: sign in, show local data at once, sync in the background.
    out.push("alice opens the app on this device for the first time".into());
    let alice = accounts
        .sign_in(ALICE.0, Credentials::bearer(ALICE.1))
        .await?;
    let initial = tokio::spawn({
        let alice = alice.clone();
        async move { alice.sync_all().await }
    });
    let shown = alice.all::<Note>().await?.len();
    out.push(format!(
        "  the app shows her {shown} local notes at once, without waiting"
    ));
    let report = initial.await??;
    let (states, lines) = listener.await?;
    out.extend(lines);
    out.push(format!(
        "  the background sync pulled {} notes; metadata: never synced = {}",
        report.pulled,
        alice.sync_metadata().await?.is_never_synced()
    ));

    // Alice writes offline-style (paused), then hands the device to bob.
    alice.pause();
    alice
        .save(&Note {
            id: "draft".into(),
            text: "written before signing out".into(),
        })
        .await?;
    out.push("alice writes a draft and signs out, keeping her data".into());
    let bob = accounts
        .switch_user(BOB.0, Credentials::bearer(BOB.1))
        .await?;
    bob.save(&Note {
        id: "b1".into(),
        text: "bob's shopping list".into(),
    })
    .await?;
    bob.sync_all().await?;
    let bob_notes: Vec<String> = bob.all::<Note>().await?.into_iter().map(|n| n.id).collect();
    out.push(format!(
        "bob signs in and sees only his notes: {bob_notes:?}"
    ));
    accounts.sign_out(SignOut::WipeLocalData).await?;
    out.push("bob signs out and wipes his data from the device".into());

    // 3. Relogin: cleared metadata, then a full PullThenPush run.
    let alice = accounts
        .sign_in(ALICE.0, Credentials::bearer(ALICE.1))
        .await?;
    alice.clear_sync_metadata().await?;
    let meta = alice.sync_metadata().await?;
    out.push(format!(
        "alice signs in again; metadata cleared: never synced = {}, pending = {}",
        meta.is_never_synced(),
        meta.entities["note"].pending
    ));
    alice
        .synchronize(SyncRun::new(SyncDirection::PullThenPush).force_full())
        .await?;
    let meta = alice.sync_metadata().await?;
    out.push(format!(
        "  full pull then push: {} notes known to the server (her draft went out too), {} pending, checksum {}",
        meta.entities["note"].known, meta.entities["note"].pending, meta.entities["note"].checksum
    ));
    let remote = alice.remote_sync_metadata().await?;
    out.push(format!(
        "  the server lists {} devices of alice; compared: {:?}",
        remote.devices.len(),
        meta.compare(&remote)
    ));
    let mut alice_notes: Vec<String> = alice
        .all::<Note>()
        .await?
        .into_iter()
        .map(|n| n.id)
        .collect();
    alice_notes.sort();

    accounts.sign_out(SignOut::KeepLocalData).await?;
    other.shutdown().await?;
    running.shutdown().await?;
    Ok(Outcome {
        states,
        alice_notes,
        bob_notes,
        relogin_known: meta.entities["note"].known,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut out = Vec::new();
    let result = run(&mut out).await;
    for line in &out {
        println!("{line}");
    }
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("accounts example failed: {err}");
            ExitCode::FAILURE
        }
    }
}
