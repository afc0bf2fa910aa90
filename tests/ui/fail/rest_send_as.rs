use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

// A delete cannot be sent as PATCH, and `send_as` is an HTTP method.
#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(rest(delete(send_as = "PATCH"), patch(send_as = "UPSERT")))]
struct Note {
    #[sync(id)]
    id: String,
}

fn main() {}
