//! Models of the store tests, the benchmark and the generated top-level
//! `migrations/` (the `generate_migrations` example includes this file).

use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

/// The `Todo` of DESIGN.md.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(model_type = "todo", endpoint = "todos", table = "todos")]
#[sync(rest(post(
    top_level_key = "document",
    supplemental = r#"{"collectionId":"c1"}"#,
    retry_count = 2
)))]
#[serde(rename_all = "camelCase")]
pub struct Todo {
    #[sync(id)]
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub is_completed: bool,
    #[sync(index)]
    pub priority: i32,
    #[sync(json)]
    pub tags: Vec<String>,
    pub due: Option<chrono::DateTime<chrono::Utc>>,
}

/// Nested data of a [`Gadget`], stored as JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Spec {
    pub name: String,
    pub weight: f64,
}

/// A model with a field of every column type, a UUID id and renamed columns.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(model_type = "gadget")]
pub struct Gadget {
    #[sync(id)]
    pub uid: uuid::Uuid,
    #[sync(index)]
    pub name: String,
    pub enabled: bool,
    pub small: i16,
    pub count: i32,
    #[serde(rename = "bigCount")]
    pub big: i64,
    pub ratio: f32,
    pub precise: f64,
    #[sync(index)]
    pub made_at: chrono::DateTime<chrono::Utc>,
    pub local_time: chrono::NaiveDateTime,
    pub owner: uuid::Uuid,
    pub blob: Vec<u8>,
    #[sync(json)]
    pub spec: Spec,
    #[sync(column = "note_text")]
    pub note: Option<String>,
    pub maybe_flag: Option<bool>,
    pub maybe_small: Option<i16>,
    pub maybe_count: Option<i32>,
    pub maybe_big: Option<i64>,
    pub maybe_ratio: Option<f32>,
    pub maybe_precise: Option<f64>,
    pub maybe_at: Option<chrono::DateTime<chrono::Utc>>,
    pub maybe_local: Option<chrono::NaiveDateTime>,
    pub maybe_owner: Option<uuid::Uuid>,
    pub maybe_blob: Option<Vec<u8>>,
    #[sync(json)]
    pub maybe_spec: Option<Spec>,
}

/// The generator that writes the top-level `migrations/<backend>` folders
/// from the models above (run `cargo run -p sync-diesel --example
/// generate_migrations`); the drift test uses the same configuration.
pub fn migration_generator(
    dir: impl AsRef<std::path::Path>,
    backend: sync_diesel::Backend,
) -> sync_diesel::MigrationGenerator {
    sync_diesel::MigrationGenerator::new(dir)
        .backend(backend)
        .model::<Todo>()
        .model::<Gadget>()
        .timestamp(
            chrono::NaiveDate::from_ymd_opt(2025, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .unwrap_or_default(),
        )
}
