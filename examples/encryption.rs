//! Both kinds of encryption, narrated:
//!
//! 1. an encrypted local database (SQLCipher): the store is opened with a passphrase, a wrong
//!    or missing passphrase is a clear error and leaves the file alone, and `rekey` changes the
//!    passphrase;
//! 2. an end-to-end encrypted field (`#[sync(encrypted)]`): the note's body leaves the device
//!    encrypted, so the server (sync-server, in process on a SQLite file) only ever holds an
//!    envelope; a second device with the same field key reads the plaintext.
//!
//! ```text
//! cargo run --example encryption --features encryption
//! ```
//!
//! Run by `tests/examples_run.rs` in a build with the feature.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use offline_sync_kit::prelude::*;
use offline_sync_kit::{DieselStoreError, StoreKey};
use offline_sync_kit::{FieldKey, StaticKeys};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sync_server::SyncServer;

/// Any failure of the example, as one line of text.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A note whose title the server may read, and whose body only the user's devices can.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "notes")]
pub struct Note {
    /// Record id.
    #[sync(id)]
    pub id: String,
    /// Stored and sent as is.
    pub title: String,
    /// Encrypted on the device before it is sent; the server holds an envelope.
    #[sync(encrypted)]
    pub body: String,
}

/// What the example saw, for its test.
#[derive(Debug, Clone)]
pub struct EncryptionOutcome {
    /// The error of opening the database with the old passphrase after the rekey.
    pub wrong_key: String,
    /// The error of opening the database without a passphrase.
    pub missing_key: String,
    /// The note as the server has it (read over HTTP).
    pub on_server: Value,
    /// Whether the secret was found anywhere in the server's database file or its WAL.
    pub secret_in_server_file: bool,
    /// Whether the secret or the title was found in the device's database file or its WAL.
    pub plaintext_in_device_file: bool,
    /// The note as the second device pulled it.
    pub on_second_device: Option<Note>,
    /// The note read back from the device's database after the rekey.
    pub after_rekey: Option<Note>,
}

const USER: &str = "alice";
const TOKEN: &str = "alice-secret-token";
const PASSPHRASE: &str = "correct horse battery staple";
const NEW_PASSPHRASE: &str = "a longer, newer passphrase for the same file";
const TITLE: &str = "Front door";
const SECRET: &str = "The key code is 4711-0815";

/// The user's field key. A real app keeps it in the platform keychain and shares it between
/// the user's devices, never with the server.
fn field_keys() -> StaticKeys {
    StaticKeys::new("2025-01", FieldKey::new([42; 32]))
}

fn options() -> SyncOptions {
    // Sync only when told to, so the narration is the order things happen in.
    let mut options = SyncOptions::default();
    options.auto_sync = false;
    options
}

/// Whether `needle` occurs in the file at `path` or in its WAL.
fn file_contains(path: &Path, needle: &str) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    [path.to_path_buf(), wal.into()].iter().any(|p| {
        std::fs::read(p)
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}

/// Runs the example and narrates it to `out`.
pub async fn run(out: &mut dyn Write) -> Result<EncryptionOutcome, BoxError> {
    let dir = tempfile::tempdir()?;

    // The reference backend, in process, on an embedded SQLite file.
    let server_db = dir.path().join("server.db");
    let server = SyncServer::builder()
        .database(format!("sqlite://{}", server_db.display()))
        .token(USER, TOKEN)
        .build()
        .await?
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await?)?;
    let base = server.url();
    writeln!(out, "offline-sync-kit: encryption")?;
    writeln!(out, "  server: sync-server at {base}")?;

    // 1. The device's database, encrypted with a passphrase (SQLCipher). The store is shared
    //    with the manager so that the app can rekey it later.
    let device_db = dir.path().join("device.db");
    let store = Arc::new(
        DieselStore::open_sqlite_encrypted(&device_db, StoreKey::passphrase(PASSPHRASE)).await?,
    );
    writeln!(
        out,
        "device database {} opened with a passphrase; encrypted: {}",
        device_db.display(),
        store.is_encryption_enabled()
    )?;
    let device = SyncManager::builder()
        .base_url(&base)
        .store_arc(store.clone())
        .bearer_token(TOKEN)
        .model::<Note>()
        .field_keys(field_keys())
        .options(options())
        .build()
        .await?;
    let note = Note {
        id: "note-1".into(),
        title: TITLE.into(),
        body: SECRET.into(),
    };
    device.save(&note).await?;
    writeln!(out, "saved {{title: {TITLE:?}, body: {SECRET:?}}}")?;

    // 2. The push encrypts the body on the device; the server stores the envelope.
    let report = device.sync_all().await?;
    writeln!(out, "synced: {} pushed", report.pushed)?;
    let on_server: Value = reqwest::Client::new()
        .get(format!("{base}/notes/{}", note.id))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    writeln!(out, "the server's copy, read over HTTP:")?;
    writeln!(out, "  title: {}", on_server["title"])?;
    writeln!(out, "  body:  {}", on_server["body"])?;
    let is_envelope = on_server["body"]["$enc"] == "v1";
    writeln!(
        out,
        "  the body is {}",
        if is_envelope {
            "an encrypted envelope (XChaCha20-Poly1305, `kid` names the key): the server never saw the text"
        } else {
            "NOT an envelope"
        }
    )?;
    let secret_in_server_file = file_contains(&server_db, SECRET);
    writeln!(
        out,
        "  the secret in the server's database file or its WAL: {}",
        if secret_in_server_file {
            "FOUND"
        } else {
            "not found"
        }
    )?;
    let plaintext_in_device_file =
        file_contains(&device_db, SECRET) || file_contains(&device_db, TITLE);
    writeln!(
        out,
        "  the secret or the title in the device's database file or its WAL: {}",
        if plaintext_in_device_file {
            "FOUND"
        } else {
            "not found (the whole file is encrypted)"
        }
    )?;

    // A second device of the same user, with the same field key, reads the plaintext.
    let second = SyncManager::builder()
        .base_url(&base)
        .store(DieselStore::open_sqlite(dir.path().join("second.db")).await?)
        .bearer_token(TOKEN)
        .model::<Note>()
        .field_keys(field_keys())
        .options(options())
        .build()
        .await?;
    second.pull::<Note>().await?;
    let on_second_device = second.get::<Note>(&note.id).await?;
    if let Some(n) = &on_second_device {
        writeln!(
            out,
            "a second device with the field key pulled: body {:?}",
            n.body
        )?;
    }
    second.shutdown().await?;

    // 3. A new passphrase for the device's database: the file is re-written under the new key
    //    (to a new file, fsynced, renamed over the old one).
    store.rekey(StoreKey::passphrase(NEW_PASSPHRASE))?;
    writeln!(out, "rekeyed the device database to a new passphrase")?;
    device.shutdown().await?;
    drop(device);
    drop(store);

    let wrong_key = match DieselStore::open_sqlite_encrypted(
        &device_db,
        StoreKey::passphrase(PASSPHRASE),
    )
    .await
    {
        Err(e @ DieselStoreError::WrongKey { .. }) => e.to_string(),
        Err(other) => {
            return Err(format!("the old passphrase gave an unexpected error: {other}").into())
        }
        Ok(_) => return Err("the old passphrase still opens the database".into()),
    };
    writeln!(out, "the old passphrase: {wrong_key}")?;
    let missing_key = match DieselStore::open_sqlite(&device_db).await {
        Err(e @ DieselStoreError::KeyRequired { .. }) => e.to_string(),
        Err(other) => return Err(format!("no passphrase gave an unexpected error: {other}").into()),
        Ok(_) => return Err("the database opened without a passphrase".into()),
    };
    writeln!(out, "no passphrase: {missing_key}")?;

    let reopened = SyncManager::builder()
        .base_url(&base)
        .store(
            DieselStore::open_sqlite_encrypted(&device_db, StoreKey::passphrase(NEW_PASSPHRASE))
                .await?,
        )
        .bearer_token(TOKEN)
        .model::<Note>()
        .field_keys(field_keys())
        .options(options())
        .build()
        .await?;
    let after_rekey = reopened.get::<Note>(&note.id).await?;
    let pending = reopened.status().borrow().pending_changes;
    match &after_rekey {
        Some(n) => writeln!(
            out,
            "the new passphrase opens it: body {:?}, {pending} pending changes",
            n.body
        )?,
        None => writeln!(out, "the new passphrase opens it, but the note is missing")?,
    }
    reopened.shutdown().await?;
    server.shutdown().await?;

    Ok(EncryptionOutcome {
        wrong_key,
        missing_key,
        on_server,
        secret_in_server_file,
        plaintext_in_device_file,
        on_second_device,
        after_rekey,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut out = std::io::stdout();
    match run(&mut out).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("encryption example failed: {err}");
            ExitCode::FAILURE
        }
    }
}
