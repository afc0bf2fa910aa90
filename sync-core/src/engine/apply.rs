//! Applying remote records (pull pages, realtime events, reads) to the store; records
//! meeting a local op become conflicts for `conflict.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use super::{blocking, normalize_records, Inner};
use crate::error::Result;
use crate::events::{SyncEvent, SyncReport};
use crate::remote::ModelRoute;
use crate::store::{JsonObject, OpState, OutboxOp, PendingConflict, RemoteRecord};

/// Merges a server echo over the local data (server-side fields like timestamps).
pub(crate) fn merge_remote(local: &JsonObject, remote: JsonObject) -> JsonObject {
    let mut out = local.clone();
    for (k, v) in remote {
        out.insert(k, v);
    }
    out
}

impl Inner {
    /// Applies records that did not come from a sync run (realtime events,
    /// remote reads). It waits for a running sync: a conflict settled while a
    /// push is between choosing an op and marking it in flight could rewrite
    /// the op under it.
    pub(crate) async fn apply_remote_outside_run(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        records: Vec<RemoteRecord>,
        report: &mut SyncReport,
    ) -> Result<()> {
        let _guard = self.run_lock.lock().await;
        self.apply_remote_records(route, records, None, report)
            .await
    }

    /// Applies remote records (with an optional cursor) and settles conflicts.
    pub(crate) async fn apply_remote_records(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        records: Vec<RemoteRecord>,
        cursor: Option<String>,
        report: &mut SyncReport,
    ) -> Result<()> {
        let mut records = records;
        normalize_records(route, &mut records)?;
        if self
            .apply_normalized(route, records, cursor, report)
            .await?
        {
            // Outside a pull nothing moved the cursor past these records: the next pull
            // brings them again.
            tracing::debug!("remote records left for the next pull behind unanswered ops");
        }
        Ok(())
    }

    /// [`apply_remote_records`](Self::apply_remote_records) of records already normalised.
    /// Returns `true` when a record had to be left unapplied behind a local op that may have
    /// reached the remote and whose answer could not be had: the caller must make sure the
    /// record is pulled again (a pull resets the model's cursor).
    ///
    /// A remote record newer than the row, met while the record's oldest op may already have
    /// reached the remote, may be that very op's write, whose answer was lost: settling it
    /// as a conflict would take our own write for somebody else's and could drop the edits
    /// queued behind it. So that op is sent again first (its idempotency key makes the
    /// replay return the first result) and the record is applied again after its answer.
    pub(crate) async fn apply_normalized(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        records: Vec<RemoteRecord>,
        cursor: Option<String>,
        report: &mut SyncReport,
    ) -> Result<bool> {
        let probes = self.apply_round(route, records, cursor, report).await?;
        if probes.is_empty() {
            return Ok(false);
        }
        let heads: Vec<OutboxOp> = probes
            .iter()
            .filter_map(|c| c.ops.first().cloned())
            .collect();
        let options = self.options();
        let chunk = options.batch_size.min(self.remote.max_batch()).max(1);
        if let Err(err) = self
            .push_group(route, &heads, chunk, &options, report)
            .await
        {
            tracing::debug!(error = %crate::error::chain_text(&err), "resending ops before applying their records failed; the records are pulled again later");
            return Ok(true);
        }
        let again = probes.into_iter().map(|c| c.remote).collect();
        let left = self.apply_round(route, again, None, report).await?;
        Ok(!left.is_empty())
    }

    /// One application of remote records. Conflicts whose oldest op may have reached the
    /// remote are returned unsettled; the others are settled.
    pub(crate) async fn apply_round(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        records: Vec<RemoteRecord>,
        cursor: Option<String>,
        report: &mut SyncReport,
    ) -> Result<Vec<PendingConflict>> {
        let schema = route.schema;
        let user = self.user_id.clone();
        let records = Arc::new(records);
        let records2 = Arc::clone(&records);
        let applied = blocking(&self.store, move |s| {
            s.apply_remote(schema, user.as_deref(), &records2, cursor.as_deref())
        })
        .await?;
        // Nobody listening (a bulk pull without UI): skip building the events.
        let listening = self.events.receiver_count() > 0;
        let by_id: HashMap<&str, &RemoteRecord> = if listening {
            records.iter().map(|r| (r.id.as_str(), r)).collect()
        } else {
            HashMap::new()
        };
        for id in applied.created.iter().filter(|_| listening) {
            let data = by_id.get(id.as_str()).map(|r| r.data.clone());
            self.emit(SyncEvent::written(true, schema.model_type, id, data));
        }
        for id in applied.updated.iter().filter(|_| listening) {
            let data = by_id.get(id.as_str()).map(|r| r.data.clone());
            self.emit(SyncEvent::written(false, schema.model_type, id, data));
        }
        for id in applied.deleted.iter().filter(|_| listening) {
            self.emit(SyncEvent::ModelDeleted {
                model_type: schema.model_type,
                id: id.clone(),
            });
        }
        report.pulled +=
            (applied.created.len() + applied.updated.len() + applied.deleted.len()) as u64;
        let mut deferred = false;
        let mut probes = Vec::new();
        for conflict in applied.conflicts {
            if conflict.ops.iter().any(|op| op.state == OpState::Inflight) {
                // The push of this record is on its way; its answer (ack or 409)
                // settles it. An in-flight op is never rewritten underneath it, and
                // a catch-up pull afterwards brings anything newer.
                deferred = true;
                continue;
            }
            let possibly_ours = conflict
                .ops
                .first()
                .is_some_and(|op| op.sent && op.state == OpState::Pending);
            if possibly_ours {
                probes.push(conflict);
                continue;
            }
            self.settle(route, conflict, report).await?;
        }
        if deferred {
            self.spawn_catch_up(vec![route.endpoint.clone()]);
        }
        Ok(probes)
    }
}
