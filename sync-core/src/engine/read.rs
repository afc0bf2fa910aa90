//! Remote reads that refresh local rows through the conflict-aware apply path.

use std::sync::Arc;

use super::Inner;
use crate::error::Result;
use crate::events::SyncReport;
use crate::remote::ModelRoute;

impl Inner {
    /// Fetches one record and applies it like a pull (conflict-aware).
    pub(crate) async fn refresh_one(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        id: &str,
    ) -> Result<()> {
        let record = self.remote.fetch(route, id).await?;
        if let Some(record) = record {
            let mut report = SyncReport::default();
            self.apply_remote_outside_run(route, vec![record], &mut report)
                .await?;
        }
        Ok(())
    }

    /// Fetches a page by query parameters and applies it (conflict-aware).
    pub(crate) async fn refresh_page(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        params: Vec<(String, String)>,
    ) -> Result<()> {
        let page = self.remote.fetch_page(route, &params, None, None).await?;
        let mut report = SyncReport::default();
        self.apply_remote_outside_run(route, page.records, &mut report)
            .await
    }
}
