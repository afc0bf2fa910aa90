//! The push half: ready ops are claimed in chunks (marked in flight and read in one store
//! transaction), sent as a pipeline, and settled from the answers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use serde_json::Map;
use sync_schema::ModelSchema;

use super::{blocking, Inner};
use crate::disposition::Disposition;
use crate::error::{Error, Result};
use crate::events::{SyncEvent, SyncReport};
use crate::options::SyncOptions;
use crate::remote::{ModelRoute, PushItem, PushKind, PushOutcome, RemoteError, Traffic};
use crate::store::{Ack, OpKind, OutboxOp, PendingConflict, StoredRecord};

/// The remote's answer to a pushed chunk.
pub(crate) type PushResult = std::result::Result<(Vec<PushOutcome>, Traffic), RemoteError>;

/// A chunk of ops marked in flight, with what goes on the wire.
pub(crate) struct PreparedChunk {
    /// The ops that are sent, in the order of `items`.
    pub(crate) ops: Vec<OutboxOp>,
    pub(crate) items: Vec<PushItem>,
    /// Local rows of the creates and updates, by id, as they were sent.
    pub(crate) rows: HashMap<String, StoredRecord>,
    /// Ops failed because their local record was gone.
    pub(crate) failed: u64,
}

impl Inner {
    pub(crate) async fn push_all(
        self: &Arc<Self>,
        models: &HashSet<&'static str>,
        batch: usize,
        report: &mut SyncReport,
    ) -> Result<()> {
        let options = self.options();
        let chunk_size = batch.min(self.remote.max_batch()).max(1);
        loop {
            if self.cancel.is_cancelled() {
                return Err(Error::Shutdown);
            }
            let limit = batch.saturating_mul(4).max(64);
            let ready = blocking(&self.store, move |s| s.ready_ops(Utc::now(), limit)).await?;
            // Ops of models this manager does not know cannot be sent: keep them, visibly, as failed.
            for op in ready
                .iter()
                .filter(|op| !self.models.contains_key(op.model_type.as_str()))
            {
                let seq = op.seq;
                let message = format!(
                    "model `{}` is not registered with this SyncManager; register it and call retry_failed",
                    op.model_type
                );
                blocking(&self.store, move |s| s.fail_op(seq, &message)).await?;
                report.failed += 1;
            }
            // One op per record per round keeps a record's ops in order.
            let mut seen = HashSet::new();
            let ready: Vec<OutboxOp> = ready
                .into_iter()
                .filter(|op| models.contains(op.model_type.as_str()))
                .filter(|op| seen.insert((op.model_type.clone(), op.record_id.clone())))
                .collect();
            if ready.is_empty() {
                return Ok(());
            }
            self.progress(0, ready.len() as u64);
            let mut progressed = false;
            for (model_type, ops) in priority_groups(ready, |op| {
                self.models
                    .get(op.model_type.as_str())
                    .map(|route| route.schema.model_type)
            }) {
                let route = Arc::clone(&self.models[model_type]);
                progressed |= self
                    .push_group(&route, &ops, chunk_size, &options, report)
                    .await?;
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Pushes one model's ops chunk by chunk, as a pipeline: while chunk `n` is on the wire,
    /// chunk `n - 1` is settled from its answer and chunk `n + 1` is marked in flight and read
    /// from the store, so the local work hides behind the remote's. Chunks hold distinct
    /// records (one op per record per round), so their order among each other is free.
    /// Returns whether any op left the queue or changed state for good.
    pub(crate) async fn push_group(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        ops: &[OutboxOp],
        chunk_size: usize,
        options: &SyncOptions,
        report: &mut SyncReport,
    ) -> Result<bool> {
        let mut chunks = ops.chunks(chunk_size);
        let Some(first) = chunks.next() else {
            return Ok(false);
        };
        let mut progressed = false;
        let mut current = self.prepare_chunk(route, first, options).await?;
        let mut answered: Option<(PreparedChunk, Option<PushResult>)> = None;
        loop {
            let following = chunks.next();
            let (sent, (settled, next)) = tokio::join!(
                async {
                    if current.items.is_empty() {
                        None
                    } else {
                        Some(self.remote.push(route, &current.items).await)
                    }
                },
                async {
                    let settled = match answered.take() {
                        Some((chunk, sent)) => {
                            self.finish_chunk(route, chunk, sent, options, report).await
                        }
                        None => Ok(false),
                    };
                    let next = match (&settled, following) {
                        (Ok(_), Some(ops)) => Some(self.prepare_chunk(route, ops, options).await),
                        _ => None,
                    };
                    (settled, next)
                },
            );
            let failed_send = matches!(sent, Some(Err(_)));
            let stop = match (settled, next) {
                (Ok(made_progress), Some(Ok(prepared))) if !failed_send => {
                    progressed |= made_progress;
                    answered = Some((std::mem::replace(&mut current, prepared), sent));
                    continue;
                }
                (Ok(made_progress), None) if !failed_send => {
                    // The last chunk: settle it and stop.
                    progressed |= made_progress;
                    None
                }
                (Ok(made_progress), Some(Ok(prepared))) => {
                    // The current chunk failed: the next one never goes out.
                    progressed |= made_progress;
                    self.release(&prepared).await;
                    None
                }
                (Ok(made_progress), None) => {
                    progressed |= made_progress;
                    None
                }
                (Ok(made_progress), Some(Err(err))) => {
                    progressed |= made_progress;
                    Some(err)
                }
                (Err(err), _) => Some(err),
            };
            // Whatever happened around it, the chunk that was sent is settled from its answer
            // (a failed send puts its ops back for a retry) so that none stays in flight.
            let last = self
                .finish_chunk(route, current, sent, options, report)
                .await;
            return match (stop, last) {
                (Some(err), _) | (None, Err(err)) => Err(err),
                (None, Ok(made_progress)) => Ok(progressed | made_progress),
            };
        }
    }

    /// Puts a prepared chunk that was never sent back to pending, untouched.
    pub(crate) async fn release(self: &Arc<Self>, chunk: &PreparedChunk) {
        let seqs: Vec<i64> = chunk.ops.iter().map(|o| o.seq).collect();
        if seqs.is_empty() {
            return;
        }
        if let Err(err) = blocking(&self.store, move |s| s.release_inflight(&seqs)).await {
            tracing::warn!(error = %err, "could not release unsent ops; they go back to pending on the next start");
        }
    }

    /// Marks a chunk's ops in flight and builds what to send from the records as stored now.
    /// An op whose local record is gone fails at once.
    pub(crate) async fn prepare_chunk(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        ops: &[OutboxOp],
        options: &SyncOptions,
    ) -> Result<PreparedChunk> {
        let schema = route.schema;
        let seqs: Vec<i64> = ops.iter().map(|o| o.seq).collect();
        // The ops and their records as they are when marked, read in the marking transaction:
        // an edit saved after this goes into a new op behind, never into what is sent.
        let claimed = blocking(&self.store, move |s| s.claim_ops(schema, &seqs)).await?;
        let mut chunk = PreparedChunk {
            ops: Vec::with_capacity(claimed.len()),
            items: Vec::with_capacity(claimed.len()),
            rows: HashMap::new(),
            failed: 0,
        };
        let mut ops = Vec::with_capacity(claimed.len());
        for claim in claimed {
            if let Some(record) = claim.record {
                chunk.rows.insert(claim.op.record_id.clone(), record);
            }
            ops.push(claim.op);
        }
        let rows = &chunk.rows;
        for op in ops {
            let item = push_item(schema, &op, rows.get(&op.record_id), options.use_delta_sync);
            match item {
                Some(item) => {
                    chunk.items.push(item);
                    chunk.ops.push(op);
                }
                None => {
                    let seq = op.seq;
                    blocking(&self.store, move |s| {
                        s.fail_op(seq, "the local record of this op is missing")
                    })
                    .await?;
                    chunk.failed += 1;
                }
            }
        }
        Ok(chunk)
    }

    /// Settles a sent chunk from the remote's answer (`None`: nothing was sendable); returns
    /// whether any op left the queue or changed state for good.
    pub(crate) async fn finish_chunk(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        chunk: PreparedChunk,
        sent: Option<PushResult>,
        options: &SyncOptions,
        report: &mut SyncReport,
    ) -> Result<bool> {
        let schema = route.schema;
        let PreparedChunk {
            ops: sendable,
            rows,
            failed,
            ..
        } = chunk;
        report.failed += failed;
        let mut progressed = failed > 0;
        let Some(result) = sent else {
            return Ok(progressed);
        };
        // A remote must answer every item, in order; a short or long answer says nothing
        // reliable about any of them.
        let result = result.and_then(|(outcomes, traffic)| {
            if outcomes.len() == sendable.len() {
                Ok((outcomes, traffic))
            } else {
                Err(RemoteError::bad_response(format!(
                    "the remote answered {} outcomes for {} pushed changes",
                    outcomes.len(),
                    sendable.len()
                )))
            }
        });
        let (outcomes, traffic) = match result {
            Ok(ok) => ok,
            // The remote refused the whole request for good (a malformed or too large batch,
            // a missing endpoint): no retry can succeed, so the ops fail, kept and visible
            // for `retry_failed` once the cause is fixed. Which statuses those are is the
            // one table of `crate::disposition` (401/403 are retried).
            Err(RemoteError::Refused { status, message })
                if Disposition::of_status(status) == Disposition::Fail =>
            {
                let text = format!("HTTP {status}: {message}");
                for op in &sendable {
                    let seq = op.seq;
                    let text2 = text.clone();
                    blocking(&self.store, move |s| s.fail_op(seq, &text2)).await?;
                    report.failed += 1;
                    self.emit(SyncEvent::OpFailed {
                        model_type: schema.model_type,
                        id: op.record_id.clone(),
                        seq,
                        error: text.clone(),
                    });
                }
                self.status
                    .send_modify(|s| s.last_error = Some(text.clone()));
                return Err(Error::Remote(RemoteError::Refused { status, message }));
            }
            Err(err) => {
                // Nothing is known about any item: all of them go back to the queue.
                let retry_after = match &err {
                    RemoteError::Unavailable { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let message = crate::error::chain_text(&err);
                for op in &sendable {
                    self.retry_later(schema, op, &message, retry_after, options, report)
                        .await?;
                }
                return Err(Error::Remote(err));
            }
        };
        report.bytes_sent = report.bytes_sent.saturating_add(traffic.sent);
        report.bytes_received = report.bytes_received.saturating_add(traffic.received);
        // Creates the backend gave ids of its own: the row and the ops queued behind each are
        // re-keyed (one store transaction each) before the create is acknowledged, so the ops
        // behind go to the new id. Stopped between the two, the create is sent again, and
        // the backend's copy is found by its local id (`ServerIds`), not made twice.
        if route.backend.server_ids.is_some() {
            for (op, outcome) in sendable.iter().zip(&outcomes) {
                let PushOutcome::Applied {
                    record: Some(record),
                    ..
                } = outcome
                else {
                    continue;
                };
                if op.op != OpKind::Create || record.id == op.record_id {
                    continue;
                }
                let (from, to) = (op.record_id.clone(), record.id.clone());
                blocking(&self.store, move |s| s.rekey_record(schema, &from, &to)).await?;
                self.emit(SyncEvent::RecordRekeyed {
                    model_type: schema.model_type,
                    from: op.record_id.clone(),
                    id: record.id.clone(),
                });
            }
        }
        // Acknowledge the whole chunk in one store transaction first.
        let mut acks = Vec::new();
        let mut others = Vec::new();
        for (op, outcome) in sendable.iter().zip(outcomes) {
            match outcome {
                PushOutcome::Applied { version, record } => acks.push(Ack {
                    seq: op.seq,
                    version,
                    // Write the server's copy back only where it differs from ours.
                    data: record
                        .filter(|r| !r.deleted)
                        .map(|r| r.data)
                        .filter(|data| rows.get(&op.record_id).is_none_or(|row| row.data != *data)),
                }),
                other => others.push((op, other)),
            }
        }
        if !acks.is_empty() {
            let n = acks.len() as u64;
            blocking(&self.store, move |s| s.ack_ops(schema, &acks)).await?;
            report.pushed += n;
            progressed = true;
            self.progress(n, 0);
        }
        for (op, outcome) in others {
            let seq = op.seq;
            match outcome {
                PushOutcome::Applied { .. } => {}
                PushOutcome::Conflict { current } => {
                    // Back to pending so the resolution may rewrite or drop it.
                    blocking(&self.store, move |s| {
                        s.reschedule_op(seq, Utc::now(), "conflict")
                    })
                    .await?;
                    let id = op.record_id.clone();
                    let state = blocking(&self.store, move |s| s.record_state(schema, &id)).await?;
                    let id = op.record_id.clone();
                    let local = blocking(&self.store, move |s| s.get(schema, &id)).await?;
                    let conflict = PendingConflict {
                        remote: current,
                        local,
                        ops: state.ops,
                    };
                    self.settle(route, conflict, report).await?;
                    progressed = true;
                }
                PushOutcome::Rejected { status, message } => {
                    let text = if status > 0 {
                        format!("HTTP {status}: {message}")
                    } else {
                        message
                    };
                    let text2 = text.clone();
                    blocking(&self.store, move |s| s.fail_op(seq, &text2)).await?;
                    report.failed += 1;
                    progressed = true;
                    self.status
                        .send_modify(|s| s.last_error = Some(text.clone()));
                    self.emit(SyncEvent::OpFailed {
                        model_type: schema.model_type,
                        id: op.record_id.clone(),
                        seq,
                        error: text.clone(),
                    });
                }
                PushOutcome::Transient {
                    message,
                    retry_after,
                } => {
                    self.retry_later(schema, op, &message, retry_after, options, report)
                        .await?;
                }
            }
        }
        Ok(progressed)
    }
}

/// Splits ready ops (highest priority first, then by seq, as `ready_ops` returns them) into
/// requests: one group per model within each priority, the priorities in descending order, so
/// every op of a higher priority is sent before any op of a lower one, whatever its model,
/// while ops of one model and priority still share their requests. `model_of` names an op's
/// registered model (ops of others are left out).
pub(crate) fn priority_groups(
    ready: Vec<OutboxOp>,
    model_of: impl Fn(&OutboxOp) -> Option<&'static str>,
) -> Vec<(&'static str, Vec<OutboxOp>)> {
    let mut groups: Vec<(i32, &'static str, Vec<OutboxOp>)> = Vec::new();
    let mut level_start = 0;
    for op in ready {
        let Some(model_type) = model_of(&op) else {
            continue;
        };
        if groups.last().is_some_and(|(p, _, _)| *p != op.priority) {
            level_start = groups.len();
        }
        match groups[level_start..]
            .iter_mut()
            .find(|(p, m, _)| *p == op.priority && *m == model_type)
        {
            Some((_, _, ops)) => ops.push(op),
            None => groups.push((op.priority, model_type, vec![op])),
        }
    }
    // A store that returned its ops out of priority order still gets them sent in order; the
    // sort is stable, so the seq order inside each priority stays.
    groups.sort_by_key(|(priority, _, _)| std::cmp::Reverse(*priority));
    groups
        .into_iter()
        .map(|(_, model_type, ops)| (model_type, ops))
        .collect()
}

/// What goes on the wire for `op` (a pure decision): a delete carries no data; a create
/// carries the whole record; an update carries the changed fields (`Update`), or the whole
/// record (`Replace`) when deltas are off or a `skip_delta` field changed. `None` when the
/// op needs its record and the record is gone.
pub(crate) fn push_item(
    schema: &'static ModelSchema,
    op: &OutboxOp,
    row: Option<&StoredRecord>,
    use_delta_sync: bool,
) -> Option<PushItem> {
    let (kind, data) = match op.op {
        OpKind::Delete => (PushKind::Delete, None),
        OpKind::Create => (PushKind::Create, Some(row?.data.clone())),
        OpKind::Update => {
            let row = row?;
            let full = !use_delta_sync
                || op.changed_fields.iter().any(|f| {
                    schema
                        .field_by_wire_name(f)
                        .is_some_and(|spec| spec.skip_delta)
                });
            if full {
                (PushKind::Replace, Some(row.data.clone()))
            } else {
                let mut delta = Map::new();
                for field in &op.changed_fields {
                    if let Some(value) = row.data.get(field) {
                        delta.insert(field.clone(), value.clone());
                    }
                }
                (PushKind::Update, Some(delta))
            }
        }
    };
    Some(PushItem {
        seq: op.seq,
        kind,
        id: op.record_id.clone(),
        base_version: op.base_version,
        data,
        idempotency_key: op.idempotency_key.clone(),
        sent: op.sent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OpState, RecordMeta};
    use serde_json::{json, Value};
    use sync_schema::{FieldSpec, SqlType};

    const fn field(position: usize, name: &'static str, skip_delta: bool) -> FieldSpec {
        FieldSpec {
            position,
            name,
            wire_name: name,
            column: name,
            sql_type: SqlType::Text,
            nullable: false,
            id: position == 0,
            index: false,
            skip_delta,
            has_default: false,
        }
    }
    const FIELDS: &[FieldSpec] = &[
        field(0, "id", false),
        field(1, "title", false),
        field(2, "note", false),
        field(3, "blob", true),
    ];
    static SCHEMA: ModelSchema = ModelSchema {
        struct_name: "Item",
        model_type: "item",
        endpoint: "items",
        table: "items",
        id_field: 0,
        fields: FIELDS,
    };

    fn op(kind: OpKind, changed: &[&str]) -> OutboxOp {
        OutboxOp {
            seq: 7,
            model_type: "item".into(),
            record_id: "a".into(),
            user_id: None,
            op: kind,
            changed_fields: changed.iter().map(|f| (*f).to_owned()).collect(),
            base_version: 3,
            base_values: Map::new(),
            idempotency_key: "k".into(),
            priority: 0,
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
            state: OpState::Inflight,
            created_at: chrono::Utc::now(),
            sent: false,
        }
    }

    fn row() -> StoredRecord {
        let Value::Object(data) = json!({"id": "a", "title": "t", "note": "n", "blob": "b"}) else {
            unreachable!("an object literal")
        };
        StoredRecord {
            id: "a".into(),
            data,
            meta: RecordMeta {
                version: 3,
                created_at: chrono::Utc::now(),
                updated_at: chrono::Utc::now(),
                synced: false,
                deleted: false,
                user_id: None,
                sync_error: None,
                sync_attempts: 0,
            },
        }
    }

    #[test]
    fn what_each_op_sends() {
        let full = json!({"id": "a", "title": "t", "note": "n", "blob": "b"});
        let row = row();
        // (op, changed fields, delta on, kind sent, data sent)
        type Case<'a> = (OpKind, &'a [&'a str], bool, PushKind, Option<Value>);
        let table: Vec<Case<'_>> = vec![
            (OpKind::Delete, &[], true, PushKind::Delete, None),
            (
                OpKind::Create,
                &[],
                true,
                PushKind::Create,
                Some(full.clone()),
            ),
            (
                OpKind::Create,
                &[],
                false,
                PushKind::Create,
                Some(full.clone()),
            ),
            (
                OpKind::Update,
                &["title"],
                true,
                PushKind::Update,
                Some(json!({"title": "t"})),
            ),
            (
                OpKind::Update,
                &["title", "note"],
                true,
                PushKind::Update,
                Some(json!({"title": "t", "note": "n"})),
            ),
            (
                OpKind::Update,
                &["title"],
                false,
                PushKind::Replace,
                Some(full.clone()),
            ),
            (
                OpKind::Update,
                &["title", "blob"],
                true,
                PushKind::Replace,
                Some(full.clone()),
            ),
        ];
        for (kind, changed, delta, sent_kind, sent_data) in table {
            let item = push_item(&SCHEMA, &op(kind, changed), Some(&row), delta).unwrap();
            assert_eq!(item.kind, sent_kind, "{kind:?} {changed:?} delta {delta}");
            assert_eq!(
                item.data.map(Value::Object),
                sent_data,
                "{kind:?} {changed:?} delta {delta}"
            );
            assert_eq!(
                (
                    item.seq,
                    item.base_version,
                    item.id.as_str(),
                    item.idempotency_key.as_str()
                ),
                (7, 3, "a", "k")
            );
        }
        // Without its record, only a delete can be sent.
        assert!(push_item(&SCHEMA, &op(OpKind::Delete, &[]), None, true).is_some());
        assert!(push_item(&SCHEMA, &op(OpKind::Create, &[]), None, true).is_none());
        assert!(push_item(&SCHEMA, &op(OpKind::Update, &["title"]), None, true).is_none());
    }

    #[test]
    fn higher_priorities_go_first_across_models_and_a_model_shares_its_requests() {
        let ready = |list: &[(&'static str, i32, i64)]| -> Vec<OutboxOp> {
            list.iter()
                .map(|(model, priority, seq)| OutboxOp {
                    model_type: (*model).into(),
                    priority: *priority,
                    seq: *seq,
                    ..op(OpKind::Create, &[])
                })
                .collect()
        };
        let shape = |groups: Vec<(&'static str, Vec<OutboxOp>)>| -> Vec<(&'static str, Vec<i64>)> {
            groups
                .into_iter()
                .map(|(m, ops)| (m, ops.iter().map(|o| o.seq).collect()))
                .collect()
        };
        let known = |op: &OutboxOp| match op.model_type.as_str() {
            "a" => Some("a"),
            "b" => Some("b"),
            _ => None,
        };
        // As `ready_ops` returns them: priority descending, then seq.
        let ops = ready(&[
            ("a", 9, 4),
            ("b", 5, 2),
            ("a", 0, 1),
            ("b", 0, 3),
            ("zz", 0, 5),
            ("a", 0, 6),
        ]);
        assert_eq!(
            shape(priority_groups(ops, known)),
            vec![
                ("a", vec![4]),
                ("b", vec![2]),
                ("a", vec![1, 6]),
                ("b", vec![3])
            ]
        );
        // One priority: one group per model, as before priorities existed.
        let ops = ready(&[("b", 0, 1), ("a", 0, 2), ("b", 0, 3)]);
        assert_eq!(
            shape(priority_groups(ops, known)),
            vec![("b", vec![1, 3]), ("a", vec![2])]
        );
        // Out of order from a store: still sent by priority.
        let ops = ready(&[("a", 0, 1), ("b", 3, 2)]);
        assert_eq!(
            shape(priority_groups(ops, known)),
            vec![("b", vec![2]), ("a", vec![1])]
        );
    }
}
