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

/// Every `pull(...)` and `backend(...)` option.
#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(
    endpoint = "docs",
    pull(
        since(field = "modifiedAt", param = "where", template = "{\"m\":{\"$gte\":\"{since}\"}}", format = "epoch_millis", initial = "0"),
        sort(param = "order", value = "modifiedAt"),
        paging(page_number(page = "page", size = "per_page", first = 0)),
        next_page(total_count_header = "X-Total-Count"),
        parameter(name = "$select", value = "id,title"),
        parameter(name = "count", value = "1"),
        records_at = "data.items"
    ),
    backend(
        idempotency_header = "X-Request-Id",
        version(field = "rev"),
        conditional(header = "If-Match", template = "\"{version}\""),
        conflict_statuses(409, 412),
        conflict_record_at = "error.current",
        already_exists(statuses(409, 400), code_at = "error.code", codes(137, "E_EXISTS")),
        updated_at(field = "modifiedAt", format = "iso8601"),
        tombstone(field = "status", value = "gone"),
        server_fields("modifiedAt", "rev"),
        server_ids(id_at = "data.id", local_id_field = "localId", lookup_param = "localId", lookup_template = "{local_id}")
    )
)]
#[serde(rename_all = "camelCase")]
pub struct Doc {
    #[sync(id)]
    id: String,
    title: String,
    #[serde(default)]
    rev: i64,
    #[serde(default)]
    modified_at: Option<String>,
    #[serde(default)]
    local_id: Option<String>,
}

/// The other forms: named pull modes, cursors, next URLs, keysets, ETags, switches off.
#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(pull = "full_paged", backend(version = "etag", conflict_record_at = false, tombstone(field = "deleted", value = true)))]
pub struct Plain {
    #[sync(id)]
    id: String,
}

#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(pull(paging(cursor(param = "after", limit = "first")), next_page(body_cursor = "pageInfo.endCursor")))]
struct ByCursor {
    #[sync(id)]
    id: String,
}

#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(pull(paging(next_url), next_page = "link_header"), backend(version = "none", conditional = false, idempotency_header = false))]
struct ByLink {
    #[sync(id)]
    id: String,
}

#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(pull(since(field = "seq", param = "since"), paging(keyset(limit = "limit", skip = "skip")), next_page = "full_page"))]
struct ByKeyset {
    #[sync(id)]
    id: String,
    seq: i64,
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
    assert!(Doc::pull_mode().is_some() && Doc::rest_backend().is_some());
    assert!(Plain::pull_mode().is_some() && Plain::rest_backend().is_some());
    assert!(ByCursor::pull_mode().is_some() && ByCursor::rest_backend().is_none());
    assert!(ByLink::pull_mode().is_some() && ByKeyset::pull_mode().is_some());
    assert!(PrivateModel::pull_mode().is_none() && PrivateModel::rest_backend().is_none());
}
