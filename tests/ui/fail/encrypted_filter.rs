//! An encrypted field has no filters or orderings: its handle offers none.
use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
struct Note {
    #[sync(id)]
    id: String,
    #[sync(encrypted)]
    secret: String,
}

fn main() {
    let _ = Query::<Note>::new().filter(Note::fields().secret.eq("x".to_string()));
    let _ = Query::<Note>::new().order_by(Note::fields().secret.asc());
}
