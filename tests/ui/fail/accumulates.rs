//! Every mistake is reported in one compile.
use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(tabel = "notes", rest(post(top_level_key = 1)))]
struct Note {
    id: String,
    #[sync(jsn)]
    tags: Vec<String>,
    count: u64,
    #[sync(encrypted, index)]
    secret: String,
}

fn main() {}
