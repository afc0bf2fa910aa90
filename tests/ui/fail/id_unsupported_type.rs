use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
struct Note {
    #[sync(id)]
    id: i64,
    text: String,
}

#[derive(SyncModel, Serialize, Deserialize, Clone)]
struct Draft {
    #[sync(id)]
    id: Option<String>,
}

fn main() {}
