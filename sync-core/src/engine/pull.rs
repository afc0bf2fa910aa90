//! The pull half: cursor pages from the remote, normalised through the model, applied
//! with their cursor.

use std::sync::Arc;

use super::{blocking, AbortOnDrop, Inner};
use crate::error::{Error, Result};
use crate::events::SyncEvent;
use crate::events::SyncReport;
use crate::remote::{ModelRoute, Remote, RemoteError, RemotePage};
use crate::store::{QuarantinedRecord, RemoteRecord};

/// Pages in a row that carry no record but say more follow, after which the server is taken
/// to be broken (it would otherwise be asked for pages forever).
const MAX_EMPTY_PAGES: u32 = 3;

/// Turns received records into the model's full record JSON (see [`ModelRoute::normalize`]);
/// a record that does not fit the model is a bad response, naming the record.
pub(crate) fn normalize_records(route: &ModelRoute, records: &mut [RemoteRecord]) -> Result<()> {
    for record in records.iter_mut().filter(|r| !r.deleted) {
        let data = std::mem::take(&mut record.data);
        record.data = (route.normalize)(data).map_err(|(_, reason)| {
            Error::Remote(RemoteError::bad_response(format!(
                "{} `{}` from the remote does not match the model: {reason}",
                route.schema.model_type, record.id
            )))
        })?;
    }
    Ok(())
}

/// Normalises a pulled page's records; those that do not fit the model leave the page for
/// `rejected` (quarantine), as they came.
fn normalize_page(route: &ModelRoute, page: &mut RemotePage) {
    let records = std::mem::take(&mut page.records);
    page.records.reserve(records.len());
    for mut record in records {
        if record.deleted {
            page.records.push(record);
            continue;
        }
        match (route.normalize)(std::mem::take(&mut record.data)) {
            Ok(data) => {
                record.data = data;
                page.records.push(record);
            }
            Err((mut raw, reason)) => {
                raw.insert(sync_protocol::VERSION_KEY.to_owned(), record.version.into());
                page.rejected.push(QuarantinedRecord::new(
                    Some(record.id),
                    serde_json::Value::Object(raw),
                    format!("does not match the model: {reason}"),
                ));
            }
        }
    }
}

/// One page from the remote, its records normalised (the unfit ones in `rejected`).
pub(crate) async fn fetch_page(
    remote: &dyn Remote,
    route: &ModelRoute,
    cursor: Option<&str>,
    limit: usize,
) -> Result<RemotePage> {
    let mut page = remote.pull(route, cursor, limit).await?;
    normalize_page(route, &mut page);
    Ok(page)
}

impl Inner {
    /// True while the store holds quarantined records (as of the last status refresh).
    pub(crate) fn has_quarantine(&self) -> bool {
        self.status.borrow().quarantined > 0
    }

    /// Keeps `records` aside, with an event each, and refreshes the status.
    pub(crate) async fn quarantine(
        &self,
        route: &ModelRoute,
        records: Vec<QuarantinedRecord>,
    ) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let schema = route.schema;
        for record in &records {
            tracing::warn!(
                model = schema.model_type,
                key = %record.key,
                error = %record.error,
                "a pulled record does not fit its model; quarantined"
            );
        }
        let events: Vec<SyncEvent> = records
            .iter()
            .map(|r| SyncEvent::RecordQuarantined {
                model_type: schema.model_type,
                key: r.key.clone(),
                error: r.error.clone(),
            })
            .collect();
        blocking(&self.store, move |s| s.quarantine(schema, &records)).await?;
        for event in events {
            self.emit(event);
        }
        self.refresh_counts().await
    }

    /// The routes a pull of `routes` needs: with a remote that keeps sync metadata and no
    /// forced full pull, one request (`GET /sync/metadata`) tells which collections differ
    /// from what the store knows (the kept checksums); the others have nothing to pull. Any
    /// failure of that request pulls them all, as without metadata.
    pub(crate) async fn routes_to_pull(
        &self,
        routes: &[Arc<ModelRoute>],
        force_full: bool,
    ) -> Result<Vec<Arc<ModelRoute>>> {
        if force_full || !self.remote.has_sync_metadata() {
            return Ok(routes.to_vec());
        }
        // Every route's cursor and kept checksum in one trip to the blocking pool.
        let schemas: Vec<_> = routes.iter().map(|r| r.schema).collect();
        let user = self.user_id.clone();
        let local = blocking(&self.store, move |s| {
            schemas
                .into_iter()
                .map(|schema| {
                    Ok((
                        s.cursor(schema, user.as_deref())?,
                        s.known_checksum(schema)?.1,
                    ))
                })
                .collect::<crate::store::StoreResult<Vec<_>>>()
        })
        .await?;
        // No cursor (never pulled, or cleared): a full pull sets one, whatever the sums; with
        // none anywhere the metadata request would decide nothing.
        if local.iter().all(|(cursor, _)| cursor.is_none()) {
            return Ok(routes.to_vec());
        }
        let remote = match self.remote.sync_metadata().await {
            Ok(remote) => remote,
            Err(err) => {
                tracing::debug!(error = %crate::error::chain_text(&err), "no sync metadata; pulling every collection");
                return Ok(routes.to_vec());
            }
        };
        let mut differing = Vec::new();
        for (route, (cursor, mine)) in routes.iter().zip(local) {
            let same = cursor.is_some()
                && match remote.collections.get(&route.endpoint) {
                    Some(theirs) => theirs.checksum == mine.hex(),
                    None if remote.collections_truncated => false,
                    None => mine == crate::protocol::Checksum::default(),
                };
            if !same {
                differing.push(Arc::clone(route));
            }
        }
        Ok(differing)
    }

    pub(crate) async fn pull_all(
        self: &Arc<Self>,
        routes: &[Arc<ModelRoute>],
        force_full: bool,
        batch: usize,
        report: &mut SyncReport,
    ) -> Result<()> {
        let routes = self.routes_to_pull(routes, force_full).await?;
        let routes = routes.as_slice();
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
                        return Err(Error::Remote(RemoteError::bad_response(format!(
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
                // Records that cannot be applied are kept aside first, so the cursor never
                // moves past a record that is neither applied nor quarantined.
                self.quarantine(route, std::mem::take(&mut page.rejected))
                    .await?;
                let applied_ids: Vec<String> = if self.has_quarantine() {
                    page.records.iter().map(|r| r.id.clone()).collect()
                } else {
                    Vec::new()
                };
                repull |= self
                    .apply_normalized(route, page.records, next.clone(), report)
                    .await?;
                if !applied_ids.is_empty() {
                    // A record that fits now supersedes its quarantined copy.
                    blocking(&self.store, move |s| {
                        s.release_quarantined(schema, &applied_ids)
                    })
                    .await?;
                    self.refresh_counts().await?;
                }
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
                page = (&mut fetch.0).await.map_err(|source| Error::Task {
                    task: "fetching the next pull page",
                    source,
                })??;
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
