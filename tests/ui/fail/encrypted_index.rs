//! An encrypted field cannot be indexed: the remote only holds its ciphertext.
use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
struct Note {
    #[sync(id)]
    id: String,
    #[sync(encrypted, index)]
    secret: String,
    #[sync(id, encrypted)]
    other_id: String,
}

fn main() {}
