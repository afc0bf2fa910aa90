use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
struct Note<T> {
    #[sync(id)]
    id: String,
    value: T,
}

fn main() {}
