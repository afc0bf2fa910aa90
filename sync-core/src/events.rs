//! What the engine reports: status, events and per-run reports.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Kinds of [`SyncEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncEventType {
    /// A sync run started.
    SyncStarted,
    /// A sync run finished (its report is in `data`).
    SyncCompleted,
    /// A sync run or an op failed (`data.error`).
    SyncFailed,
    /// A record appeared locally (local save, pull or realtime).
    ModelAdded,
    /// A record changed locally.
    ModelUpdated,
    /// A record was deleted locally.
    ModelDeleted,
    /// A local change met a newer remote record.
    ConflictDetected,
    /// A conflict was settled (`data.resolution`).
    ConflictResolved,
    /// The remote became reachable / the realtime connection opened.
    ConnectionEstablished,
    /// The remote became unreachable / the realtime connection closed.
    ConnectionClosed,
    /// The realtime connection is being re-established.
    Reconnecting,
    /// A remote copy of a record has an `#[sync(encrypted)]` value that does not
    /// decrypt (`data.error`); the local copy was left as it was.
    DecryptionFailed,
}

/// Something that happened in the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncEvent {
    /// What happened.
    pub kind: SyncEventType,
    /// Model type, for model and conflict events.
    pub model_type: Option<&'static str>,
    /// Record id, for model and conflict events.
    pub id: Option<String>,
    /// Details: the record for model events, the report for `SyncCompleted`, the error for failures.
    pub data: Option<Value>,
}

impl SyncEvent {
    pub(crate) fn new(kind: SyncEventType) -> Self {
        SyncEvent {
            kind,
            model_type: None,
            id: None,
            data: None,
        }
    }

    pub(crate) fn model(kind: SyncEventType, model_type: &'static str, id: &str) -> Self {
        SyncEvent {
            kind,
            model_type: Some(model_type),
            id: Some(id.to_owned()),
            data: None,
        }
    }

    pub(crate) fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// Progress of the running sync.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SyncProgress {
    /// Items done in this run (ops pushed + records pulled).
    pub done: u64,
    /// Items known to be due in this run (grows as pull pages arrive).
    pub total: u64,
}

/// What an application shows about sync.
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// End of the last successful run.
    pub last_sync_time: Option<DateTime<Utc>>,
    /// Error of the last failed run or op.
    pub last_error: Option<String>,
    /// Progress of the current run.
    pub progress: Option<SyncProgress>,
}

/// What one sync run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncReport {
    /// Ops the remote accepted.
    pub pushed: u64,
    /// Remote records applied locally.
    pub pulled: u64,
    /// Conflicts met (and resolved).
    pub conflicts: u64,
    /// Ops that failed permanently in this run.
    pub failed: u64,
    /// Ops that failed transiently and are scheduled again.
    pub retried: u64,
    /// Request bytes.
    pub bytes_sent: u64,
    /// Response bytes.
    pub bytes_received: u64,
    /// Wall time of the run.
    pub duration: Duration,
    /// The run was skipped because the remote is offline or sync is paused.
    pub skipped: bool,
}

impl SyncReport {
    pub(crate) fn to_json(&self) -> Value {
        serde_json::json!({
            "pushed": self.pushed,
            "pulled": self.pulled,
            "conflicts": self.conflicts,
            "failed": self.failed,
            "retried": self.retried,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "duration_ms": u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            "skipped": self.skipped,
        })
    }
}
