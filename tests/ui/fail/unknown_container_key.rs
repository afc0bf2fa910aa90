use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(endpiont = "notes")]
struct Note {
    #[sync(id)]
    id: String,
}

fn main() {}
