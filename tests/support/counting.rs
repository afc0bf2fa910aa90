//! A remote that counts the records the server sent in pull pages ("the items the server
//! sent" of an incremental pull), forwarding everything to an [`HttpRemote`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use offline_sync_kit::remote::{
    ModelRoute, PushItem, PushOutcome, Remote, RemoteError, RemotePage, Traffic,
};
use offline_sync_kit::store::RemoteRecord;
use offline_sync_kit::HttpRemote;

/// Counts the records the server sent in pull pages.
#[derive(Debug)]
pub struct Counting {
    pub inner: HttpRemote,
    pub pulled: Arc<AtomicU64>,
}

#[async_trait]
impl Remote for Counting {
    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }
    async fn push(
        &self,
        route: &ModelRoute,
        items: &[PushItem],
    ) -> Result<(Vec<PushOutcome>, Traffic), RemoteError> {
        self.inner.push(route, items).await
    }
    async fn pull(
        &self,
        route: &ModelRoute,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RemotePage, RemoteError> {
        let page = self.inner.pull(route, cursor, limit).await?;
        self.pulled
            .fetch_add(page.records.len() as u64, Ordering::SeqCst);
        Ok(page)
    }
    async fn fetch(
        &self,
        route: &ModelRoute,
        id: &str,
    ) -> Result<Option<RemoteRecord>, RemoteError> {
        self.inner.fetch(route, id).await
    }
    async fn fetch_page(
        &self,
        route: &ModelRoute,
        params: &[(String, String)],
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<RemotePage, RemoteError> {
        self.inner.fetch_page(route, params, limit, offset).await
    }
    async fn health(&self) -> Result<(), RemoteError> {
        self.inner.health().await
    }
}
