use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
struct Note {
    #[sync(id)]
    id: String,
    #[sync(id)]
    other: String,
}

fn main() {}
