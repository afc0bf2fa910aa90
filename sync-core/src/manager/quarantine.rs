//! Quarantined remote records: what a pull kept aside because it did not fit its model, and
//! trying them again (after a model change they may fit).

use serde_json::Value;

use super::SyncManager;
use crate::engine::blocking;
use crate::error::Result;
use crate::events::SyncReport;
use crate::model::SyncModel;
use crate::remote::parse_remote_record;
use crate::store::QuarantinedRecord;

impl SyncManager {
    /// The records of `T` a pull kept aside because they did not fit the model (or could
    /// not be read), oldest first. The pull moved past them; see
    /// [`retry_quarantined`](Self::retry_quarantined).
    pub async fn quarantined<T: SyncModel>(&self) -> Result<Vec<QuarantinedRecord>> {
        self.check_open()?;
        let schema = self.route::<T>()?.schema;
        blocking(&self.inner.store, move |s| s.quarantined(schema)).await
    }

    /// Tries the quarantined records of `T` again with the model as it is now: those that
    /// fit are applied like pulled records (stale versions skipped, conflicts resolved by
    /// policy) and leave the quarantine; the others stay, with the new reason. Returns how
    /// many were applied.
    pub async fn retry_quarantined<T: SyncModel>(&self) -> Result<u64> {
        self.check_open()?;
        let route = self.route::<T>()?;
        let schema = route.schema;
        let entries = blocking(&self.inner.store, move |s| s.quarantined(schema)).await?;
        let mut fits = Vec::new();
        let mut keys = Vec::new();
        let mut still = Vec::new();
        for mut entry in entries {
            let Value::Object(object) = entry.raw.clone() else {
                still.push(entry);
                continue;
            };
            let mut record = match parse_remote_record(schema, object) {
                Ok(record) => record,
                Err(err) => {
                    entry.error = err.to_string();
                    still.push(entry);
                    continue;
                }
            };
            if !record.deleted {
                match (route.normalize)(std::mem::take(&mut record.data)) {
                    Ok(data) => record.data = data,
                    Err((_, reason)) => {
                        entry.error = format!("does not match the model: {reason}");
                        still.push(entry);
                        continue;
                    }
                }
            }
            keys.push(entry.key);
            fits.push(record);
        }
        let applied = fits.len() as u64;
        if !fits.is_empty() {
            let mut report = SyncReport::default();
            self.inner
                .apply_remote_outside_run(&route, fits, &mut report)
                .await?;
            blocking(&self.inner.store, move |s| {
                s.release_quarantined(schema, &keys)
            })
            .await?;
        }
        if !still.is_empty() {
            blocking(&self.inner.store, move |s| s.quarantine(schema, &still)).await?;
        }
        self.inner.refresh_counts().await?;
        Ok(applied)
    }
}
