//! The write path: a local save, its row and op in one store transaction.

use super::{blocking, Inner};
use crate::error::Result;
use crate::events::SyncEvent;
use crate::remote::ModelRoute;
use crate::store::{JsonObject, LocalWrite};

impl Inner {
    pub(crate) async fn save_local(
        &self,
        route: &ModelRoute,
        id: String,
        data: JsonObject,
        enqueue: bool,
        version: Option<i64>,
        priority: i32,
    ) -> Result<()> {
        let schema = route.schema;
        let user = self.user_id.clone();
        // One hop to the blocking pool for the write and the counts read after it, under the
        // counts lock so that no read taken earlier is published after this one. The data
        // goes in and comes back out for the event instead of being copied.
        let _counts = self.counts_lock.lock().await;
        let (outcome, counts, data, id) = blocking(&self.store, move |s| {
            let outcome = s.save(&LocalWrite {
                schema,
                id: &id,
                data: &data,
                user_id: user.as_deref(),
                priority,
                enqueue,
                version,
            })?;
            let counts = s.counts()?;
            Ok((outcome, counts, data, id))
        })
        .await?;
        self.publish_counts(counts);
        if !outcome.changed_fields.is_empty() {
            self.emit(SyncEvent::written(
                outcome.created,
                schema.model_type,
                &id,
                Some(data),
            ));
        }
        Ok(())
    }
}
