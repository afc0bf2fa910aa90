//! Every attribute, raw identifiers and private models compile.
#![deny(warnings, missing_docs)]
//! (crate docs)
use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

fn page(v: serde_json::Value) -> serde_json::Value {
    v
}

/// A model.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug)]
#[sync(model_type = "item", endpoint = "items", table = "item_rows", crate = "offline_sync_kit")]
#[sync(rest(
    get(url = "v1/{tenant}/items", url_parameters(tenant = "t1"), response_data_key = "data.items", response_transformer = "page", timeout_ms = 100, retry_count = 1, header = "A: b"),
    post(top_level_key = "item", supplemental = r#"{"k": [1, {"x": null}]}"#),
    put(url = "https://example.com/items"),
    patch(header = "If-None-Match: *"),
    delete(url = "items/{id}/trash")
))]
#[serde(rename_all = "PascalCase", default)]
pub struct Item {
    /// id
    #[sync(id)]
    pub id: uuid::Uuid,
    /// a raw identifier
    pub r#type: String,
    /// json, indexed, own column
    #[sync(json, index, column = "meta_json")]
    pub meta: std::collections::HashMap<String, i32>,
    /// sent only in full updates
    #[sync(skip_delta)]
    pub blob: Vec<u8>,
    /// not stored
    #[sync(skip)]
    pub local_only: bool,
}

impl Default for Item {
    fn default() -> Self {
        Item {
            id: uuid::Uuid::nil(),
            r#type: String::new(),
            meta: Default::default(),
            blob: Vec::new(),
            local_only: false,
        }
    }
}

#[derive(SyncModel, Serialize, Deserialize, Clone)]
struct PrivateModel {
    #[sync(id)]
    id: String,
}

fn main() {
    assert_eq!(Item::SCHEMA.fields[1].wire_name, "Type");
    assert_eq!(<PrivateModel as SyncModel>::ENDPOINT, "private_models");
    let _ = Item::fields().r#type.eq("x");
    let _ = PrivateModel::fields();
}
