use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use sync_schema::ModelSchema;

use crate::error::Result;
use crate::mask::FieldMask;
use crate::rest::RestRequests;

/// A record type the runtime can store, diff, send as a delta and route to a REST API.
///
/// Implement it with `#[derive(SyncModel)]`; the derive checks the model at
/// compile time and generates every item below from the struct and its
/// `#[sync(...)]` and `#[serde(...)]` attributes.
pub trait SyncModel: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Model type name, stored with every queued operation.
    const MODEL_TYPE: &'static str;
    /// REST endpoint and wire collection name.
    const ENDPOINT: &'static str;
    /// Table, columns, wire names, SQL types and flags.
    const SCHEMA: &'static ModelSchema;

    /// Wire names of the `#[sync(encrypted)]` fields (end-to-end encrypted; see
    /// [`crate::envelope`]).
    const ENCRYPTED_FIELDS: &'static [&'static str] = &[];

    /// Queue priority of this model's changes (`#[sync(priority = N)]`, default 0): a push
    /// sends the ready changes of every model highest priority first, then in the order they
    /// were made. [`ModelConfig::priority`](crate::ModelConfig::priority) overrides it per
    /// manager and [`WriteOptions::priority`](crate::WriteOptions::priority) per write.
    const PRIORITY: i32 = 0;

    /// The generated typed field handles (`Todo::fields().priority`).
    type Fields;

    /// Typed handles for building queries: `Todo::fields().priority.gt(3)`.
    fn fields() -> Self::Fields;

    /// The record's id as text (`String` ids borrow, `uuid::Uuid` ids are formatted).
    fn id(&self) -> Cow<'_, str>;

    /// The fields whose value differs between `before` and `self`.
    fn changed_fields(&self, before: &Self) -> FieldMask;

    /// The fields of `mask` as a JSON object keyed by wire name.
    ///
    /// A `#[sync(skip_delta)]` field is never sent alone: when `mask` holds one,
    /// the result is the full record (see [`SyncModel::needs_full_update`]).
    fn try_to_delta_json(&self, mask: FieldMask) -> Result<Map<String, Value>>;

    /// Infallible form of [`SyncModel::try_to_delta_json`].
    ///
    /// # Panics
    /// If a `#[sync(json)]` field's `Serialize` impl fails (for example a map
    /// with non-string keys); the plain field types of the type map never fail.
    fn to_delta_json(&self, mask: FieldMask) -> Map<String, Value> {
        match self.try_to_delta_json(mask) {
            Ok(map) => map,
            Err(err) => panic!("{} cannot be converted to JSON: {err}", Self::MODEL_TYPE),
        }
    }

    /// Applies a delta (wire name -> value) and returns the fields it set.
    ///
    /// Every value is checked before anything is assigned: a value of the
    /// wrong type or a key that is not a field is an error and the model is
    /// left unchanged.
    fn apply_delta(&mut self, delta: &Map<String, Value>) -> Result<FieldMask>;

    /// The value of the field at `position` as JSON (`Value::Null` for `None`).
    fn field_value(&self, position: usize) -> Result<Value>;

    /// REST request configuration from the `#[sync(rest(...))]` attributes.
    fn rest_requests() -> RestRequests;

    /// How the model is pulled, from `#[sync(pull(...))]`; `None`: sync-server's cursor
    /// protocol. [`ModelConfig::pull`](crate::ModelConfig::pull) replaces it for one manager.
    fn pull_mode() -> Option<crate::rest::PullMode> {
        None
    }

    /// How a REST backend versions, conflicts, replays and keys the model's records, from
    /// `#[sync(backend(...))]`; `None`: sync-server's behaviour.
    /// [`ModelConfig::backend`](crate::ModelConfig::backend) replaces it for one manager.
    fn rest_backend() -> Option<crate::backend::RestBackend> {
        None
    }

    /// Every stored field.
    fn all_fields() -> FieldMask {
        FieldMask::all(Self::SCHEMA.fields.len())
    }

    /// True if an update of `mask` must be sent in full because it touches a
    /// `#[sync(skip_delta)]` field.
    fn needs_full_update(mask: FieldMask) -> bool {
        mask.iter()
            .any(|p| Self::SCHEMA.fields.get(p).is_some_and(|f| f.skip_delta))
    }

    /// The whole record as a JSON object keyed by wire name (no `#[sync(skip)]` fields).
    fn to_record_json(&self) -> Result<Map<String, Value>> {
        self.try_to_delta_json(Self::all_fields())
    }
}
