//! `POST /sync/push`: a batch of writes, one result per write.

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, Record};

/// Kind of a write operation in a [`PushOp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Create a record (fails with a conflict if a live record has the id).
    Create,
    /// Merge the top-level keys of `data` into the record (a delta; `PATCH`).
    Update,
    /// Replace the record's data with `data` (a full update; `PUT`).
    Replace,
    /// Delete the record, leaving a tombstone.
    Delete,
}

impl OpKind {
    /// Every kind, in wire order.
    pub const ALL: [OpKind; 4] = [Self::Create, Self::Update, Self::Replace, Self::Delete];

    /// The wire name of this kind.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Replace => "replace",
            Self::Delete => "delete",
        }
    }

    /// The kind with this wire name, if there is one.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// One operation of a push.
///
/// `D` is the type of `data`: a [`Record`] by default; a client may serialise borrowed data
/// (`PushOp<&Record>`) to avoid copying records into the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushOp<D = Record> {
    /// Key that makes the op idempotent: a replay returns the stored result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Collection (a model's endpoint), e.g. `"todos"`.
    pub collection: String,
    /// What to do.
    pub op: OpKind,
    /// Record id. Optional for `create` (the server then generates one, or takes `data.id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Version the client based its change on; a mismatch is a conflict. `None` skips the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<i64>,
    /// Record data (a JSON object) for create, update and replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<D>,
}

/// Body of `POST /sync/push` (and of the WebSocket `push` request).
///
/// `Op` is the type of one op: a [`PushOp`] by default. A server may read the ops as raw JSON
/// values first (`PushRequest<serde_json::Value>` or borrowed raw values), so that one
/// malformed op is rejected on its own instead of failing the whole request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushRequest<Op = PushOp> {
    /// The operations, applied in order; each one is atomic on its own.
    pub ops: Vec<Op>,
}

/// Outcome status of one pushed op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpStatus {
    /// The op was applied (or had been applied before, for a replayed idempotency key).
    Applied,
    /// `base_version` did not match; `record` is the current record.
    Conflict,
    /// The op is invalid or its record does not exist; `error` says why.
    Rejected,
}

impl OpStatus {
    /// The wire name of this status.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Conflict => "conflict",
            Self::Rejected => "rejected",
        }
    }
}

/// Result of one pushed op; also the stored result of an idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    /// What happened.
    pub status: OpStatus,
    /// Version of the record after the op (applied), or its current version (conflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The record after the op (applied) or the current record (conflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record>,
    /// The server left `record` out to keep its answer within a byte budget (sync-server's
    /// `max_push_answer_bytes`). `version` is still set: a client that needs the record
    /// (a conflict to settle, an applied op whose row takes the server copy) fetches it with
    /// `GET /{collection}/{id}` (or the WebSocket `get` request).
    #[serde(default, skip_serializing_if = "is_false")]
    pub record_omitted: bool,
    /// Why the op was rejected, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the op was rejected (or `conflict`), for programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Body of the `POST /sync/push` response: one result per op, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// Results in the order of the request's ops.
    pub results: Vec<OpResult>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn record(value: Value) -> Record {
        match value {
            Value::Object(map) => map,
            _ => Record::new(),
        }
    }

    #[test]
    fn op_kinds_round_trip_by_name() {
        for kind in OpKind::ALL {
            let text = serde_json::to_string(&kind).expect("serialises");
            assert_eq!(text, format!("\"{}\"", kind.as_str()));
            assert_eq!(OpKind::from_name(kind.as_str()), Some(kind));
            let back: OpKind = serde_json::from_str(&text).expect("parses");
            assert_eq!(back, kind);
        }
        assert_eq!(OpKind::from_name("upsert"), None);
        assert!(serde_json::from_str::<OpKind>("\"upsert\"").is_err());
    }

    #[test]
    fn push_op_shape() {
        let op = PushOp {
            idempotency_key: Some("k1".into()),
            collection: "todos".into(),
            op: OpKind::Update,
            id: Some("t1".into()),
            base_version: Some(3),
            data: Some(record(json!({"title": "milk"}))),
        };
        assert_eq!(
            serde_json::to_string(&PushRequest {
                ops: vec![op.clone()]
            })
            .expect("serialises"),
            r#"{"ops":[{"idempotency_key":"k1","collection":"todos","op":"update","id":"t1","base_version":3,"data":{"title":"milk"}}]}"#
        );
        // Borrowed data serialises the same.
        let data = op.data.clone().unwrap_or_default();
        let borrowed = PushOp {
            idempotency_key: op.idempotency_key.clone(),
            collection: op.collection.clone(),
            op: op.op,
            id: op.id.clone(),
            base_version: op.base_version,
            data: Some(&data),
        };
        assert_eq!(
            serde_json::to_value(&borrowed).expect("serialises"),
            serde_json::to_value(&op).expect("serialises")
        );
        let back: PushOp =
            serde_json::from_value(serde_json::to_value(&op).expect("serialises")).expect("parses");
        assert_eq!(back, op);
    }

    #[test]
    fn push_op_omits_what_is_absent() {
        let op: PushOp =
            serde_json::from_value(json!({"collection": "todos", "op": "delete"})).expect("parses");
        assert_eq!(op.idempotency_key, None);
        assert_eq!(op.id, None);
        assert_eq!(
            serde_json::to_string(&op).expect("serialises"),
            r#"{"collection":"todos","op":"delete"}"#
        );
    }

    #[test]
    fn raw_ops_keep_malformed_ops_apart() {
        let request: PushRequest<Value> =
            serde_json::from_str(r#"{"ops":[{"op":"create"}, 7, "x"]}"#).expect("parses");
        assert_eq!(request.ops.len(), 3);
        assert!(serde_json::from_str::<PushRequest<Value>>(r#"{"nops":[]}"#).is_err());
    }

    #[test]
    fn results_match_what_the_server_sends() {
        // The server writes results by hand in this order, omitting what is absent.
        let applied = r#"{"status":"applied","version":5,"record":{"id":"t1","version":5}}"#;
        let rejected =
            r#"{"status":"rejected","error":"no record \"x\" in \"todos\"","code":"not_found"}"#;
        let conflict = r#"{"status":"conflict","version":9,"record":{"id":"t1"},"error":"version conflict","code":"conflict"}"#;
        let omitted = r#"{"status":"conflict","version":9,"record_omitted":true,"error":"version conflict","code":"conflict"}"#;
        let text = format!(r#"{{"results":[{applied},{rejected},{conflict},{omitted}]}}"#);
        let parsed: PushResponse = serde_json::from_str(&text).expect("parses");
        assert_eq!(parsed.results[0].status, OpStatus::Applied);
        assert_eq!(parsed.results[0].version, Some(5));
        assert_eq!(parsed.results[1].code, Some(ErrorCode::NotFound));
        assert_eq!(parsed.results[2].code, Some(ErrorCode::Conflict));
        assert!(!parsed.results[2].record_omitted);
        assert!(parsed.results[3].record_omitted && parsed.results[3].record.is_none());
        assert_eq!(serde_json::to_string(&parsed).expect("serialises"), text);
    }

    #[test]
    fn statuses_are_strict() {
        for status in [OpStatus::Applied, OpStatus::Conflict, OpStatus::Rejected] {
            assert_eq!(
                serde_json::to_value(status).expect("serialises"),
                json!(status.as_str())
            );
        }
        assert!(serde_json::from_str::<OpResult>(r#"{"status":"deferred"}"#).is_err());
    }

    #[test]
    fn an_unknown_result_code_is_kept() {
        let parsed: OpResult =
            serde_json::from_str(r#"{"status":"rejected","code":"plan_limit_reached"}"#)
                .expect("parses");
        assert_eq!(
            parsed.code,
            Some(ErrorCode::Other("plan_limit_reached".into()))
        );
    }
}
