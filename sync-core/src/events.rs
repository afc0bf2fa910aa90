//! What the engine reports: status, events and per-run reports.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::{JsonObject, Resolution};

/// Kinds of [`SyncEvent`]: what [`SyncEvent::kind`] returns, and what server event names map
/// to ([`SyncEventMapper`](crate::SyncEventMapper)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncEventType {
    /// A sync run started.
    SyncStarted,
    /// A sync run finished.
    SyncCompleted,
    /// A sync run or an op failed.
    SyncFailed,
    /// A record appeared locally (local save, pull or realtime).
    ModelAdded,
    /// A record changed locally.
    ModelUpdated,
    /// A record was deleted locally.
    ModelDeleted,
    /// A local change met a newer remote record.
    ConflictDetected,
    /// A conflict was settled.
    ConflictResolved,
    /// The remote became reachable / the realtime connection opened.
    ConnectionEstablished,
    /// The remote became unreachable / the realtime connection closed.
    ConnectionClosed,
    /// The realtime connection is being re-established.
    Reconnecting,
    /// Realtime events came faster than they were applied; the backlog was dropped and a
    /// catch-up pull fetches what it carried.
    RealtimeOverflow,
    /// A pulled record that does not fit its model was kept aside.
    RecordQuarantined,
    /// A remote copy of a record has an `#[sync(encrypted)]` value that does not decrypt; the
    /// local copy was left as it was.
    DecryptionFailed,
    /// The remote assigned its own id to a record created locally; the record and its queued
    /// changes now go by that id.
    RecordRekeyed,
}

/// Something that happened in the engine, with what belongs to it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SyncEvent {
    /// A sync run started.
    SyncStarted,
    /// A sync run finished.
    SyncCompleted {
        /// What it did.
        report: SyncReport,
    },
    /// A sync run failed (what it did until then is in `report`).
    SyncFailed {
        /// Why.
        error: String,
        /// What the run did before it failed.
        report: SyncReport,
    },
    /// An op failed for good (kept, see `failed_ops`).
    OpFailed {
        /// The model.
        model_type: &'static str,
        /// The record.
        id: String,
        /// The op's sequence number.
        seq: i64,
        /// Why.
        error: String,
    },
    /// A record appeared locally (local save, pull or realtime).
    ModelAdded {
        /// The model.
        model_type: &'static str,
        /// The record.
        id: String,
        /// The record as written (absent when the source did not carry it).
        data: Option<JsonObject>,
    },
    /// A record changed locally.
    ModelUpdated {
        /// The model.
        model_type: &'static str,
        /// The record.
        id: String,
        /// The record as written (absent when the source did not carry it).
        data: Option<JsonObject>,
    },
    /// A record was deleted locally.
    ModelDeleted {
        /// The model.
        model_type: &'static str,
        /// The record.
        id: String,
    },
    /// A local change met a newer remote record.
    ConflictDetected {
        /// The model.
        model_type: &'static str,
        /// The record.
        id: String,
        /// The local record, if there is one.
        local: Option<JsonObject>,
        /// The remote record.
        remote: JsonObject,
        /// The remote record's version.
        remote_version: i64,
        /// The remote record is a tombstone.
        remote_deleted: bool,
    },
    /// A conflict was settled.
    ConflictResolved {
        /// The model.
        model_type: &'static str,
        /// The record.
        id: String,
        /// How.
        resolution: Resolution,
    },
    /// The remote became reachable / the realtime connection opened.
    ConnectionEstablished,
    /// The remote became unreachable / the realtime connection closed.
    ConnectionClosed,
    /// The realtime connection is being re-established.
    Reconnecting {
        /// Reconnect attempt, 1 for the first after a loss.
        attempt: u32,
    },
    /// Realtime events came faster than they were applied
    /// (`WebSocketConfig::max_queued_events`); the backlog was dropped and a catch-up pull
    /// fetches what it carried.
    RealtimeOverflow {
        /// Events dropped.
        dropped: u64,
    },
    /// A pulled record that does not fit its model (or could not be read) was kept aside;
    /// the pull went on past it. See `SyncManager::quarantined`.
    RecordQuarantined {
        /// The model.
        model_type: &'static str,
        /// The record id, or a hash of the record when it has no usable id.
        key: String,
        /// Why it does not fit.
        error: String,
    },
    /// An event the server sent that is not a change of a record, mapped to `kind` by the
    /// [`SyncEventMapper`](crate::SyncEventMapper) (by default `sync_started`,
    /// `sync_completed`, `sync_failed`, `conflict_detected`, `conflict_resolved`). It reports
    /// what the server says; nothing local happened ([`kind`](SyncEvent::kind) is `kind`, so
    /// a listener that wants only its own runs matches the variants instead).
    ServerEvent {
        /// What the mapper made of the name.
        kind: SyncEventType,
        /// The name as the server sent it.
        name: String,
        /// The model, if the event names the collection of a registered one.
        model_type: Option<&'static str>,
        /// The record id, if the event carries one.
        id: Option<String>,
        /// The whole message.
        message: JsonObject,
    },
    /// A remote copy of a record has an `#[sync(encrypted)]` value that does not decrypt
    /// (wrong or missing key, tampered); the local copy was left as it was and the remote copy
    /// is kept for `SyncManager::retry_decryption`.
    DecryptionFailed {
        /// The model.
        model_type: &'static str,
        /// The record.
        id: String,
        /// The remote copy's version.
        version: i64,
        /// Why.
        error: String,
    },
    /// The remote assigned its own id to a record created locally
    /// ([`RestBackend::server_ids`](crate::RestBackend::server_ids)): the local row and every
    /// queued change of it were re-keyed from `from` to `id` in one transaction, so reads,
    /// updates and deletes use `id` from now on.
    RecordRekeyed {
        /// The model.
        model_type: &'static str,
        /// The local id it had.
        from: String,
        /// The remote's id, which it has now.
        id: String,
    },
}

impl SyncEvent {
    /// Its kind (several events share one: `OpFailed` is a `SyncFailed`).
    pub fn kind(&self) -> SyncEventType {
        match self {
            SyncEvent::SyncStarted => SyncEventType::SyncStarted,
            SyncEvent::SyncCompleted { .. } => SyncEventType::SyncCompleted,
            SyncEvent::SyncFailed { .. } | SyncEvent::OpFailed { .. } => SyncEventType::SyncFailed,
            SyncEvent::ModelAdded { .. } => SyncEventType::ModelAdded,
            SyncEvent::ModelUpdated { .. } => SyncEventType::ModelUpdated,
            SyncEvent::ModelDeleted { .. } => SyncEventType::ModelDeleted,
            SyncEvent::ConflictDetected { .. } => SyncEventType::ConflictDetected,
            SyncEvent::ConflictResolved { .. } => SyncEventType::ConflictResolved,
            SyncEvent::ConnectionEstablished => SyncEventType::ConnectionEstablished,
            SyncEvent::ConnectionClosed => SyncEventType::ConnectionClosed,
            SyncEvent::Reconnecting { .. } => SyncEventType::Reconnecting,
            SyncEvent::RealtimeOverflow { .. } => SyncEventType::RealtimeOverflow,
            SyncEvent::RecordQuarantined { .. } => SyncEventType::RecordQuarantined,
            SyncEvent::DecryptionFailed { .. } => SyncEventType::DecryptionFailed,
            SyncEvent::RecordRekeyed { .. } => SyncEventType::RecordRekeyed,
            SyncEvent::ServerEvent { kind, .. } => *kind,
        }
    }

    /// The model, for model, conflict and op events (and server events that name one).
    pub fn model_type(&self) -> Option<&'static str> {
        match self {
            SyncEvent::OpFailed { model_type, .. }
            | SyncEvent::RecordQuarantined { model_type, .. }
            | SyncEvent::DecryptionFailed { model_type, .. }
            | SyncEvent::RecordRekeyed { model_type, .. }
            | SyncEvent::ModelAdded { model_type, .. }
            | SyncEvent::ModelUpdated { model_type, .. }
            | SyncEvent::ModelDeleted { model_type, .. }
            | SyncEvent::ConflictDetected { model_type, .. }
            | SyncEvent::ConflictResolved { model_type, .. } => Some(model_type),
            SyncEvent::ServerEvent { model_type, .. } => *model_type,
            _ => None,
        }
    }

    /// The record id, for model, conflict and op events (and server events that carry one).
    pub fn id(&self) -> Option<&str> {
        match self {
            SyncEvent::OpFailed { id, .. }
            | SyncEvent::RecordQuarantined { key: id, .. }
            | SyncEvent::DecryptionFailed { id, .. }
            | SyncEvent::RecordRekeyed { id, .. }
            | SyncEvent::ModelAdded { id, .. }
            | SyncEvent::ModelUpdated { id, .. }
            | SyncEvent::ModelDeleted { id, .. }
            | SyncEvent::ConflictDetected { id, .. }
            | SyncEvent::ConflictResolved { id, .. } => Some(id),
            SyncEvent::ServerEvent { id, .. } => id.as_deref(),
            _ => None,
        }
    }

    /// The record carried by `ModelAdded` / `ModelUpdated`, if any.
    pub fn data(&self) -> Option<&JsonObject> {
        match self {
            SyncEvent::ModelAdded { data, .. } | SyncEvent::ModelUpdated { data, .. } => {
                data.as_ref()
            }
            _ => None,
        }
    }

    /// `ModelAdded` or `ModelUpdated`, by whether the record was created.
    pub(crate) fn written(
        created: bool,
        model_type: &'static str,
        id: &str,
        data: Option<JsonObject>,
    ) -> Self {
        let id = id.to_owned();
        if created {
            SyncEvent::ModelAdded {
                model_type,
                id,
                data,
            }
        } else {
            SyncEvent::ModelUpdated {
                model_type,
                id,
                data,
            }
        }
    }
}

/// Progress of the running sync.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct SyncProgress {
    /// Items done in this run (ops pushed + records pulled).
    pub done: u64,
    /// Items known to be due in this run (grows as pull pages arrive).
    pub total: u64,
}

impl SyncProgress {
    /// `done / total` in `0.0..=1.0`; 0 while nothing is known to be due.
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        // u64 -> f64 loses precision only past 2^53 items, far beyond any run.
        #[allow(clippy::cast_precision_loss)]
        let fraction = self.done as f64 / self.total as f64;
        fraction.clamp(0.0, 1.0)
    }
}

/// Where sync stands, as an application shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SyncState {
    /// No run has ended since the manager started (or since [`resume`]).
    ///
    /// [`resume`]: crate::SyncManager::resume
    #[default]
    Idle,
    /// A run is in progress; see [`SyncStatus::progress`].
    Syncing,
    /// The last run ended with every op it sent accepted and everything pulled.
    Completed,
    /// The last run stopped on an error, or ops in it failed or were put back for a retry
    /// (the remote was unreachable, say); see [`SyncStatus::last_error`] and
    /// [`SyncStatus::failed_changes`].
    Failed,
    /// Sync is paused ([`pause`], or the user is signed out): runs are skipped.
    ///
    /// [`pause`]: crate::SyncManager::pause
    Paused,
    /// The remote refused the credentials and no fresh ones could be had (the token provider
    /// failed or gave a token the remote refused too): runs stop sending until new credentials
    /// arrive; the queue is kept.
    NeedsAuth,
}

/// What an application shows about sync.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct SyncStatus {
    /// The remote is reachable.
    pub connected: bool,
    /// A sync run is in progress.
    pub syncing: bool,
    /// Automatic sync is paused.
    pub paused: bool,
    /// Local changes not yet accepted by the remote.
    pub pending_changes: u64,
    /// Local changes the remote refused; see `failed_ops`.
    pub failed_changes: u64,
    /// Remote records kept aside because they do not fit their model; see
    /// `SyncManager::quarantined` and `retry_quarantined`.
    pub quarantined: u64,
    /// End of the last successful run.
    pub last_sync_time: Option<DateTime<Utc>>,
    /// Error of the last failed run or op.
    pub last_error: Option<String>,
    /// Progress of the current run.
    pub progress: Option<SyncProgress>,
    /// Where sync stands (idle, syncing, completed, failed, paused, needs auth).
    pub state: SyncState,
}

impl SyncStatus {
    /// Progress of the current run in `0.0..=1.0`: 1 once a run completed, 0 before any.
    pub fn progress_fraction(&self) -> f64 {
        match (self.state, self.progress) {
            (SyncState::Completed, _) => 1.0,
            (_, Some(progress)) => progress.fraction(),
            _ => 0.0,
        }
    }
}

/// What one sync run did.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct SyncReport {
    /// Ops the remote accepted.
    pub pushed: u64,
    /// Remote records applied locally.
    pub pulled: u64,
    /// Conflicts met (and resolved).
    pub conflicts: u64,
    /// Ops that failed permanently in this run (refused by the remote, or given up after
    /// `RetryPolicy::max_attempts`); they are kept, see `SyncManager::failed_ops`.
    pub failed: u64,
    /// Ops that failed transiently and are scheduled again.
    pub retried: u64,
    /// Request bytes.
    pub bytes_sent: u64,
    /// Response bytes.
    pub bytes_received: u64,
    /// Wall time of the run.
    pub duration: Duration,
    /// The run was skipped because the remote is offline or sync is paused: nothing was sent
    /// or pulled, and the call still returned `Ok`.
    pub skipped: bool,
}

impl SyncReport {
    /// The run happened and every op it sent was accepted: not [`skipped`](Self::skipped)
    /// and no op [`failed`](Self::failed). Ops put back for a retry
    /// ([`retried`](Self::retried)) do not make a run fail: they go out again by the retry
    /// policy. A run that stopped on an error returns `Err` instead of a report.
    pub fn is_success(&self) -> bool {
        !self.skipped && self.failed == 0
    }

    /// Records moved either way: [`pushed`](Self::pushed) plus [`pulled`](Self::pulled).
    pub fn synced(&self) -> u64 {
        self.pushed.saturating_add(self.pulled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_names_its_kind_model_and_record() {
        let record = || Some(JsonObject::new());
        let table: Vec<(SyncEvent, SyncEventType, Option<&str>)> = vec![
            (SyncEvent::SyncStarted, SyncEventType::SyncStarted, None),
            (
                SyncEvent::SyncCompleted {
                    report: SyncReport::default(),
                },
                SyncEventType::SyncCompleted,
                None,
            ),
            (
                SyncEvent::SyncFailed {
                    error: "e".into(),
                    report: SyncReport::default(),
                },
                SyncEventType::SyncFailed,
                None,
            ),
            (
                SyncEvent::OpFailed {
                    model_type: "todo",
                    id: "a".into(),
                    seq: 1,
                    error: "e".into(),
                },
                SyncEventType::SyncFailed,
                Some("a"),
            ),
            (
                SyncEvent::written(true, "todo", "a", record()),
                SyncEventType::ModelAdded,
                Some("a"),
            ),
            (
                SyncEvent::written(false, "todo", "a", record()),
                SyncEventType::ModelUpdated,
                Some("a"),
            ),
            (
                SyncEvent::ModelDeleted {
                    model_type: "todo",
                    id: "a".into(),
                },
                SyncEventType::ModelDeleted,
                Some("a"),
            ),
            (
                SyncEvent::ConflictDetected {
                    model_type: "todo",
                    id: "a".into(),
                    local: None,
                    remote: JsonObject::new(),
                    remote_version: 2,
                    remote_deleted: false,
                },
                SyncEventType::ConflictDetected,
                Some("a"),
            ),
            (
                SyncEvent::ConflictResolved {
                    model_type: "todo",
                    id: "a".into(),
                    resolution: Resolution::KeepLocal,
                },
                SyncEventType::ConflictResolved,
                Some("a"),
            ),
            (
                SyncEvent::ConnectionEstablished,
                SyncEventType::ConnectionEstablished,
                None,
            ),
            (
                SyncEvent::ConnectionClosed,
                SyncEventType::ConnectionClosed,
                None,
            ),
            (
                SyncEvent::Reconnecting { attempt: 3 },
                SyncEventType::Reconnecting,
                None,
            ),
            (
                SyncEvent::RecordQuarantined {
                    model_type: "todo",
                    key: "a".into(),
                    error: "e".into(),
                },
                SyncEventType::RecordQuarantined,
                Some("a"),
            ),
            (
                SyncEvent::DecryptionFailed {
                    model_type: "todo",
                    id: "a".into(),
                    version: 3,
                    error: "e".into(),
                },
                SyncEventType::DecryptionFailed,
                Some("a"),
            ),
            (
                SyncEvent::RecordRekeyed {
                    model_type: "todo",
                    from: "local-1".into(),
                    id: "a".into(),
                },
                SyncEventType::RecordRekeyed,
                Some("a"),
            ),
            (
                SyncEvent::RealtimeOverflow { dropped: 9 },
                SyncEventType::RealtimeOverflow,
                None,
            ),
            (
                SyncEvent::ServerEvent {
                    kind: SyncEventType::ConflictDetected,
                    name: "conflict_detected".into(),
                    model_type: Some("todo"),
                    id: Some("a".into()),
                    message: JsonObject::new(),
                },
                SyncEventType::ConflictDetected,
                Some("a"),
            ),
        ];
        for (event, kind, id) in table {
            assert_eq!(event.kind(), kind, "{event:?}");
            assert_eq!(event.id(), id, "{event:?}");
            assert_eq!(
                event.model_type(),
                id.map(|_| "todo"),
                "{event:?}: model and id go together"
            );
            let carries_record = matches!(
                event,
                SyncEvent::ModelAdded { .. } | SyncEvent::ModelUpdated { .. }
            );
            assert_eq!(event.data().is_some(), carries_record, "{event:?}");
        }
    }
}
