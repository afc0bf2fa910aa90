use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(rest(post(supplemental = r#"{"collectionId": c1}"#), put(supplemental = "[1, 2]")))]
#[sync(rest(get(supplemental = r#"{"tenant": "t1", "filter": {"done": false}}"#)))]
struct Note {
    #[sync(id)]
    id: String,
}

fn main() {}
