use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
struct Note {
    #[sync(id)]
    id: String,
    #[sync(skip)]
    cached_len: usize,
    #[sync(skip, index)]
    #[serde(skip)]
    scratch: String,
}

fn main() {}
