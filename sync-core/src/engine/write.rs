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
        let data2 = data.clone();
        let id2 = id.clone();
        let outcome = blocking(&self.store, move |s| {
            s.save(&LocalWrite {
                schema,
                id: &id2,
                data: &data2,
                user_id: user.as_deref(),
                priority,
                enqueue,
                version,
            })
        })
        .await?;
        if !outcome.changed_fields.is_empty() {
            self.emit(SyncEvent::written(
                outcome.created,
                schema.model_type,
                &id,
                Some(data),
            ));
        }
        self.refresh_counts().await
    }
}
