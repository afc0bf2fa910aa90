use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(endpoint = "notes")]
#[sync(endpoint = "memos")]
struct Note {
    #[sync(id)]
    id: String,
    #[sync(index, index)]
    title: String,
    #[sync(column = "a", column = "b")]
    body: String,
}

fn main() {}
