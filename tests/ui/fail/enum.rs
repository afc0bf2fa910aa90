use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
enum Note {
    Text { id: String },
    Empty,
}

fn main() {}
