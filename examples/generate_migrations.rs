//! Diesel migrations generated from your models, for apps that ship migrations
//! instead of letting the store create tables (`.auto_migrate(false)`).
//!
//! Writes the migrations for two example models into a temp dir, prints their
//! SQL, adds a field and generates only the difference, runs everything with
//! Diesel's `FileBasedMigrations` + `run_pending_migrations` on a temp SQLite
//! file, and finally saves a record through the sync engine on that database.
//!
//! ```text
//! cargo run --example generate_migrations
//! ```
//!
//! (`cargo run -p sync-diesel --example regenerate_migrations` is a different
//! program: it regenerates this repository's own `migrations/` folder.)

use std::process::ExitCode;

use diesel::{Connection, SqliteConnection};
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use offline_sync_kit::prelude::*;
use offline_sync_kit::{Backend, MigrationGenerator};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Version 1 of the app's todo model.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(model_type = "todo", endpoint = "todos")]
#[serde(rename_all = "camelCase")]
struct Todo {
    #[sync(id)]
    id: String,
    title: String,
    done: bool,
    #[sync(index)]
    priority: i32,
    #[sync(json)]
    tags: Vec<String>,
    due: Option<chrono::DateTime<chrono::Utc>>,
}

/// A second model.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "notes")]
struct Note {
    #[sync(id)]
    id: uuid::Uuid,
    text: String,
}

/// Version 2 of the todo model: one new field. Same model type and table.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(model_type = "todo", endpoint = "todos", table = "todos")]
#[serde(rename_all = "camelCase")]
struct TodoV2 {
    #[sync(id)]
    id: String,
    title: String,
    done: bool,
    #[sync(index)]
    priority: i32,
    #[sync(json)]
    tags: Vec<String>,
    due: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    notes: Option<String>,
}

fn print(written: &[offline_sync_kit::GeneratedMigration]) {
    for m in written {
        println!("--- {}/up.sql\n{}", m.name, m.up.trim_end());
        println!("--- {}/down.sql\n{}\n", m.name, m.down.trim_end());
    }
}

pub(crate) async fn run() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let migrations = dir.path().join("migrations");

    println!(
        "1. Generate migrations for Todo and Note into {}\n",
        migrations.display()
    );
    let written = MigrationGenerator::new(&migrations)
        .model::<Todo>()
        .model::<Note>()
        .backend(Backend::Sqlite)
        .write()?;
    print(&written);

    println!("2. Todo gained a field: only the difference is generated\n");
    let written = MigrationGenerator::new(&migrations)
        .model::<TodoV2>()
        .model::<Note>()
        .backend(Backend::Sqlite)
        .write()?;
    print(&written);

    let db = dir.path().join("app.db");
    println!("3. Run them with Diesel on {}", db.display());
    let mut conn = SqliteConnection::establish(&db.display().to_string())?;
    let source = FileBasedMigrations::from_path(&migrations)?;
    let applied = conn.run_pending_migrations(source)?;
    for version in &applied {
        println!("   applied {version}");
    }
    drop(conn);

    println!("\n4. The sync engine uses the migrated tables (auto_migrate off)");
    let sync = SyncManager::builder()
        // Nothing is sent in this example; the URL is never contacted.
        .base_url("http://127.0.0.1:9")
        .store(DieselStore::open_sqlite(&db).await?)
        .model::<TodoV2>()
        .model::<Note>()
        .auto_migrate(false)
        .options({
            let mut options = SyncOptions::default();
            options.auto_sync = false;
            options
        })
        .build()
        .await?;
    let todo = TodoV2 {
        id: "t1".into(),
        title: "ship migrations".into(),
        done: false,
        priority: 2,
        tags: vec!["release".into()],
        due: None,
        notes: Some("generated, not hand-written".into()),
    };
    sync.save(&todo).await?;
    let back = sync.get::<TodoV2>("t1").await?;
    println!("   saved and read back: {back:?}");
    println!(
        "   pending changes queued for the server: {}",
        sync.status().borrow().pending_changes
    );
    sync.shutdown().await?;
    if back.as_ref() != Some(&todo) {
        return Err("the record read back differs from the one saved".into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("generate_migrations failed: {err}");
            ExitCode::FAILURE
        }
    }
}
