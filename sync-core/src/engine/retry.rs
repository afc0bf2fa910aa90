//! What a transient push failure does to an op: backoff, or failed after `max_attempts`.

use std::time::Duration;

use chrono::Utc;
use sync_schema::ModelSchema;

use super::{blocking, Inner};
use crate::error::Result;
use crate::events::{SyncEvent, SyncReport};
use crate::options::SyncOptions;
use crate::store::OutboxOp;

impl Inner {
    pub(crate) async fn retry_later(
        &self,
        schema: &'static ModelSchema,
        op: &OutboxOp,
        message: &str,
        retry_after: Option<Duration>,
        options: &SyncOptions,
        report: &mut SyncReport,
    ) -> Result<()> {
        let attempts = u32::try_from(op.attempts.max(0))
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let seq = op.seq;
        let message = message.to_owned();
        if options
            .retry
            .max_attempts
            .is_some_and(|max| attempts >= max)
        {
            let text = format!("gave up after {attempts} attempts: {message}");
            let text2 = text.clone();
            blocking(&self.store, move |s| s.fail_op(seq, &text2)).await?;
            report.failed += 1;
            self.emit(SyncEvent::OpFailed {
                model_type: schema.model_type,
                id: op.record_id.clone(),
                seq,
                error: text,
            });
            return Ok(());
        }
        // The delay is at most the policy's `max` (a server's Retry-After included); the time
        // is computed without overflow whatever that is.
        let delay = options.retry.delay(attempts, retry_after);
        let now = Utc::now();
        let at = chrono::Duration::from_std(delay)
            .ok()
            .and_then(|delay| now.checked_add_signed(delay))
            .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
        blocking(&self.store, move |s| s.reschedule_op(seq, at, &message)).await?;
        report.retried += 1;
        Ok(())
    }
}
