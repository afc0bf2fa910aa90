//! The test models. They name the runtime through `#[sync(crate = "::sync_core")]`, so they
//! need neither the facade nor `sync-diesel`.

use serde::{Deserialize, Serialize};
use sync_derive::SyncModel;

/// The `Todo` of DESIGN.md, field for field, without its REST override: the tests run it
/// against the reference server, which speaks the default protocol. [`design::Todo`] keeps
/// the override, for the tests of the derive's output.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(
    crate = "::sync_core",
    model_type = "todo",
    endpoint = "todos",
    table = "todos"
)]
#[serde(rename_all = "camelCase")]
pub struct Todo {
    /// Record id.
    #[sync(id)]
    pub id: String,
    /// Title.
    pub title: String,
    /// Free text; absent on the wire means empty.
    #[serde(default)]
    pub description: String,
    /// Done or not.
    pub is_completed: bool,
    /// An indexed column.
    #[sync(index)]
    pub priority: i32,
    /// A JSON column.
    #[sync(json)]
    pub tags: Vec<String>,
    /// A nullable timestamp.
    pub due: Option<chrono::DateTime<chrono::Utc>>,
}

/// A [`Todo`] with priority 1, no tags, no description and no due date.
pub fn todo(id: &str, title: &str) -> Todo {
    Todo {
        id: id.to_owned(),
        title: title.to_owned(),
        description: String::new(),
        is_completed: false,
        priority: 1,
        tags: vec![],
        due: None,
    }
}

pub mod design {
    //! The DESIGN.md model exactly as DESIGN.md writes it.

    use serde::{Deserialize, Serialize};
    use sync_derive::SyncModel;

    /// The `Todo` of DESIGN.md with its REST override (`POST` wraps the record as
    /// `{"document": ..., "collectionId": "c1"}`); same schema as [`super::Todo`].
    #[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[sync(
        crate = "::sync_core",
        model_type = "todo",
        endpoint = "todos",
        table = "todos"
    )]
    #[sync(rest(post(
        top_level_key = "document",
        supplemental = r#"{"collectionId":"c1"}"#,
        retry_count = 2
    )))]
    #[serde(rename_all = "camelCase")]
    pub struct Todo {
        /// Record id.
        #[sync(id)]
        pub id: String,
        /// Title.
        pub title: String,
        /// Free text; absent on the wire means empty.
        #[serde(default)]
        pub description: String,
        /// Done or not.
        pub is_completed: bool,
        /// An indexed column.
        #[sync(index)]
        pub priority: i32,
        /// A JSON column.
        #[sync(json)]
        pub tags: Vec<String>,
        /// A nullable timestamp.
        pub due: Option<chrono::DateTime<chrono::Utc>>,
    }
}

/// Nested data of a [`Gadget`], stored as JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Spec {
    /// A string.
    pub name: String,
    /// A float.
    pub weight: f64,
}

/// A model with a field of every column type, a UUID id and renamed columns.
#[allow(missing_docs)]
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(crate = "::sync_core", model_type = "gadget")]
pub struct Gadget {
    #[sync(id)]
    pub uid: uuid::Uuid,
    #[sync(index)]
    pub name: String,
    pub enabled: bool,
    pub small: i16,
    pub count: i32,
    #[serde(rename = "bigCount")]
    pub big: i64,
    pub ratio: f32,
    pub precise: f64,
    #[sync(index)]
    pub made_at: chrono::DateTime<chrono::Utc>,
    pub local_time: chrono::NaiveDateTime,
    pub owner: uuid::Uuid,
    pub blob: Vec<u8>,
    #[sync(json)]
    pub spec: Spec,
    #[sync(column = "note_text")]
    pub note: Option<String>,
    pub maybe_flag: Option<bool>,
    pub maybe_small: Option<i16>,
    pub maybe_count: Option<i32>,
    pub maybe_big: Option<i64>,
    pub maybe_ratio: Option<f32>,
    pub maybe_precise: Option<f64>,
    pub maybe_at: Option<chrono::DateTime<chrono::Utc>>,
    pub maybe_local: Option<chrono::NaiveDateTime>,
    pub maybe_owner: Option<uuid::Uuid>,
    pub maybe_blob: Option<Vec<u8>>,
    #[sync(json)]
    pub maybe_spec: Option<Spec>,
}
