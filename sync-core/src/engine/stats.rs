//! What the engine keeps about its runs for [`SyncMetadata`](crate::SyncMetadata): persisted in
//! the store's metadata (per user) after every run that was not skipped.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{blocking, Inner};
use crate::events::SyncReport;

/// The `_sync_metadata` key of [`SyncStats`].
pub(crate) const STATS_KEY: &str = "sync_stats";
/// The `_sync_metadata` key of the devices the remote listed last.
pub(crate) const DEVICES_KEY: &str = "remote_devices";
/// Prefix of the application's own metadata keys.
pub(crate) const CUSTOM_PREFIX: &str = "custom:";

/// Run statistics, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SyncStats {
    pub(crate) last_sync_time: Option<DateTime<Utc>>,
    pub(crate) last_successful_sync_time: Option<DateTime<Utc>>,
    pub(crate) last_error: Option<String>,
    /// Conflicts met, all runs together.
    pub(crate) conflict_count: u64,
    /// Ops put back for a retry by the last run.
    pub(crate) retry_count: u64,
    pub(crate) last_sync_duration_ms: Option<u64>,
    /// When each model's pull last completed.
    pub(crate) pulled_at: BTreeMap<String, DateTime<Utc>>,
    /// Runs recorded.
    pub(crate) runs: u64,
}

impl Inner {
    pub(crate) async fn load_stats(&self) -> crate::error::Result<SyncStats> {
        let user = self.user_id.clone();
        let text = blocking(&self.store, move |s| s.metadata(user.as_deref(), STATS_KEY)).await?;
        Ok(text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }

    /// Records one run that was not skipped. A failure to store is logged: statistics never
    /// fail a sync.
    pub(crate) async fn record_run(
        &self,
        report: &SyncReport,
        error: Option<String>,
        pulled: &[&'static str],
    ) {
        let mut stats = match self.load_stats().await {
            Ok(stats) => stats,
            Err(err) => {
                tracing::warn!(error = %err, "reading the sync statistics failed");
                return;
            }
        };
        let now = Utc::now();
        stats.last_sync_time = Some(now);
        if error.is_none() && report.failed == 0 && report.retried == 0 {
            stats.last_successful_sync_time = Some(now);
        }
        if error.is_none() {
            for model in pulled {
                stats.pulled_at.insert((*model).to_owned(), now);
            }
        }
        stats.last_error = error;
        stats.conflict_count = stats.conflict_count.saturating_add(report.conflicts);
        stats.retry_count = report.retried;
        stats.last_sync_duration_ms = u64::try_from(report.duration.as_millis()).ok();
        stats.runs = stats.runs.saturating_add(1);
        let Ok(text) = serde_json::to_string(&stats) else {
            return;
        };
        let user = self.user_id.clone();
        if let Err(err) = blocking(&self.store, move |s| {
            s.set_metadata(user.as_deref(), STATS_KEY, &text)
        })
        .await
        {
            tracing::warn!(error = %err, "storing the sync statistics failed");
        }
    }
}
