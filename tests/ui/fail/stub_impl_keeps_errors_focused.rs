//! A model with a broken attribute still implements the trait (a stub), so
//! its uses elsewhere add no errors of their own.
use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(endpoint = "notes", colour = "red")]
struct Note {
    #[sync(id)]
    id: String,
}

fn needs_model<T: SyncModel>() -> &'static str {
    T::ENDPOINT
}

fn main() {
    let _ = needs_model::<Note>();
    let _ = Note::rest_requests();
}
