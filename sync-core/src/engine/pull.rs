//! The pull half: cursor pages from the remote, normalised through the model, applied
//! with their cursor.

use std::sync::Arc;

use super::{blocking, AbortOnDrop, Inner};
use crate::error::{Error, Result};
use crate::events::SyncReport;
use crate::remote::{ModelRoute, Remote, RemoteError, RemotePage};
use crate::store::RemoteRecord;

/// Pages in a row that carry no record but say more follow, after which the server is taken
/// to be broken (it would otherwise be asked for pages forever).
const MAX_EMPTY_PAGES: u32 = 3;

/// Turns received records into the model's full record JSON (see [`ModelRoute::normalize`]);
/// a record that does not fit the model is a bad response, naming the record.
pub(crate) fn normalize_records(route: &ModelRoute, records: &mut [RemoteRecord]) -> Result<()> {
    for record in records.iter_mut().filter(|r| !r.deleted) {
        let data = std::mem::take(&mut record.data);
        record.data = (route.normalize)(data).map_err(|reason| {
            Error::Remote(RemoteError::BadResponse(format!(
                "{} `{}` from the remote does not match the model: {reason}",
                route.schema.model_type, record.id
            )))
        })?;
    }
    Ok(())
}

/// One page from the remote, its records normalised.
pub(crate) async fn fetch_page(
    remote: &dyn Remote,
    route: &ModelRoute,
    cursor: Option<&str>,
    limit: usize,
) -> Result<RemotePage> {
    let mut page = remote.pull(route, cursor, limit).await?;
    normalize_records(route, &mut page.records)?;
    Ok(page)
}

impl Inner {
    pub(crate) async fn pull_all(
        self: &Arc<Self>,
        routes: &[Arc<ModelRoute>],
        force_full: bool,
        batch: usize,
        report: &mut SyncReport,
    ) -> Result<()> {
        let user = self.user_id.clone();
        for route in routes {
            let schema = route.schema;
            if force_full {
                let user = user.clone();
                blocking(&self.store, move |s| {
                    s.reset_cursor(schema, user.as_deref())
                })
                .await?;
            }
            let user2 = user.clone();
            let mut cursor =
                blocking(&self.store, move |s| s.cursor(schema, user2.as_deref())).await?;
            let mut page = fetch_page(&*self.remote, route, cursor.as_deref(), batch).await?;
            let mut repull = false;
            let mut empty_pages: u32 = 0;
            loop {
                if self.cancel.is_cancelled() {
                    return Err(Error::Shutdown);
                }
                report.bytes_received = report.bytes_received.saturating_add(page.bytes);
                let n = page.records.len() as u64;
                self.progress(0, n);
                let next = page.next_cursor.clone();
                let more = page.has_more && next.is_some() && next != cursor;
                if more && page.records.is_empty() {
                    empty_pages = empty_pages.saturating_add(1);
                    if empty_pages >= MAX_EMPTY_PAGES {
                        return Err(Error::Remote(RemoteError::BadResponse(format!(
                            "{}: {empty_pages} empty pages in a row that say more follow",
                            schema.model_type
                        ))));
                    }
                } else {
                    empty_pages = 0;
                }
                // The next page is fetched (on its own task, so its parsing runs in parallel)
                // while this one is written; it is applied only after this one has committed
                // with its cursor, and dropped if this one fails.
                let fetch = more.then(|| {
                    let remote = Arc::clone(&self.remote);
                    let route = Arc::clone(route);
                    let after = next.clone();
                    AbortOnDrop(tokio::spawn(async move {
                        fetch_page(&*remote, &route, after.as_deref(), batch).await
                    }))
                });
                repull |= self
                    .apply_normalized(route, page.records, next.clone(), report)
                    .await?;
                self.progress(n, 0);
                if next.is_none() {
                    let user = user.clone();
                    blocking(&self.store, move |s| {
                        s.reset_cursor(schema, user.as_deref())
                    })
                    .await?;
                }
                let Some(mut fetch) = fetch else {
                    break;
                };
                page = (&mut fetch.0)
                    .await
                    .map_err(|e| Error::Task(format!("page fetch: {e}")))??;
                cursor = next;
            }
            if repull {
                // A record was left behind an op whose answer is still out: the next pull
                // starts over so that it is applied once that op is settled.
                let user = user.clone();
                blocking(&self.store, move |s| {
                    s.reset_cursor(schema, user.as_deref())
                })
                .await?;
            }
        }
        Ok(())
    }
}
