use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone)]
struct Extra {
    a: String,
}

#[derive(SyncModel, Serialize, Deserialize, Clone)]
struct Note {
    #[sync(id)]
    id: String,
    #[serde(flatten)]
    extra: Extra,
    version: i64,
    #[serde(rename = "title")]
    heading: String,
    title: String,
    #[serde(rename(serialize = "a", deserialize = "b"))]
    body: String,
}

fn main() {}
