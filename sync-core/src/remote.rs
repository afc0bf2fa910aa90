//! The remote side of sync: a trait the engine talks to, so that any backend
//! can be reached. [`HttpRemote`](crate::HttpRemote) is the default.
//!
//! This module holds everything an implementation of [`Remote`] needs, and only here: the
//! trait, [`ChangeFeed`], [`RemoteError`], the items pushed and the pages pulled. How a
//! model is pulled ([`PullMode`]) and its requests
//! ([`RestRequests`]) are application configuration, at the crate root.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sync_schema::ModelSchema;

use sync_protocol::{
    OpStatus, PushOp, PushResponse, DELETED_KEY, ID_KEY, UPDATED_AT_KEY, VERSION_KEY,
};

use crate::rest::{PullMode, RestRequests};
use crate::store::{JsonObject, RemoteRecord};

/// Where and how one model is reached.
#[derive(Debug, Clone)]
pub struct ModelRoute {
    /// The model's schema.
    pub schema: &'static ModelSchema,
    /// Collection / endpoint name.
    pub endpoint: String,
    /// Request configuration (the derive's, merged with run-time overrides).
    pub rest: RestRequests,
    /// How to pull this model.
    pub pull: PullMode,
    /// How the backend versions, conflicts, replays and keys this model's records (REST
    /// only; the default is sync-server's behaviour).
    pub backend: crate::backend::RestBackend,
    /// Turns a received record into the model's full record JSON (fills
    /// serde defaults and `None`s, checks types); a record that does not fit comes back
    /// unchanged with the reason.
    pub normalize: fn(JsonObject) -> Result<JsonObject, (JsonObject, String)>,
}

/// [`ModelRoute::normalize`] for model `T`: a round trip through the typed model. It reads
/// the record by reference, so one that does not fit is returned as it came.
pub fn normalize_record<T: crate::SyncModel>(
    data: JsonObject,
) -> Result<JsonObject, (JsonObject, String)> {
    let value = Value::Object(data);
    let into_object = |value: Value| match value {
        Value::Object(object) => object,
        _ => JsonObject::new(),
    };
    // The error names the field that does not fit (`title: invalid type ...`).
    let model: T = match serde_path_to_error::deserialize(&value) {
        Ok(model) => model,
        Err(err) => {
            let reason = format!("{}: {}", err.path(), err.inner());
            return Err((into_object(value), reason));
        }
    };
    match model.to_record_json() {
        Ok(object) => Ok(object),
        Err(err) => Err((into_object(value), err.to_string())),
    }
}

// The operation of a push item is the wire protocol's `OpKind`; `PushKind` is this crate's
// own name for it, public only as `protocol::OpKind`.
pub(crate) use sync_protocol::OpKind as PushKind;

/// One change to send.
#[derive(Debug, Clone)]
pub struct PushItem {
    /// Outbox seq it came from.
    pub seq: i64,
    /// What to do (create: POST; update: PATCH with a delta; replace: PUT with the full
    /// record; delete).
    pub kind: PushKind,
    /// Record id.
    pub id: String,
    /// Version the change is based on (0 = never acknowledged: no check).
    pub base_version: i64,
    /// Full record (create, replace) or delta (update); `None` for delete.
    pub data: Option<JsonObject>,
    /// Unique per change; the remote applies a key at most once.
    pub idempotency_key: String,
    /// The change may have reached the remote already: it is sent again after an answer
    /// that was lost, or after a restart while it was on its way.
    pub sent: bool,
}

/// What the remote did with one push item.
#[derive(Debug, Clone, PartialEq)]
pub enum PushOutcome {
    /// Accepted; `record` is the server's copy when it sent one.
    Applied {
        /// New server version (0 if the API has none).
        version: i64,
        /// The record as the server has it now.
        record: Option<RemoteRecord>,
    },
    /// The base version was stale; this is the current record.
    Conflict {
        /// The server's current record.
        current: RemoteRecord,
    },
    /// Refused permanently (validation, not found, forbidden ...).
    Rejected {
        /// HTTP status or 0.
        status: u16,
        /// Why.
        message: String,
    },
    /// Failed transiently (network, 5xx, 429): retry later.
    Transient {
        /// Why.
        message: String,
        /// The server asked to wait this long.
        retry_after: Option<Duration>,
    },
}

/// A page of remote records.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct RemotePage {
    /// Records.
    pub records: Vec<RemoteRecord>,
    /// Records of the page that could not be read; the engine quarantines them and the
    /// cursor moves past them.
    pub rejected: Vec<crate::store::QuarantinedRecord>,
    /// Cursor after this page.
    pub next_cursor: Option<String>,
    /// More pages follow.
    pub has_more: bool,
    /// Bytes received for this page.
    pub bytes: u64,
}

/// Errors talking to a remote.
///
/// A failure that has an underlying error (the HTTP client's, serde's, the WebSocket's, a
/// sealed field's) keeps it as its [`source`](std::error::Error::source); `message` says what
/// was being done. An answer the server gave (a 4xx, a 5xx and its text) is data, not a
/// source, and is in `message` or [`Refused`](Self::Refused).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// Could not reach the server, or it failed transiently (5xx, 429, timeout).
    #[error("remote unavailable: {message}")]
    Unavailable {
        /// What happened.
        message: String,
        /// The server asked to wait this long.
        retry_after: Option<Duration>,
        /// The transport's error (refused connection, timeout, lost socket ...), if there was
        /// one; none when the server answered (a 5xx or 429, described in `message`).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The server refused the request (4xx).
    #[error("remote refused the request with HTTP {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server answered something this client cannot read.
    #[error("unexpected response from the remote: {message}")]
    BadResponse {
        /// What is wrong with the answer.
        message: String,
        /// Why it could not be read (serde's error, ...), if another error said so.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The request could not be built (configuration error).
    #[error("cannot build the request: {message}")]
    Config {
        /// What could not be built.
        message: String,
        /// Why, if another error said so (an invalid header, a field that cannot be sealed ...).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl RemoteError {
    /// True for failures worth retrying later.
    pub fn is_transient(&self) -> bool {
        matches!(self, RemoteError::Unavailable { .. })
    }

    /// [`Unavailable`](Self::Unavailable), with no `Retry-After` and no underlying error.
    pub fn unavailable(message: impl Into<String>) -> RemoteError {
        RemoteError::Unavailable {
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// [`BadResponse`](Self::BadResponse), with no underlying error.
    pub fn bad_response(message: impl Into<String>) -> RemoteError {
        RemoteError::BadResponse {
            message: message.into(),
            source: None,
        }
    }

    /// [`Config`](Self::Config), with no underlying error.
    pub fn config(message: impl Into<String>) -> RemoteError {
        RemoteError::Config {
            message: message.into(),
            source: None,
        }
    }

    /// Keeps `error` as the underlying error of an [`Unavailable`](Self::Unavailable),
    /// [`BadResponse`](Self::BadResponse) or [`Config`](Self::Config). A
    /// [`Refused`](Self::Refused) is the server's answer and has none, so it is returned as is.
    #[must_use]
    pub fn with_source(
        mut self,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> RemoteError {
        match &mut self {
            RemoteError::Unavailable { source, .. }
            | RemoteError::BadResponse { source, .. }
            | RemoteError::Config { source, .. } => *source = Some(error.into()),
            RemoteError::Refused { .. } => {}
        }
        self
    }
}

/// Counts of bytes moved by a remote call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Request bytes.
    pub sent: u64,
    /// Response bytes.
    pub received: u64,
}

/// A backend the engine pushes to and pulls from.
///
/// Implement it to reach a backend that REST configuration cannot describe;
/// [`HttpRemote`](crate::HttpRemote) implements the default protocol and
/// configurable REST APIs.
#[async_trait]
pub trait Remote: Send + Sync + fmt::Debug + 'static {
    /// Largest number of items [`Remote::push`] should get at once (1 = no batching).
    fn max_batch(&self) -> usize;

    /// Sends changes of one model, in order. Returns one outcome per item, in
    /// order, and the bytes moved. An `Err` means nothing is known about any item.
    async fn push(
        &self,
        route: &ModelRoute,
        items: &[PushItem],
    ) -> Result<(Vec<PushOutcome>, Traffic), RemoteError>;

    /// One page of changes after `cursor`.
    async fn pull(
        &self,
        route: &ModelRoute,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RemotePage, RemoteError>;

    /// One record by id (`None` if the remote does not have it).
    async fn fetch(
        &self,
        route: &ModelRoute,
        id: &str,
    ) -> Result<Option<RemoteRecord>, RemoteError>;

    /// Records matching URL query parameters, with limit and offset.
    async fn fetch_page(
        &self,
        route: &ModelRoute,
        params: &[(String, String)],
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<RemotePage, RemoteError>;

    /// Cheap reachability check.
    async fn health(&self) -> Result<(), RemoteError>;

    /// True if [`sync_metadata`](Self::sync_metadata) answers (sync-server's protocol): a run
    /// with nothing to push then starts with that one request and pulls only the collections
    /// whose checksum differs from the store's.
    fn has_sync_metadata(&self) -> bool {
        false
    }

    /// The user's sync metadata as the remote keeps it (sync-server's `GET /sync/metadata`:
    /// devices, and per collection the record counts and checksum). A remote without it
    /// answers a [`Config`](RemoteError::Config) error.
    async fn sync_metadata(&self) -> Result<crate::protocol::SyncMetadataResponse, RemoteError> {
        Err(RemoteError::config("this remote keeps no sync metadata"))
    }

    /// Up to `limit` records of `route`'s collection with an id after `after`, by id, as
    /// (id, version, deleted) read from the records (sync-server's `GET /sync/digest/...`).
    async fn digest_page(
        &self,
        route: &ModelRoute,
        after: &str,
        limit: usize,
    ) -> Result<crate::protocol::DigestPage, RemoteError> {
        let _ = (route, after, limit);
        Err(RemoteError::config("this remote lists no record digests"))
    }

    /// Forgets the remote's record of `device`; `false` if it had none.
    async fn forget_device(&self, device: &str) -> Result<bool, RemoteError> {
        let _ = device;
        Err(RemoteError::config("this remote keeps no device records"))
    }

    /// The change events the remote delivers by itself, if it is also a realtime channel
    /// (as [`WebSocketRemote`](crate::WebSocketRemote) is); the manager applies them like
    /// pulled records.
    fn change_feed(&self) -> Option<&dyn ChangeFeed> {
        None
    }

    /// The remote's own view of whether it is connected, if it has one; used
    /// as the manager's connectivity when the application gives none.
    fn connection_state(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }
}

/// Change events a [`Remote`] delivers by itself, apart from its requests (see
/// [`Remote::change_feed`]).
pub trait ChangeFeed: Send + Sync {
    /// The events, as the server sent them.
    fn events(&self) -> tokio::sync::broadcast::Receiver<Value>;

    /// Asks for the events of `channel`, now and after every reconnect.
    fn subscribe(&self, channel: &str, parameters: Map<String, Value>);

    /// Whether the manager subscribes every registered model's endpoint when it starts
    /// (else the application calls [`subscribe`](Self::subscribe) itself).
    fn subscribe_all_models(&self) -> bool {
        true
    }

    /// How the event names map to model events.
    fn event_mapper(&self) -> crate::realtime::SyncEventMapper {
        crate::realtime::SyncEventMapper::default()
    }

    /// Where an event's name, collection, id, version and record are (the envelope's field
    /// names).
    fn message_format(&self) -> crate::realtime::MessageFormat {
        crate::realtime::MessageFormat::default()
    }
}

#[allow(dead_code)]
fn _object_safe(_: &dyn Remote, _: &dyn ChangeFeed) {}

/// Reads a wire record: strips `version`, `updated_at` and `deleted` and
/// finds the id under the model's id wire name (or `id`).
pub fn parse_remote_record(
    schema: &ModelSchema,
    mut object: Map<String, Value>,
) -> Result<RemoteRecord, RemoteError> {
    let id_key = schema.id().wire_name;
    let id = match wire_id(schema, &object) {
        Some(Ok(id)) => id,
        Some(Err(other)) => {
            return Err(RemoteError::bad_response(format!(
                "{} record has a non-string id: {other}",
                schema.model_type
            )))
        }
        None => {
            return Err(RemoteError::bad_response(format!(
                "{} record without `{id_key}`",
                schema.model_type
            )))
        }
    };
    // Ids the protocol adds under `id` when the model names its id differently.
    if id_key != ID_KEY && schema.field_by_wire_name(ID_KEY).is_none() {
        object.remove(ID_KEY);
    }
    object.insert(id_key.to_owned(), Value::String(id.clone()));
    let version = match object.remove(VERSION_KEY) {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            RemoteError::bad_response(format!("record `{id}` has version {n}, not an integer"))
        })?,
        Some(Value::String(s)) => s.parse().map_err(|_| {
            RemoteError::bad_response(format!("record `{id}` has version {s:?}, not an integer"))
        })?,
        Some(other) => {
            return Err(RemoteError::bad_response(format!(
                "record `{id}` has version {other}, not an integer"
            )))
        }
    };
    let deleted = matches!(object.remove(DELETED_KEY), Some(Value::Bool(true)));
    let updated_at = match object.remove(UPDATED_AT_KEY) {
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(&s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        _ => None,
    };
    // Keep only the model's fields; the server may add its own keys.
    object.retain(|key, _| schema.field_by_wire_name(key).is_some());
    Ok(RemoteRecord {
        id,
        version,
        deleted,
        data: object,
        updated_at,
    })
}

/// The wire form of `items` for `route`: [`PushOp`]s borrowing the record data, so a push is
/// serialised straight from its items.
pub(crate) fn wire_ops<'a>(
    route: &ModelRoute,
    items: &'a [PushItem],
) -> Vec<PushOp<&'a JsonObject>> {
    items
        .iter()
        .map(|item| PushOp {
            idempotency_key: Some(item.idempotency_key.clone()),
            collection: route.endpoint.clone(),
            op: item.kind,
            id: Some(item.id.clone()),
            base_version: (item.base_version > 0).then_some(item.base_version),
            data: item.data.as_ref(),
        })
        .collect()
}

/// Reads a push response body: exactly one outcome per op, in order.
/// A wire record's id, under the model's id name or `id`: `None` if absent, the value itself
/// if it is neither a string nor a number.
fn wire_id<'a>(
    schema: &ModelSchema,
    object: &'a Map<String, Value>,
) -> Option<Result<String, &'a Value>> {
    let value = object
        .get(schema.id().wire_name)
        .or_else(|| object.get(ID_KEY))?;
    Some(match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(other),
    })
}

/// Why [`parse_remote_record`] would refuse `object`, without taking it apart.
fn unreadable(schema: &ModelSchema, object: &Map<String, Value>) -> Option<String> {
    match wire_id(schema, object) {
        Some(Ok(_)) => {}
        Some(Err(other)) => return Some(format!("a non-string id: {other}")),
        None => return Some(format!("no `{}`", schema.id().wire_name)),
    }
    match object.get(VERSION_KEY) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_i64().is_some() => None,
        Some(Value::String(s)) if s.parse::<i64>().is_ok() => None,
        Some(other) => Some(format!("version {other} is not an integer")),
    }
}

/// Reads a page of the default pull protocol (`{"items": [...], "next_cursor", "has_more"}`)
/// leniently: an item that is not a readable record is rejected alone (kept for quarantine),
/// not the page.
pub(crate) fn read_pull_page(
    route: &ModelRoute,
    value: Value,
    bytes: u64,
) -> Result<RemotePage, RemoteError> {
    let Value::Object(mut body) = value else {
        return Err(RemoteError::bad_response("pull page: not an object"));
    };
    let items = match body.remove("items") {
        Some(Value::Array(items)) => items,
        _ => return Err(RemoteError::bad_response("pull page: no `items` array")),
    };
    let head: sync_protocol::PullPage = serde_json::from_value(Value::Object({
        body.insert("items".into(), Value::Array(Vec::new()));
        body
    }))
    .map_err(|e| {
        RemoteError::bad_response("pull page: not a page of the protocol").with_source(e)
    })?;
    let mut page = RemotePage {
        records: Vec::with_capacity(items.len()),
        next_cursor: Some(head.next_cursor),
        has_more: head.has_more,
        bytes,
        ..RemotePage::default()
    };
    for item in items {
        match item {
            // Checked before it is taken apart, so a refused record is kept as it came.
            Value::Object(object) => match unreadable(route.schema, &object) {
                Some(why) => page.rejected.push(crate::store::QuarantinedRecord::new(
                    wire_id(route.schema, &object).and_then(Result::ok),
                    Value::Object(object),
                    why,
                )),
                None => page
                    .records
                    .push(parse_remote_record(route.schema, object)?),
            },
            other => page.rejected.push(crate::store::QuarantinedRecord::new(
                None,
                other,
                "a pulled item that is not a JSON object",
            )),
        }
    }
    Ok(page)
}

/// Reads a push answer: one outcome per op, and the positions of conflicts whose current
/// record the server left out (`record_omitted`, to keep its answer within a byte budget).
/// Those stand as transient outcomes until [`fetch_omitted`] replaces them with the fetched
/// record, so an op whose record cannot be fetched is simply tried again.
pub(crate) fn push_outcomes(
    route: &ModelRoute,
    count: usize,
    parsed: PushResponse,
) -> Result<(Vec<PushOutcome>, Vec<usize>), RemoteError> {
    if parsed.results.len() != count {
        return Err(RemoteError::bad_response(format!(
            "push response has {} results for {count} ops",
            parsed.results.len()
        )));
    }
    let mut outcomes = Vec::with_capacity(count);
    let mut omitted = Vec::new();
    for (index, result) in parsed.results.into_iter().enumerate() {
        let record = match result.record {
            Some(object) => Some(parse_remote_record(route.schema, object)?),
            None => None,
        };
        outcomes.push(match result.status {
            OpStatus::Applied => PushOutcome::Applied {
                version: result
                    .version
                    .or(record.as_ref().map(|r| r.version))
                    .unwrap_or(0),
                record,
            },
            OpStatus::Conflict => match record {
                Some(current) => PushOutcome::Conflict { current },
                None if result.record_omitted => {
                    omitted.push(index);
                    PushOutcome::Transient {
                        message: "conflict: the server left the current record out and it \
                                  could not be fetched"
                            .to_owned(),
                        retry_after: None,
                    }
                }
                None => {
                    return Err(RemoteError::bad_response(
                        "conflict result without the current record",
                    ))
                }
            },
            OpStatus::Rejected => PushOutcome::Rejected {
                status: 422,
                message: result
                    .error
                    .or_else(|| result.code.map(|code| code.to_string()))
                    .unwrap_or_else(|| "rejected".to_owned()),
            },
        });
    }
    Ok((outcomes, omitted))
}

/// Fetches the current records [`push_outcomes`] found omitted and turns those outcomes into
/// conflicts; one that cannot be fetched (gone since, or an error) stays transient.
pub(crate) async fn fetch_omitted<R: Remote + ?Sized>(
    remote: &R,
    route: &ModelRoute,
    items: &[PushItem],
    outcomes: &mut [PushOutcome],
    omitted: Vec<usize>,
) {
    for index in omitted {
        let (Some(item), Some(slot)) = (items.get(index), outcomes.get_mut(index)) else {
            continue;
        };
        match remote.fetch(route, &item.id).await {
            Ok(Some(current)) => *slot = PushOutcome::Conflict { current },
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(id = %item.id, error = %crate::error::chain_text(&err), "fetching an omitted conflict record failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sync_schema::{FieldSpec, SqlType};

    const FIELDS: &[FieldSpec] = &[
        FieldSpec {
            position: 0,
            name: "key",
            wire_name: "key",
            column: "key",
            sql_type: SqlType::Text,
            nullable: false,
            id: true,
            index: false,
            skip_delta: false,
            has_default: false,
        },
        FieldSpec {
            position: 1,
            name: "title",
            wire_name: "title",
            column: "title",
            sql_type: SqlType::Text,
            nullable: false,
            id: false,
            index: false,
            skip_delta: false,
            has_default: false,
        },
    ];
    const SCHEMA: ModelSchema = ModelSchema {
        struct_name: "Note",
        model_type: "note",
        endpoint: "notes",
        table: "notes",
        id_field: 0,
        fields: FIELDS,
    };

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn parses_protocol_keys_and_drops_unknown_ones() {
        let rec = parse_remote_record(
            &SCHEMA,
            obj(json!({"id": "n1", "title": "a", "version": 7, "updated_at": "2026-01-01T00:00:00Z", "owner": "x"})),
        )
        .unwrap();
        assert_eq!(rec.id, "n1");
        assert_eq!(rec.version, 7);
        assert!(!rec.deleted);
        assert!(rec.updated_at.is_some());
        assert_eq!(Value::Object(rec.data), json!({"key": "n1", "title": "a"}));
    }

    fn route() -> ModelRoute {
        ModelRoute {
            schema: &SCHEMA,
            endpoint: "notes".into(),
            rest: RestRequests::default(),
            pull: PullMode::Cursor,
            backend: crate::backend::RestBackend::default(),
            normalize: Ok,
        }
    }

    #[test]
    fn push_ops_keep_their_wire_shape() {
        let items = vec![
            PushItem {
                seq: 1,
                kind: PushKind::Create,
                id: "n1".into(),
                base_version: 0,
                data: Some(obj(json!({"key": "n1", "title": "a"}))),
                idempotency_key: "k1".into(),
                sent: false,
            },
            PushItem {
                seq: 2,
                kind: PushKind::Delete,
                id: "n2".into(),
                base_version: 4,
                data: None,
                idempotency_key: "k2".into(),
                sent: false,
            },
        ];
        let route = route();
        let text = serde_json::to_string(&sync_protocol::PushRequest {
            ops: wire_ops(&route, &items),
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"ops":[{"idempotency_key":"k1","collection":"notes","op":"create","id":"n1","data":{"key":"n1","title":"a"}},{"idempotency_key":"k2","collection":"notes","op":"delete","id":"n2","base_version":4}]}"#
        );
    }

    #[test]
    fn push_outcomes_read_results_and_codes() {
        let parsed: PushResponse = serde_json::from_value(json!({"results": [
            {"status": "applied", "version": 3, "record": {"id": "n1", "title": "a", "version": 3}},
            {"status": "conflict", "version": 5, "record": {"id": "n2", "title": "b", "version": 5}, "error": "version conflict", "code": "conflict"},
            {"status": "rejected", "code": "quota_exceeded"},
            {"status": "rejected", "error": "no record", "code": "not_found"},
            {"status": "conflict", "version": 6, "record_omitted": true, "code": "conflict"},
        ]}))
        .unwrap();
        let (outcomes, omitted) = push_outcomes(&route(), 5, parsed.clone()).unwrap();
        // An omitted record is fetched by the caller; until then the op is only retried.
        assert_eq!(omitted, [4]);
        assert!(matches!(&outcomes[4], PushOutcome::Transient { .. }));
        assert!(
            matches!(&outcomes[0], PushOutcome::Applied { version: 3, record: Some(r) } if r.id == "n1")
        );
        assert!(matches!(&outcomes[1], PushOutcome::Conflict { current } if current.version == 5));
        assert_eq!(
            outcomes[2],
            PushOutcome::Rejected {
                status: 422,
                message: "quota_exceeded".into()
            }
        );
        assert_eq!(
            outcomes[3],
            PushOutcome::Rejected {
                status: 422,
                message: "no record".into()
            }
        );
        assert!(matches!(
            push_outcomes(&route(), 3, parsed),
            Err(RemoteError::BadResponse { .. })
        ));
        // A conflict with neither the record nor the omitted flag cannot be settled.
        let bare: PushResponse =
            serde_json::from_value(json!({"results": [{"status": "conflict", "version": 2}]}))
                .unwrap();
        assert!(matches!(
            push_outcomes(&route(), 1, bare),
            Err(RemoteError::BadResponse { .. })
        ));
    }

    #[test]
    fn tombstones_and_bad_records() {
        let rec = parse_remote_record(
            &SCHEMA,
            obj(json!({"key": "n2", "deleted": true, "version": "9"})),
        )
        .unwrap();
        assert!(rec.deleted);
        assert_eq!(rec.version, 9);
        for bad in [
            json!({"title": "no id"}),
            json!({"id": ["x"]}),
            json!({"id": "n", "version": "v1"}),
            json!({"id": "n", "version": 1.5}),
        ] {
            assert!(matches!(
                parse_remote_record(&SCHEMA, obj(bad)),
                Err(RemoteError::BadResponse { .. })
            ));
        }
    }
}
