use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

// A container rule that differs between serialising and deserialising.
#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[serde(rename_all(serialize = "camelCase", deserialize = "snake_case"))]
struct Split {
    #[sync(id)]
    id: String,
    due_at: String,
}

// Fields serde skips (one way or both) without `#[sync(skip)]`.
#[derive(SyncModel, Serialize, Deserialize, Clone)]
struct Skips {
    #[sync(id)]
    id: String,
    #[serde(skip)]
    cache: String,
    #[serde(skip_serializing)]
    secret: String,
    #[serde(default, skip_deserializing)]
    computed: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fine: Option<String>,
}

fn main() {}
