use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(rest(fetch(url = "notes"), post(body_key = "doc")))]
struct Note {
    #[sync(id)]
    id: String,
}

fn main() {}
