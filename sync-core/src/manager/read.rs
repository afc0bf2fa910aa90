//! Reads: get, query and count, local or remote by [`FetchStrategy`].

use std::sync::Arc;

use serde_json::Value;

use super::SyncManager;
use crate::engine::{blocking, decode, store_query};
use crate::error::{Error, Result};
use crate::model::SyncModel;
use crate::options::FetchStrategy;
use crate::query::Query;
use crate::rest::{RestMethod, RestRequest, RestRequests};
use crate::store::StoreQuery;

impl SyncManager {
    /// One record, read according to the options' [`FetchStrategy`].
    pub async fn get<T: SyncModel>(&self, id: &str) -> Result<Option<T>> {
        let strategy = self.inner.options().fetch_strategy;
        self.get_with::<T>(id, strategy).await
    }

    /// One record, read with `strategy`.
    pub async fn get_with<T: SyncModel>(
        &self,
        id: &str,
        strategy: FetchStrategy,
    ) -> Result<Option<T>> {
        self.check_open()?;
        let route = self.route::<T>()?;
        match strategy {
            FetchStrategy::LocalOnly => {}
            FetchStrategy::RemoteFirst => {
                if let Err(err) = self.inner.refresh_one(&route, id).await {
                    tracing::debug!(model = T::MODEL_TYPE, id, error = %crate::error::chain_text(&err), "remote read failed; answering from the local store");
                }
            }
            FetchStrategy::LocalWithRemoteFallback => {
                if self.local_get::<T>(id).await?.is_none() {
                    self.inner.refresh_one(&route, id).await?;
                }
            }
            FetchStrategy::BackgroundSync => {
                // The local answer first, then the refresh: started before the read, a quick
                // refresh could land first and the "local now" answer would not be.
                let answer = self.local_get::<T>(id).await;
                let inner = Arc::clone(&self.inner);
                let id2 = id.to_owned();
                let handle = tokio::spawn(async move {
                    if let Err(err) = inner.refresh_one(&route, &id2).await {
                        tracing::debug!(id = %id2, error = %crate::error::chain_text(&err), "background refresh failed");
                    }
                });
                self.inner.track(handle);
                return answer;
            }
        }
        self.local_get::<T>(id).await
    }

    pub(crate) async fn local_get<T: SyncModel>(&self, id: &str) -> Result<Option<T>> {
        let id = id.to_owned();
        let row = blocking(&self.inner.store, move |s| s.get(T::SCHEMA, &id)).await?;
        row.map(decode::<T>).transpose()
    }

    /// Every local record of a model.
    pub async fn all<T: SyncModel>(&self) -> Result<Vec<T>> {
        self.query_with(Query::new(), FetchStrategy::LocalOnly)
            .await
    }

    /// Records matching `query`, read according to the options' [`FetchStrategy`].
    pub async fn query<T: SyncModel>(&self, query: Query<T>) -> Result<Vec<T>> {
        let strategy = self.inner.options().fetch_strategy;
        self.query_with(query, strategy).await
    }

    /// Records matching `query`, read with `strategy`.
    pub async fn query_with<T: SyncModel>(
        &self,
        query: Query<T>,
        strategy: FetchStrategy,
    ) -> Result<Vec<T>> {
        self.query_with_request(query, strategy, None).await
    }

    /// Like [`query_with`](Self::query_with), with a `RestRequest` that
    /// overrides the model's GET configuration for this call's remote read.
    pub async fn query_with_request<T: SyncModel>(
        &self,
        query: Query<T>,
        strategy: FetchStrategy,
        request: Option<RestRequest>,
    ) -> Result<Vec<T>> {
        self.check_open()?;
        let mut route = (*self.route::<T>()?).clone();
        if let Some(request) = request {
            if request.method == RestMethod::Get {
                request.check_query_supplemental().map_err(Error::Config)?;
            }
            route.rest = route.rest.merged_with(&RestRequests::new().with(request));
        }
        let route = Arc::new(route);
        let sq = store_query(&query);
        let params = query.to_query_params().unwrap_or_default();
        match strategy {
            FetchStrategy::LocalOnly => {}
            FetchStrategy::RemoteFirst => {
                if let Err(err) = self.inner.refresh_page(&route, params).await {
                    tracing::debug!(model = T::MODEL_TYPE, error = %crate::error::chain_text(&err), "remote query failed; answering from the local store");
                }
            }
            FetchStrategy::LocalWithRemoteFallback => {
                let local = self.local_query::<T>(sq.clone()).await?;
                if !local.is_empty() {
                    return Ok(local);
                }
                self.inner.refresh_page(&route, params).await?;
            }
            FetchStrategy::BackgroundSync => {
                // The local answer first, then the refresh (see `get_with`).
                let answer = self.local_query::<T>(sq).await;
                let inner = Arc::clone(&self.inner);
                let handle = tokio::spawn(async move {
                    if let Err(err) = inner.refresh_page(&route, params).await {
                        tracing::debug!(error = %crate::error::chain_text(&err), "background refresh failed");
                    }
                });
                self.inner.track(handle);
                return answer;
            }
        }
        self.local_query::<T>(sq).await
    }

    pub(crate) async fn local_query<T: SyncModel>(&self, query: StoreQuery) -> Result<Vec<T>> {
        let rows = blocking(&self.inner.store, move |s| s.query(T::SCHEMA, &query)).await?;
        rows.into_iter().map(decode::<T>).collect()
    }

    /// Number of local records matching `query`'s filter.
    pub async fn count<T: SyncModel>(&self, query: Query<T>) -> Result<u64> {
        let sq = store_query(&query);
        blocking(&self.inner.store, move |s| s.count(T::SCHEMA, &sq)).await
    }

    /// A page of records straight from the remote (not stored): records after
    /// cursor `since`, at most `limit`, skipping `offset`.
    pub async fn fetch_items<T: SyncModel>(
        &self,
        since: Option<&str>,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<T>> {
        let route = self.route::<T>()?;
        let mut params = Vec::new();
        if let Some(since) = since {
            params.push(("since".to_owned(), since.to_owned()));
        }
        let page = self
            .inner
            .remote
            .fetch_page(&route, &params, Some(limit), (offset > 0).then_some(offset))
            .await?;
        page.records
            .into_iter()
            .filter(|r| !r.deleted)
            .map(|r| {
                serde_json::from_value(Value::Object(r.data)).map_err(|source| Error::Decode {
                    model: T::MODEL_TYPE,
                    id: r.id,
                    source,
                })
            })
            .collect()
    }
}
