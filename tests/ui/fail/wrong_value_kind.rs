use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(endpoint = 5, priority = "high", rest(post(retry_count = "2", timeout_ms = -1)))]
struct Note {
    #[sync(id = true)]
    id: String,
    #[sync(column)]
    title: String,
}

fn main() {}
