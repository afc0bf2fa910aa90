//! [`SyncManager`]: local-first CRUD, the push/pull engine and its background tasks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Map, Value};
use sync_schema::ModelSchema;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connectivity::{Connectivity, ManualConnectivity};
use crate::error::{Error, Result};
use crate::events::{SyncEvent, SyncEventType, SyncProgress, SyncReport, SyncStatus};
use crate::http::HttpRemote;
use crate::model::SyncModel;
use crate::options::{
    ConflictContext, ConflictStrategy, DeleteStrategy, FetchStrategy, SaveStrategy, SyncDirection,
    SyncOptions,
};
use crate::query::Query;
use crate::realtime::{self, Command, MessageHandler, Realtime, WebSocketConfig};
use crate::remote::{
    ModelRoute, PullMode, PushItem, PushKind, PushOutcome, Remote, RemoteError, RemotePage, Traffic,
};
use crate::rest::{RestRequest, RestRequests};
use crate::store::{
    Ack, JsonObject, LocalStore, LocalWrite, OpKind, OpState, OutboxOp, PendingConflict,
    RecordState, RemoteRecord, Resolution, StoreQuery, StoreResult, StoredRecord,
};

/// What a [`SyncManager::synchronize`] run does.
#[derive(Debug, Clone, Default)]
pub struct SyncRun {
    /// Order of the halves.
    pub direction: SyncDirection,
    /// Forget the pull cursors first and pull everything.
    pub force_full: bool,
    /// Ops per push request and records per pull page for this run (default: the options').
    pub batch_size: Option<usize>,
}

/// Per-model configuration beyond what the derive generates.
#[derive(Debug, Clone, Default)]
pub struct ModelConfig {
    /// Request overrides merged over the derive's `rest(...)` configuration.
    pub rest: Option<RestRequests>,
    /// How the model is pulled (default: the cursor protocol).
    pub pull: Option<PullMode>,
}

struct Registration {
    schema: &'static ModelSchema,
    route: ModelRoute,
}

/// Builds a [`SyncManager`]. Configuration errors are returned by [`build`](Self::build).
#[must_use]
pub struct SyncManagerBuilder {
    base_url: Option<String>,
    headers: BTreeMap<String, String>,
    store: Option<Arc<dyn LocalStore>>,
    remote: Option<Arc<dyn Remote>>,
    connectivity: Option<Arc<dyn Connectivity>>,
    models: Vec<Registration>,
    options: SyncOptions,
    auto_migrate: bool,
    user_id: Option<String>,
    batch_push: bool,
    websocket: Option<WebSocketConfig>,
    errors: Vec<String>,
}

impl fmt::Debug for SyncManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncManagerBuilder")
            .field("base_url", &self.base_url)
            .field(
                "models",
                &self
                    .models
                    .iter()
                    .map(|m| m.schema.model_type)
                    .collect::<Vec<_>>(),
            )
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SyncManagerBuilder {
    /// Base URL of the remote (for the default [`HttpRemote`]).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The local store.
    pub fn store(mut self, store: impl LocalStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The local store, shared.
    pub fn store_arc(mut self, store: Arc<dyn LocalStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// `Authorization: Bearer {token}` on every request of the default remote.
    pub fn bearer_token(self, token: impl AsRef<str>) -> Self {
        let value = format!("Bearer {}", token.as_ref());
        self.header("Authorization", value)
    }

    /// A header on every request of the default remote (other auth schemes).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Talk to a REST API one call per change, with the models' `RestRequests`,
    /// instead of sync-server's batch endpoint.
    pub fn rest_only(mut self) -> Self {
        self.batch_push = false;
        self
    }

    /// A custom remote instead of the default [`HttpRemote`].
    pub fn remote(mut self, remote: impl Remote) -> Self {
        self.remote = Some(Arc::new(remote));
        self
    }

    /// A custom remote, shared.
    pub fn remote_arc(mut self, remote: Arc<dyn Remote>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// How the manager learns whether the remote is reachable (default: always online,
    /// with failures handled by retries).
    pub fn connectivity(mut self, connectivity: impl Connectivity) -> Self {
        self.connectivity = Some(Arc::new(connectivity));
        self
    }

    /// Registers a model.
    pub fn model<T: SyncModel>(self) -> Self {
        self.model_with::<T>(ModelConfig::default())
    }

    /// Registers a model with request overrides or a pull mode.
    pub fn model_with<T: SyncModel>(mut self, config: ModelConfig) -> Self {
        let schema = T::SCHEMA;
        if self
            .models
            .iter()
            .any(|m| m.schema.model_type == schema.model_type)
        {
            self.errors
                .push(format!("model `{}` registered twice", schema.model_type));
            return self;
        }
        let mut rest = T::rest_requests();
        if let Some(overrides) = &config.rest {
            rest = rest.merged_with(overrides);
        }
        self.models.push(Registration {
            schema,
            route: ModelRoute {
                schema,
                endpoint: T::ENDPOINT.to_owned(),
                rest,
                pull: config.pull.unwrap_or(PullMode::Cursor),
                normalize: crate::remote::normalize_record::<T>,
            },
        });
        self
    }

    /// Options.
    pub fn options(mut self, options: SyncOptions) -> Self {
        self.options = options;
        self
    }

    /// Create missing model tables from their schema (default `true`); turn off
    /// when the application ships its own migrations.
    pub fn auto_migrate(mut self, on: bool) -> Self {
        self.auto_migrate = on;
        self
    }

    /// Realtime updates over WebSocket (connect with [`SyncManager::connect_websocket`]).
    pub fn websocket(mut self, config: WebSocketConfig) -> Self {
        self.websocket = Some(config);
        self
    }

    /// Owner recorded on local rows, ops and cursors.
    pub fn user_id(mut self, user: impl Into<String>) -> Self {
        self.user_id = Some(user.into());
        self
    }

    /// Checks the configuration, prepares the model tables, recovers ops left
    /// in flight by a crash, and starts the background tasks.
    pub async fn build(self) -> Result<SyncManager> {
        if let Some(first) = self.errors.into_iter().next() {
            return Err(Error::Config(first));
        }
        let store = self
            .store
            .ok_or_else(|| Error::Config("no store: call .store(...)".into()))?;
        if self.options.batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        let remote: Arc<dyn Remote> = match self.remote {
            Some(remote) => remote,
            None => {
                let base = self.base_url.ok_or_else(|| {
                    Error::Config("no remote: call .base_url(...) or .remote(...)".into())
                })?;
                let mut builder = HttpRemote::builder(base);
                for (name, value) in &self.headers {
                    builder = builder.header(name.clone(), value.clone());
                }
                if !self.batch_push {
                    builder = builder.batch_push(None);
                }
                Arc::new(builder.build()?)
            }
        };
        let mut models = HashMap::new();
        let mut endpoints = HashMap::new();
        for registration in self.models {
            let schema = registration.schema;
            let auto = self.auto_migrate;
            let store2 = Arc::clone(&store);
            blocking(&store2, move |s| s.prepare_model(schema, auto)).await?;
            endpoints.insert(registration.route.endpoint.clone(), schema.model_type);
            models.insert(schema.model_type, Arc::new(registration.route));
        }
        blocking(&store, |s| s.requeue_inflight()).await?;

        let explicit_connectivity = self.connectivity.is_some();
        let connectivity: Arc<dyn Connectivity> = match self.connectivity {
            Some(c) => c,
            None => Arc::new(ManualConnectivity::new(true)),
        };
        // A remote that knows its own connection state (a WebSocket) is the
        // connectivity, unless the application gave one.
        let online = match (explicit_connectivity, remote.connection_state()) {
            (false, Some(state)) => state,
            _ => connectivity.subscribe(),
        };
        let (status, _) = watch::channel(SyncStatus {
            connected: *online.borrow(),
            ..SyncStatus::default()
        });
        let (events, _) = broadcast::channel(4096);
        let realtime = self.websocket.map(|config| {
            let realtime = Realtime::new(config);
            if realtime.config.subscribe_all_models {
                if let Ok(mut subs) = realtime.subscriptions.lock() {
                    for endpoint in endpoints.keys() {
                        subs.insert(endpoint.clone(), Map::new());
                    }
                }
            }
            Arc::new(realtime)
        });
        let inner = Arc::new(Inner {
            _connectivity: Arc::clone(&connectivity),
            realtime,
            auth_headers: self.headers.clone(),
            store,
            remote,
            models,
            endpoints,
            options: RwLock::new(self.options),
            user_id: self.user_id,
            status,
            events,
            online,
            paused: AtomicBool::new(false),
            run_lock: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            cancel: CancellationToken::new(),
            periodic: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        });
        inner.refresh_counts().await?;
        connectivity.start(Arc::clone(&inner.remote), inner.cancel.child_token());
        let worker = tokio::spawn(worker(Arc::clone(&inner)));
        inner.track(worker);
        if let Some(mut changes) = inner.remote.change_events() {
            if inner.remote.subscribe_all_models() {
                let mut endpoints: Vec<&String> = inner.endpoints.keys().collect();
                endpoints.sort();
                for endpoint in endpoints {
                    inner.remote.subscribe_changes(endpoint, Map::new());
                }
            }
            let task_inner = Arc::clone(&inner);
            let cancel = inner.cancel.child_token();
            let mapper = inner.remote.change_event_mapper();
            let handle = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        message = changes.recv() => match message {
                            Ok(value) => realtime::apply_change_message(&task_inner, &mapper, &value).await,
                            Err(broadcast::error::RecvError::Lagged(missed)) => {
                                tracing::warn!(missed, "change events were dropped; pulling to catch up");
                                let channels = task_inner.endpoints.keys().cloned().collect();
                                task_inner.spawn_catch_up(channels);
                            }
                            Err(broadcast::error::RecvError::Closed) => break,
                        },
                    }
                }
            });
            inner.track(handle);
        }
        Ok(SyncManager { inner })
    }
}

pub(crate) struct Inner {
    /// Kept alive so its state channel stays open.
    _connectivity: Arc<dyn Connectivity>,
    realtime: Option<Arc<Realtime>>,
    auth_headers: BTreeMap<String, String>,
    pub(crate) store: Arc<dyn LocalStore>,
    pub(crate) remote: Arc<dyn Remote>,
    models: HashMap<&'static str, Arc<ModelRoute>>,
    endpoints: HashMap<String, &'static str>,
    options: RwLock<SyncOptions>,
    user_id: Option<String>,
    status: watch::Sender<SyncStatus>,
    events: broadcast::Sender<SyncEvent>,
    online: watch::Receiver<bool>,
    paused: AtomicBool,
    run_lock: tokio::sync::Mutex<()>,
    wake: Notify,
    cancel: CancellationToken,
    periodic: Mutex<Option<CancellationToken>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Local-first CRUD over registered models, and the sync engine that pushes
/// queued changes and pulls remote ones. Cheap to clone.
#[derive(Clone)]
pub struct SyncManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for SyncManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncManager")
            .field("models", &self.inner.models.keys().collect::<Vec<_>>())
            .field("status", &*self.inner.status.borrow())
            .finish_non_exhaustive()
    }
}

async fn blocking<R, F>(store: &Arc<dyn LocalStore>, f: F) -> Result<R>
where
    R: Send + 'static,
    F: FnOnce(&dyn LocalStore) -> StoreResult<R> + Send + 'static,
{
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(&*store))
        .await
        .map_err(|e| Error::Task(e.to_string()))?
        .map_err(Error::Store)
}

fn decode<T: SyncModel>(record: StoredRecord) -> Result<T> {
    serde_json::from_value(Value::Object(record.data)).map_err(|source| Error::Decode {
        model: T::MODEL_TYPE,
        id: record.id,
        source,
    })
}

fn store_query<T>(query: &Query<T>) -> StoreQuery {
    StoreQuery {
        filter: query.filter_expr().cloned(),
        order: query.order().to_vec(),
        limit: query.limit_value(),
        offset: query.offset_value(),
        include_deleted: false,
    }
}

impl SyncManager {
    /// Starts configuring a manager.
    pub fn builder() -> SyncManagerBuilder {
        SyncManagerBuilder {
            base_url: None,
            headers: BTreeMap::new(),
            store: None,
            remote: None,
            connectivity: None,
            models: Vec::new(),
            options: SyncOptions::default(),
            auto_migrate: true,
            user_id: None,
            batch_push: true,
            websocket: None,
            errors: Vec::new(),
        }
    }

    fn route<T: SyncModel>(&self) -> Result<Arc<ModelRoute>> {
        self.inner.route(T::SCHEMA)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.cancel.is_cancelled() {
            Err(Error::Shutdown)
        } else {
            Ok(())
        }
    }

    /// Creates or updates a record. With [`SaveStrategy::OptimisticLocal`] the
    /// record and its queued op commit together locally and the push follows;
    /// with [`SaveStrategy::RequireRemote`] the call succeeds only once the
    /// remote accepted the write, and keeps nothing locally otherwise.
    pub async fn save<T: SyncModel>(&self, model: &T) -> Result<()> {
        self.check_open()?;
        let route = self.route::<T>()?;
        let data = model.to_record_json()?;
        let id = model.id().into_owned();
        let strategy = self.inner.options().save_strategy;
        match strategy {
            SaveStrategy::OptimisticLocal => {
                self.inner.save_local(&route, id, data, true, None).await?;
                self.inner.after_local_write();
                Ok(())
            }
            SaveStrategy::RequireRemote => self.save_remote_first(&route, id, data).await,
        }
    }

    /// Saves many records in one local transaction (each with its op).
    pub async fn save_all<T: SyncModel>(&self, models: &[T]) -> Result<()> {
        self.check_open()?;
        if self.inner.options().save_strategy == SaveStrategy::RequireRemote {
            for model in models {
                self.save(model).await?;
            }
            return Ok(());
        }
        let route = self.route::<T>()?;
        let mut rows = Vec::with_capacity(models.len());
        for model in models {
            rows.push((model.id().into_owned(), model.to_record_json()?));
        }
        let user = self.inner.user_id.clone();
        let schema = route.schema;
        let rows2 = rows.clone();
        let outcomes = blocking(&self.inner.store, move |s| {
            let writes: Vec<LocalWrite<'_>> = rows2
                .iter()
                .map(|(id, data)| LocalWrite {
                    schema,
                    id,
                    data,
                    user_id: user.as_deref(),
                    priority: 0,
                    enqueue: true,
                    version: None,
                })
                .collect();
            s.save_batch(&writes)
        })
        .await?;
        for ((id, data), outcome) in rows.into_iter().zip(outcomes) {
            if outcome.changed_fields.is_empty() {
                continue;
            }
            let kind = if outcome.created {
                SyncEventType::ModelAdded
            } else {
                SyncEventType::ModelUpdated
            };
            self.inner.emit(
                SyncEvent::model(kind, schema.model_type, &id).with_data(Value::Object(data)),
            );
        }
        self.inner.refresh_counts().await?;
        self.inner.after_local_write();
        Ok(())
    }

    async fn save_remote_first(
        &self,
        route: &Arc<ModelRoute>,
        id: String,
        data: JsonObject,
    ) -> Result<()> {
        if !self.inner.is_online() {
            return Err(Error::Offline {
                what: "a save with SaveStrategy::RequireRemote",
            });
        }
        let schema = route.schema;
        let id2 = id.clone();
        let existing = blocking(&self.inner.store, move |s| s.get(schema, &id2)).await?;
        let (kind, base_version) = match &existing {
            Some(row) if row.meta.version > 0 => (PushKind::Replace, row.meta.version),
            _ => (PushKind::Create, 0),
        };
        let item = PushItem {
            seq: 0,
            kind,
            id: id.clone(),
            base_version,
            data: Some(data.clone()),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        };
        let (outcomes, _) = self
            .inner
            .remote
            .push(route, std::slice::from_ref(&item))
            .await?;
        match outcomes.into_iter().next() {
            Some(PushOutcome::Applied { version, record }) => {
                let data = record.map(|r| merge_remote(&data, r.data)).unwrap_or(data);
                self.inner
                    .save_local(route, id, data, false, Some(version))
                    .await?;
                Ok(())
            }
            Some(PushOutcome::Conflict { .. }) => Err(Error::RemoteRefused {
                what: "save",
                message: "the remote has a newer version of the record (409); pull first".into(),
            }),
            Some(PushOutcome::Rejected { message, .. }) => Err(Error::RemoteRefused {
                what: "save",
                message,
            }),
            Some(PushOutcome::Transient {
                message,
                retry_after,
            }) => Err(Error::Remote(RemoteError::Unavailable {
                message,
                retry_after,
            })),
            None => Err(Error::Remote(RemoteError::BadResponse(
                "no result for the save".into(),
            ))),
        }
    }

    /// Deletes a record: a local tombstone with a queued remote delete
    /// ([`DeleteStrategy::Optimistic`]), or remote first ([`DeleteStrategy::WaitForRemote`]).
    pub async fn delete<T: SyncModel>(&self, id: &str) -> Result<()> {
        self.check_open()?;
        let route = self.route::<T>()?;
        let schema = route.schema;
        let user = self.inner.user_id.clone();
        let strategy = self.inner.options().delete_strategy;
        let enqueue = match strategy {
            DeleteStrategy::Optimistic => true,
            DeleteStrategy::WaitForRemote => {
                let id2 = id.to_owned();
                let state =
                    blocking(&self.inner.store, move |s| s.record_state(schema, &id2)).await?;
                let version = state.meta.as_ref().map_or(0, |m| m.version);
                if version == 0 {
                    // Never reached the remote: removing it locally (and its queued create) is the whole delete.
                    true
                } else {
                    if !self.inner.is_online() {
                        return Err(Error::Offline {
                            what: "a delete with DeleteStrategy::WaitForRemote",
                        });
                    }
                    let item = PushItem {
                        seq: 0,
                        kind: PushKind::Delete,
                        id: id.to_owned(),
                        base_version: version,
                        data: None,
                        idempotency_key: uuid::Uuid::new_v4().to_string(),
                    };
                    let (outcomes, _) = self
                        .inner
                        .remote
                        .push(&route, std::slice::from_ref(&item))
                        .await?;
                    match outcomes.into_iter().next() {
                        Some(PushOutcome::Applied { .. }) => false,
                        Some(PushOutcome::Conflict { .. }) => {
                            return Err(Error::RemoteRefused {
                                what: "delete",
                                message:
                                    "the remote has a newer version of the record (409); pull first"
                                        .into(),
                            })
                        }
                        Some(PushOutcome::Rejected { message, .. }) => {
                            return Err(Error::RemoteRefused {
                                what: "delete",
                                message,
                            })
                        }
                        Some(PushOutcome::Transient {
                            message,
                            retry_after,
                        }) => {
                            return Err(Error::Remote(RemoteError::Unavailable {
                                message,
                                retry_after,
                            }))
                        }
                        None => {
                            return Err(Error::Remote(RemoteError::BadResponse(
                                "no result for the delete".into(),
                            )))
                        }
                    }
                }
            }
        };
        let id2 = id.to_owned();
        let outcome = blocking(&self.inner.store, move |s| {
            s.delete(schema, &id2, user.as_deref(), enqueue)
        })
        .await?;
        if outcome.existed {
            self.inner.emit(SyncEvent::model(
                SyncEventType::ModelDeleted,
                schema.model_type,
                id,
            ));
        }
        self.inner.refresh_counts().await?;
        if enqueue {
            self.inner.after_local_write();
        }
        Ok(())
    }

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
                    tracing::debug!(model = T::MODEL_TYPE, id, error = %err, "remote read failed; answering from the local store");
                }
            }
            FetchStrategy::LocalWithRemoteFallback => {
                if self.local_get::<T>(id).await?.is_none() {
                    self.inner.refresh_one(&route, id).await?;
                }
            }
            FetchStrategy::BackgroundSync => {
                let inner = Arc::clone(&self.inner);
                let id2 = id.to_owned();
                let handle = tokio::spawn(async move {
                    if let Err(err) = inner.refresh_one(&route, &id2).await {
                        tracing::debug!(id = %id2, error = %err, "background refresh failed");
                    }
                });
                self.inner.track(handle);
            }
        }
        self.local_get::<T>(id).await
    }

    async fn local_get<T: SyncModel>(&self, id: &str) -> Result<Option<T>> {
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
            route.rest = route.rest.merged_with(&RestRequests::new().with(request));
        }
        let route = Arc::new(route);
        let sq = store_query(&query);
        let params = query.to_query_params().unwrap_or_default();
        match strategy {
            FetchStrategy::LocalOnly => {}
            FetchStrategy::RemoteFirst => {
                if let Err(err) = self.inner.refresh_page(&route, params).await {
                    tracing::debug!(model = T::MODEL_TYPE, error = %err, "remote query failed; answering from the local store");
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
                let inner = Arc::clone(&self.inner);
                let handle = tokio::spawn(async move {
                    if let Err(err) = inner.refresh_page(&route, params).await {
                        tracing::debug!(error = %err, "background refresh failed");
                    }
                });
                self.inner.track(handle);
            }
        }
        self.local_query::<T>(sq).await
    }

    async fn local_query<T: SyncModel>(&self, query: StoreQuery) -> Result<Vec<T>> {
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

    /// Pulls one model into the store (pull half only).
    pub async fn pull<T: SyncModel>(&self) -> Result<SyncReport> {
        let route = self.route::<T>()?;
        self.inner
            .run(RunSpec {
                direction: SyncDirection::PullOnly,
                force_full: false,
                batch_size: None,
                models: Some(vec![route]),
            })
            .await
    }

    /// Fetches one record from the remote into the store and returns the local view of it.
    pub async fn pull_by_id<T: SyncModel>(&self, id: &str) -> Result<Option<T>> {
        let route = self.route::<T>()?;
        self.inner.refresh_one(&route, id).await?;
        self.local_get::<T>(id).await
    }

    /// Runs a sync of every model in the options' direction.
    pub async fn sync_all(&self) -> Result<SyncReport> {
        let direction = self.inner.options().direction;
        self.synchronize(SyncRun {
            direction,
            ..SyncRun::default()
        })
        .await
    }

    /// Runs a sync of one model.
    pub async fn sync<T: SyncModel>(&self) -> Result<SyncReport> {
        let route = self.route::<T>()?;
        let direction = self.inner.options().direction;
        self.inner
            .run(RunSpec {
                direction,
                force_full: false,
                batch_size: None,
                models: Some(vec![route]),
            })
            .await
    }

    /// Runs a sync as described by `run`.
    pub async fn synchronize(&self, run: SyncRun) -> Result<SyncReport> {
        self.check_open()?;
        self.inner
            .run(RunSpec {
                direction: run.direction,
                force_full: run.force_full,
                batch_size: run.batch_size,
                models: None,
            })
            .await
    }

    /// Syncs every `sync_interval` until [`stop_periodic_sync`](Self::stop_periodic_sync).
    pub fn start_periodic_sync(&self) {
        let token = self.inner.cancel.child_token();
        let previous = self
            .inner
            .periodic
            .lock()
            .map(|mut slot| slot.replace(token.clone()))
            .unwrap_or(None);
        if let Some(previous) = previous {
            previous.cancel();
        }
        let inner = Arc::clone(&self.inner);
        let handle = tokio::spawn(async move {
            loop {
                let interval = inner.options().sync_interval;
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(interval) => {}
                }
                let direction = inner.options().direction;
                if let Err(err) = inner
                    .run(RunSpec {
                        direction,
                        force_full: false,
                        batch_size: None,
                        models: None,
                    })
                    .await
                {
                    tracing::warn!(error = %err, "periodic sync failed");
                }
            }
        });
        self.inner.track(handle);
    }

    /// Stops periodic sync.
    pub fn stop_periodic_sync(&self) {
        if let Ok(mut slot) = self.inner.periodic.lock() {
            if let Some(token) = slot.take() {
                token.cancel();
            }
        }
    }

    /// Pauses sync: runs are skipped (local reads and writes go on) until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.inner.paused.store(true, Ordering::SeqCst);
        self.inner.status.send_modify(|s| s.paused = true);
    }

    /// Resumes sync and pushes what queued up meanwhile.
    pub fn resume(&self) {
        self.inner.paused.store(false, Ordering::SeqCst);
        self.inner.status.send_modify(|s| s.paused = false);
        self.inner.wake.notify_one();
    }

    /// The status, as a watch channel.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.inner.status.subscribe()
    }

    /// Events.
    pub fn events(&self) -> broadcast::Receiver<SyncEvent> {
        self.inner.events.subscribe()
    }

    /// Sync state of one record: version, synced, error, attempts and its ops.
    pub async fn record_state<T: SyncModel>(&self, id: &str) -> Result<RecordState> {
        self.route::<T>()?;
        let id = id.to_owned();
        blocking(&self.inner.store, move |s| s.record_state(T::SCHEMA, &id)).await
    }

    /// Ops the remote refused permanently.
    pub async fn failed_ops(&self) -> Result<Vec<OutboxOp>> {
        blocking(&self.inner.store, |s| s.failed_ops()).await
    }

    /// Puts every failed op back in the queue and pushes.
    pub async fn retry_failed(&self) -> Result<u64> {
        let n = blocking(&self.inner.store, |s| s.retry_failed(None)).await?;
        self.inner.refresh_counts().await?;
        self.inner.wake.notify_one();
        Ok(n)
    }

    /// Drops a failed (or pending) op; the local data stays as it is.
    pub async fn discard_failed(&self, op: &OutboxOp) -> Result<()> {
        let seq = op.seq;
        blocking(&self.inner.store, move |s| s.discard_op(seq)).await?;
        self.inner.refresh_counts().await
    }

    /// Replaces the options; they apply from the next operation.
    pub fn update_options(&self, options: SyncOptions) {
        if let Ok(mut slot) = self.inner.options.write() {
            *slot = options;
        }
        self.inner.wake.notify_one();
    }

    /// The options now.
    pub fn options(&self) -> SyncOptions {
        self.inner.options()
    }

    /// True if the remote is considered reachable.
    pub fn is_online(&self) -> bool {
        self.inner.is_online()
    }

    /// Stops every background task and waits for them; the manager refuses further calls.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.cancel.cancel();
        let handles: Vec<JoinHandle<()>> = self
            .inner
            .tasks
            .lock()
            .map(|mut tasks| tasks.drain(..).collect())
            .unwrap_or_default();
        for handle in handles {
            if let Err(err) = handle.await {
                if err.is_panic() {
                    tracing::error!(error = %err, "a sync task panicked");
                }
            }
        }
        // Wait for a run in progress to finish its current step.
        let _guard = self.inner.run_lock.lock().await;
        Ok(())
    }

    fn realtime(&self) -> Result<&Arc<Realtime>> {
        self.inner.realtime.as_ref().ok_or_else(|| {
            Error::Config(
                "no WebSocket configured: add .websocket(WebSocketConfig::new(url)) to the builder"
                    .into(),
            )
        })
    }

    /// Opens the realtime connection (a no-op if it is already running). It
    /// reconnects by itself until [`close_websocket`](Self::close_websocket).
    pub fn connect_websocket(&self) -> Result<()> {
        self.check_open()?;
        let realtime = Arc::clone(self.realtime()?);
        let mut slot = realtime
            .commands
            .lock()
            .map_err(|_| Error::Task("realtime state poisoned".into()))?;
        if slot.as_ref().is_some_and(|tx| !tx.is_closed()) {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *slot = Some(tx);
        drop(slot);
        let cancel = self.inner.cancel.child_token();
        if let Ok(mut c) = realtime.cancel.lock() {
            *c = Some(cancel.clone());
        }
        let handle = tokio::spawn(realtime::run(
            Arc::clone(&self.inner),
            Arc::clone(&realtime),
            rx,
            cancel,
            self.inner.auth_headers.clone(),
        ));
        self.inner.track(handle);
        Ok(())
    }

    /// Closes the realtime connection for good: no reconnect follows.
    pub fn close_websocket(&self) -> Result<()> {
        let realtime = self.realtime()?;
        if let Some(tx) = realtime.commands.lock().ok().and_then(|mut c| c.take()) {
            let _ = tx.send(Command::Close);
        }
        if let Some(cancel) = realtime.cancel.lock().ok().and_then(|mut c| c.take()) {
            cancel.cancel();
        }
        Ok(())
    }

    /// True while the realtime connection is open.
    pub fn is_websocket_connected(&self) -> bool {
        self.inner
            .realtime
            .as_ref()
            .is_some_and(|r| r.connected.load(Ordering::SeqCst))
    }

    /// Subscribes to a channel (a model's endpoint) with optional parameters
    /// (an equality filter on sync-server). Kept across reconnects.
    pub fn subscribe(&self, channel: &str, parameters: Map<String, Value>) -> Result<()> {
        let realtime = self.realtime()?;
        let message = realtime::subscription_message("subscribe", channel, &parameters);
        if let Ok(mut subs) = realtime.subscriptions.lock() {
            subs.insert(channel.to_owned(), parameters);
        }
        realtime.send(message);
        Ok(())
    }

    /// Unsubscribes from a channel.
    pub fn unsubscribe(&self, channel: &str) -> Result<()> {
        let realtime = self.realtime()?;
        if let Ok(mut subs) = realtime.subscriptions.lock() {
            subs.remove(channel);
        }
        realtime.send(realtime::subscription_message(
            "unsubscribe",
            channel,
            &Map::new(),
        ));
        Ok(())
    }

    /// Sends a JSON message over the realtime connection; `false` if it is not connected.
    pub fn send_websocket_message(&self, message: Value) -> Result<bool> {
        let realtime = self.realtime()?;
        Ok(realtime.connected.load(Ordering::SeqCst) && realtime.send(message))
    }

    /// Calls `handler` for every server message whose `type` (or, for events
    /// the mapper does not know, whose `event`) is `kind`.
    pub fn register_message_handler(
        &self,
        kind: &str,
        handler: impl Fn(&Value) + Send + Sync + 'static,
    ) -> Result<()> {
        let realtime = self.realtime()?;
        let handler: MessageHandler = Arc::new(handler);
        if let Ok(mut handlers) = realtime.handlers.lock() {
            handlers.entry(kind.to_owned()).or_default().push(handler);
        }
        Ok(())
    }

    /// A live query: yields the result set now and again whenever local data
    /// of the model changes in a way that changes the result (local saves,
    /// pulls, realtime updates).
    pub fn watch<T: SyncModel>(&self, query: Query<T>) -> Result<LiveQuery<T>> {
        self.route::<T>()?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut events = self.inner.events.subscribe();
        let manager = self.clone();
        let cancel = self.inner.cancel.child_token();
        let handle = tokio::spawn(async move {
            let mut last: Option<Vec<Value>> = None;
            let mut dirty = true;
            loop {
                if dirty {
                    let result = manager.local_query::<T>(store_query(&query)).await;
                    let send = match &result {
                        Ok(rows) => {
                            let snapshot: Vec<Value> = rows
                                .iter()
                                .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                                .collect();
                            let changed = last.as_ref() != Some(&snapshot);
                            last = Some(snapshot);
                            changed
                        }
                        Err(_) => true,
                    };
                    if send && tx.send(result).await.is_err() {
                        break;
                    }
                }
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tx.closed() => break,
                    event = events.recv() => match event {
                        Ok(event) => {
                            dirty = event.model_type == Some(T::MODEL_TYPE)
                                && matches!(event.kind, SyncEventType::ModelAdded | SyncEventType::ModelUpdated | SyncEventType::ModelDeleted);
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => dirty = true,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        });
        self.inner.track(handle);
        Ok(LiveQuery { rx })
    }

    /// The store the manager uses.
    pub fn store(&self) -> Arc<dyn LocalStore> {
        Arc::clone(&self.inner.store)
    }

    /// The model type registered for a wire collection (endpoint).
    pub fn model_type_for_endpoint(&self, endpoint: &str) -> Option<&'static str> {
        self.inner.endpoints.get(endpoint).copied()
    }
}

/// Result sets of a live query ([`SyncManager::watch`]).
#[derive(Debug)]
pub struct LiveQuery<T> {
    rx: tokio::sync::mpsc::Receiver<Result<Vec<T>>>,
}

impl<T> LiveQuery<T> {
    /// The next result set (the first one at once); `None` once the manager shut down.
    pub async fn next(&mut self) -> Option<Result<Vec<T>>> {
        self.rx.recv().await
    }
}

/// Merges a server echo over the local data (server-side fields like timestamps).
fn merge_remote(local: &JsonObject, remote: JsonObject) -> JsonObject {
    let mut out = local.clone();
    for (k, v) in remote {
        out.insert(k, v);
    }
    out
}

/// Turns received records into the model's full record JSON (see [`ModelRoute::normalize`]);
/// a record that does not fit the model is a bad response, naming the record.
fn normalize_records(route: &ModelRoute, records: &mut [RemoteRecord]) -> Result<()> {
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
async fn fetch_page(
    remote: &dyn Remote,
    route: &ModelRoute,
    cursor: Option<&str>,
    limit: usize,
) -> Result<RemotePage> {
    let mut page = remote.pull(route, cursor, limit).await?;
    normalize_records(route, &mut page.records)?;
    Ok(page)
}

/// A spawned task that is cancelled when its handle is dropped, so that a run stopped
/// half-way (an error, a shutdown) leaves nothing running.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The remote's answer to a pushed chunk.
type PushResult = std::result::Result<(Vec<PushOutcome>, Traffic), RemoteError>;

/// A chunk of ops marked in flight, with what goes on the wire.
struct PreparedChunk {
    /// The ops that are sent, in the order of `items`.
    ops: Vec<OutboxOp>,
    items: Vec<PushItem>,
    /// Local rows of the creates and updates, by id, as they were sent.
    rows: HashMap<String, StoredRecord>,
    /// Ops failed because their local record was gone.
    failed: u64,
}

struct RunSpec {
    direction: SyncDirection,
    force_full: bool,
    batch_size: Option<usize>,
    models: Option<Vec<Arc<ModelRoute>>>,
}

impl Inner {
    fn options(&self) -> SyncOptions {
        self.options.read().map(|o| o.clone()).unwrap_or_default()
    }

    fn is_online(&self) -> bool {
        *self.online.borrow()
    }

    fn track(&self, handle: JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|h| !h.is_finished());
            tasks.push(handle);
        }
    }

    fn emit(&self, event: SyncEvent) {
        // No receiver is fine: events are for whoever listens.
        let _ = self.events.send(event);
    }

    pub(crate) fn emit_event(&self, event: SyncEvent) {
        self.emit(event);
    }

    pub(crate) fn route_for_endpoint(&self, endpoint: &str) -> Option<Arc<ModelRoute>> {
        let model_type = self.endpoints.get(endpoint)?;
        self.models.get(model_type).cloned()
    }

    /// Pulls the models behind `channels` in the background (after a (re)connect).
    pub(crate) fn spawn_catch_up(self: &Arc<Self>, channels: Vec<String>) {
        let routes: Vec<Arc<ModelRoute>> = channels
            .iter()
            .filter_map(|c| self.route_for_endpoint(c))
            .collect();
        if routes.is_empty() {
            return;
        }
        let inner = Arc::clone(self);
        let handle = tokio::spawn(async move {
            let spec = RunSpec {
                direction: SyncDirection::PullOnly,
                force_full: false,
                batch_size: None,
                models: Some(routes),
            };
            if let Err(err) = inner.run(spec).await {
                tracing::debug!(error = %err, "catch-up pull after connecting failed");
            }
        });
        self.track(handle);
    }

    fn route(&self, schema: &'static ModelSchema) -> Result<Arc<ModelRoute>> {
        self.models
            .get(schema.model_type)
            .cloned()
            .ok_or(Error::NotRegistered {
                model: schema.model_type,
                struct_name: schema.struct_name,
            })
    }

    fn after_local_write(&self) {
        if self.options().auto_sync {
            self.wake.notify_one();
        }
    }

    async fn refresh_counts(&self) -> Result<()> {
        let counts = blocking(&self.store, |s| s.counts()).await?;
        self.status.send_if_modified(|s| {
            let changed = s.pending_changes != counts.pending || s.failed_changes != counts.failed;
            s.pending_changes = counts.pending;
            s.failed_changes = counts.failed;
            changed
        });
        Ok(())
    }

    async fn save_local(
        &self,
        route: &ModelRoute,
        id: String,
        data: JsonObject,
        enqueue: bool,
        version: Option<i64>,
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
                priority: 0,
                enqueue,
                version,
            })
        })
        .await?;
        if !outcome.changed_fields.is_empty() {
            let kind = if outcome.created {
                SyncEventType::ModelAdded
            } else {
                SyncEventType::ModelUpdated
            };
            self.emit(
                SyncEvent::model(kind, schema.model_type, &id).with_data(Value::Object(data)),
            );
        }
        self.refresh_counts().await
    }

    /// Fetches one record and applies it like a pull (conflict-aware).
    async fn refresh_one(self: &Arc<Self>, route: &Arc<ModelRoute>, id: &str) -> Result<()> {
        let record = self.remote.fetch(route, id).await?;
        if let Some(record) = record {
            let mut report = SyncReport::default();
            self.apply_remote_outside_run(route, vec![record], &mut report)
                .await?;
        }
        Ok(())
    }

    /// Fetches a page by query parameters and applies it (conflict-aware).
    async fn refresh_page(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        params: Vec<(String, String)>,
    ) -> Result<()> {
        let page = self.remote.fetch_page(route, &params, None, None).await?;
        let mut report = SyncReport::default();
        self.apply_remote_outside_run(route, page.records, &mut report)
            .await
    }

    /// Applies remote records (with an optional cursor) and settles conflicts.
    /// Applies records that did not come from a sync run (realtime events,
    /// remote reads). It waits for a running sync: a conflict settled while a
    /// push is between choosing an op and marking it in flight could rewrite
    /// the op under it.
    pub(crate) async fn apply_remote_outside_run(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        records: Vec<RemoteRecord>,
        report: &mut SyncReport,
    ) -> Result<()> {
        let _guard = self.run_lock.lock().await;
        self.apply_remote_records(route, records, None, report)
            .await
    }

    pub(crate) async fn apply_remote_records(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        records: Vec<RemoteRecord>,
        cursor: Option<String>,
        report: &mut SyncReport,
    ) -> Result<()> {
        let mut records = records;
        normalize_records(route, &mut records)?;
        if self
            .apply_normalized(route, records, cursor, report)
            .await?
        {
            // Outside a pull nothing moved the cursor past these records: the next pull
            // brings them again.
            tracing::debug!("remote records left for the next pull behind unanswered ops");
        }
        Ok(())
    }

    /// [`apply_remote_records`](Self::apply_remote_records) of records already normalised.
    /// Returns `true` when a record had to be left unapplied behind a local op that may have
    /// reached the remote and whose answer could not be had: the caller must make sure the
    /// record is pulled again (a pull resets the model's cursor).
    ///
    /// A remote record newer than the row, met while the record's oldest op may already have
    /// reached the remote, may be that very op's write, whose answer was lost: settling it
    /// as a conflict would take our own write for somebody else's and could drop the edits
    /// queued behind it. So that op is sent again first (its idempotency key makes the
    /// replay return the first result) and the record is applied again after its answer.
    async fn apply_normalized(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        records: Vec<RemoteRecord>,
        cursor: Option<String>,
        report: &mut SyncReport,
    ) -> Result<bool> {
        let probes = self.apply_round(route, records, cursor, report).await?;
        if probes.is_empty() {
            return Ok(false);
        }
        let heads: Vec<OutboxOp> = probes
            .iter()
            .filter_map(|c| c.ops.first().cloned())
            .collect();
        let options = self.options();
        let chunk = options.batch_size.min(self.remote.max_batch()).max(1);
        if let Err(err) = self
            .push_group(route, &heads, chunk, &options, report)
            .await
        {
            tracing::debug!(error = %err, "resending ops before applying their records failed; the records are pulled again later");
            return Ok(true);
        }
        let again = probes.into_iter().map(|c| c.remote).collect();
        let left = self.apply_round(route, again, None, report).await?;
        Ok(!left.is_empty())
    }

    /// One application of remote records. Conflicts whose oldest op may have reached the
    /// remote are returned unsettled; the others are settled.
    async fn apply_round(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        records: Vec<RemoteRecord>,
        cursor: Option<String>,
        report: &mut SyncReport,
    ) -> Result<Vec<PendingConflict>> {
        let schema = route.schema;
        let user = self.user_id.clone();
        let records = Arc::new(records);
        let records2 = Arc::clone(&records);
        let applied = blocking(&self.store, move |s| {
            s.apply_remote(schema, user.as_deref(), &records2, cursor.as_deref())
        })
        .await?;
        // Nobody listening (a bulk pull without UI): skip building the events.
        let listening = self.events.receiver_count() > 0;
        let by_id: HashMap<&str, &RemoteRecord> = if listening {
            records.iter().map(|r| (r.id.as_str(), r)).collect()
        } else {
            HashMap::new()
        };
        for id in applied.created.iter().filter(|_| listening) {
            let data = by_id
                .get(id.as_str())
                .map(|r| Value::Object(r.data.clone()));
            let mut event = SyncEvent::model(SyncEventType::ModelAdded, schema.model_type, id);
            event.data = data;
            self.emit(event);
        }
        for id in applied.updated.iter().filter(|_| listening) {
            let data = by_id
                .get(id.as_str())
                .map(|r| Value::Object(r.data.clone()));
            let mut event = SyncEvent::model(SyncEventType::ModelUpdated, schema.model_type, id);
            event.data = data;
            self.emit(event);
        }
        for id in applied.deleted.iter().filter(|_| listening) {
            self.emit(SyncEvent::model(
                SyncEventType::ModelDeleted,
                schema.model_type,
                id,
            ));
        }
        report.pulled +=
            (applied.created.len() + applied.updated.len() + applied.deleted.len()) as u64;
        let mut deferred = false;
        let mut probes = Vec::new();
        for conflict in applied.conflicts {
            if conflict.ops.iter().any(|op| op.state == OpState::Inflight) {
                // The push of this record is on its way; its answer (ack or 409)
                // settles it. An in-flight op is never rewritten underneath it, and
                // a catch-up pull afterwards brings anything newer.
                deferred = true;
                continue;
            }
            let possibly_ours = conflict
                .ops
                .first()
                .is_some_and(|op| op.sent && op.state == OpState::Pending);
            if possibly_ours {
                probes.push(conflict);
                continue;
            }
            self.settle(route, conflict, report).await?;
        }
        if deferred {
            self.spawn_catch_up(vec![route.endpoint.clone()]);
        }
        Ok(probes)
    }

    /// Decides and writes the resolution of one conflict.
    async fn settle(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        conflict: PendingConflict,
        report: &mut SyncReport,
    ) -> Result<()> {
        let schema = route.schema;
        let id = conflict.remote.id.clone();
        report.conflicts += 1;
        self.emit(
            SyncEvent::model(SyncEventType::ConflictDetected, schema.model_type, &id).with_data(
                serde_json::json!({
                    "local": conflict.local.as_ref().map(|l| Value::Object(l.data.clone())),
                    "remote": Value::Object(conflict.remote.data.clone()),
                    "remote_version": conflict.remote.version,
                    "remote_deleted": conflict.remote.deleted,
                }),
            ),
        );
        let strategy = self.options().conflict_strategy;
        let resolution = decide(&strategy, schema, &conflict);
        let label = match &resolution {
            Resolution::TakeRemote => "take_remote",
            Resolution::KeepLocal => "keep_local",
            Resolution::Merged(_) => "merged",
        };
        let remote = conflict.remote.clone();
        let resolution2 = resolution.clone();
        blocking(&self.store, move |s| {
            s.resolve_conflict(schema, &remote, &resolution2)
        })
        .await?;
        self.emit(
            SyncEvent::model(SyncEventType::ConflictResolved, schema.model_type, &id)
                .with_data(serde_json::json!({ "resolution": label })),
        );
        match resolution {
            Resolution::TakeRemote if conflict.remote.deleted => {
                self.emit(SyncEvent::model(
                    SyncEventType::ModelDeleted,
                    schema.model_type,
                    &id,
                ));
            }
            Resolution::TakeRemote => self.emit(
                SyncEvent::model(SyncEventType::ModelUpdated, schema.model_type, &id)
                    .with_data(Value::Object(conflict.remote.data.clone())),
            ),
            Resolution::Merged(data) => self.emit(
                SyncEvent::model(SyncEventType::ModelUpdated, schema.model_type, &id)
                    .with_data(Value::Object(data)),
            ),
            Resolution::KeepLocal => {}
        }
        Ok(())
    }

    /// One sync run under the run lock.
    async fn run(self: &Arc<Self>, spec: RunSpec) -> Result<SyncReport> {
        let _guard = self.run_lock.lock().await;
        let started = Instant::now();
        let mut report = SyncReport::default();
        if self.cancel.is_cancelled() {
            return Err(Error::Shutdown);
        }
        if self.paused.load(Ordering::SeqCst) || !self.is_online() {
            report.skipped = true;
            return Ok(report);
        }
        let options = self.options();
        let batch = spec.batch_size.unwrap_or(options.batch_size).max(1);
        let routes: Vec<Arc<ModelRoute>> = match spec.models {
            Some(routes) => routes,
            None => {
                let mut all: Vec<_> = self.models.values().cloned().collect();
                all.sort_by_key(|r| r.schema.model_type);
                all
            }
        };
        let pushes = spec.direction.pushes();
        let pulls = spec.direction.pulls() && options.bidirectional;
        let pull_first = spec.direction == SyncDirection::PullThenPush;

        self.status.send_modify(|s| {
            s.syncing = true;
            s.progress = Some(SyncProgress::default());
        });
        self.emit(SyncEvent::new(SyncEventType::SyncStarted));

        let mut outcome: Result<()> = Ok(());
        let push_models: HashSet<&'static str> =
            routes.iter().map(|r| r.schema.model_type).collect();
        if pull_first && pulls {
            outcome = self
                .pull_all(&routes, spec.force_full, batch, &mut report)
                .await;
        }
        if outcome.is_ok() && pushes {
            outcome = self.push_all(&push_models, batch, &mut report).await;
        }
        if outcome.is_ok() && !pull_first && pulls {
            outcome = self
                .pull_all(&routes, spec.force_full, batch, &mut report)
                .await;
            // Conflicts settled by the pull may have left rebased ops: send them now.
            if outcome.is_ok() && pushes && report.conflicts > 0 {
                outcome = self.push_all(&push_models, batch, &mut report).await;
            }
        }
        report.duration = started.elapsed();
        let counts = blocking(&self.store, |s| s.counts()).await.ok();
        match &outcome {
            Ok(()) => {
                self.status.send_modify(|s| {
                    s.syncing = false;
                    s.progress = None;
                    s.last_sync_time = Some(Utc::now());
                    // The last error stays while any op it failed is still failed.
                    if report.failed == 0 && counts.is_none_or(|c| c.failed == 0) {
                        s.last_error = None;
                    }
                    if let Some(c) = counts {
                        s.pending_changes = c.pending;
                        s.failed_changes = c.failed;
                    }
                });
                self.emit(SyncEvent::new(SyncEventType::SyncCompleted).with_data(report.to_json()));
            }
            Err(err) => {
                let message = err.to_string();
                self.status.send_modify(|s| {
                    s.syncing = false;
                    s.progress = None;
                    s.last_error = Some(message.clone());
                    if let Some(c) = counts {
                        s.pending_changes = c.pending;
                        s.failed_changes = c.failed;
                    }
                });
                self.emit(SyncEvent::new(SyncEventType::SyncFailed).with_data(
                    serde_json::json!({ "error": message, "report": report.to_json() }),
                ));
            }
        }
        if report.retried > 0 {
            // Let the worker re-arm its retry timer.
            self.wake.notify_one();
        }
        outcome.map(|()| report)
    }

    fn progress(&self, done: u64, more_total: u64) {
        self.status.send_modify(|s| {
            let p = s.progress.get_or_insert_with(SyncProgress::default);
            p.done += done;
            p.total += more_total;
        });
    }

    async fn pull_all(
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
            loop {
                if self.cancel.is_cancelled() {
                    return Err(Error::Shutdown);
                }
                report.bytes_received += page.bytes;
                let n = page.records.len() as u64;
                self.progress(0, n);
                let next = page.next_cursor.clone();
                let more = page.has_more && next.is_some() && next != cursor;
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

    async fn push_all(
        self: &Arc<Self>,
        models: &HashSet<&'static str>,
        batch: usize,
        report: &mut SyncReport,
    ) -> Result<()> {
        let options = self.options();
        let chunk_size = batch.min(self.remote.max_batch()).max(1);
        loop {
            if self.cancel.is_cancelled() {
                return Err(Error::Shutdown);
            }
            let limit = batch.saturating_mul(4).max(64);
            let ready = blocking(&self.store, move |s| s.ready_ops(Utc::now(), limit)).await?;
            // Ops of models this manager does not know cannot be sent: keep them, visibly, as failed.
            for op in ready
                .iter()
                .filter(|op| !self.models.contains_key(op.model_type.as_str()))
            {
                let seq = op.seq;
                let message = format!(
                    "model `{}` is not registered with this SyncManager; register it and call retry_failed",
                    op.model_type
                );
                blocking(&self.store, move |s| s.fail_op(seq, &message)).await?;
                report.failed += 1;
            }
            // One op per record per round keeps a record's ops in order.
            let mut seen = HashSet::new();
            let ready: Vec<OutboxOp> = ready
                .into_iter()
                .filter(|op| models.contains(op.model_type.as_str()))
                .filter(|op| seen.insert((op.model_type.clone(), op.record_id.clone())))
                .collect();
            if ready.is_empty() {
                return Ok(());
            }
            self.progress(0, ready.len() as u64);
            let mut progressed = false;
            // Group by model, keeping priority/seq order inside each group.
            let mut groups: Vec<(&'static str, Vec<OutboxOp>)> = Vec::new();
            for op in ready {
                let Some(route) = self.models.get(op.model_type.as_str()) else {
                    continue;
                };
                let model_type = route.schema.model_type;
                match groups.iter_mut().find(|(m, _)| *m == model_type) {
                    Some((_, ops)) => ops.push(op),
                    None => groups.push((model_type, vec![op])),
                }
            }
            for (model_type, ops) in groups {
                let route = Arc::clone(&self.models[model_type]);
                progressed |= self
                    .push_group(&route, &ops, chunk_size, &options, report)
                    .await?;
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Pushes one model's ops chunk by chunk, as a pipeline: while chunk `n` is on the wire,
    /// chunk `n - 1` is settled from its answer and chunk `n + 1` is marked in flight and read
    /// from the store, so the local work hides behind the remote's. Chunks hold distinct
    /// records (one op per record per round), so their order among each other is free.
    /// Returns whether any op left the queue or changed state for good.
    async fn push_group(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        ops: &[OutboxOp],
        chunk_size: usize,
        options: &SyncOptions,
        report: &mut SyncReport,
    ) -> Result<bool> {
        let mut chunks = ops.chunks(chunk_size);
        let Some(first) = chunks.next() else {
            return Ok(false);
        };
        let mut progressed = false;
        let mut current = self.prepare_chunk(route, first, options).await?;
        let mut answered: Option<(PreparedChunk, Option<PushResult>)> = None;
        loop {
            let following = chunks.next();
            let (sent, (settled, next)) = tokio::join!(
                async {
                    if current.items.is_empty() {
                        None
                    } else {
                        Some(self.remote.push(route, &current.items).await)
                    }
                },
                async {
                    let settled = match answered.take() {
                        Some((chunk, sent)) => {
                            self.finish_chunk(route, chunk, sent, options, report).await
                        }
                        None => Ok(false),
                    };
                    let next = match (&settled, following) {
                        (Ok(_), Some(ops)) => Some(self.prepare_chunk(route, ops, options).await),
                        _ => None,
                    };
                    (settled, next)
                },
            );
            let failed_send = matches!(sent, Some(Err(_)));
            let stop = match (settled, next) {
                (Ok(made_progress), Some(Ok(prepared))) if !failed_send => {
                    progressed |= made_progress;
                    answered = Some((std::mem::replace(&mut current, prepared), sent));
                    continue;
                }
                (Ok(made_progress), None) if !failed_send => {
                    // The last chunk: settle it and stop.
                    progressed |= made_progress;
                    None
                }
                (Ok(made_progress), Some(Ok(prepared))) => {
                    // The current chunk failed: the next one never goes out.
                    progressed |= made_progress;
                    self.release(&prepared).await;
                    None
                }
                (Ok(made_progress), None) => {
                    progressed |= made_progress;
                    None
                }
                (Ok(made_progress), Some(Err(err))) => {
                    progressed |= made_progress;
                    Some(err)
                }
                (Err(err), _) => Some(err),
            };
            // Whatever happened around it, the chunk that was sent is settled from its answer
            // (a failed send puts its ops back for a retry) so that none stays in flight.
            let last = self
                .finish_chunk(route, current, sent, options, report)
                .await;
            return match (stop, last) {
                (Some(err), _) | (None, Err(err)) => Err(err),
                (None, Ok(made_progress)) => Ok(progressed | made_progress),
            };
        }
    }

    /// Puts a prepared chunk that was never sent back to pending, untouched.
    async fn release(self: &Arc<Self>, chunk: &PreparedChunk) {
        let seqs: Vec<i64> = chunk.ops.iter().map(|o| o.seq).collect();
        if seqs.is_empty() {
            return;
        }
        if let Err(err) = blocking(&self.store, move |s| s.release_inflight(&seqs)).await {
            tracing::warn!(error = %err, "could not release unsent ops; they go back to pending on the next start");
        }
    }

    /// Marks a chunk's ops in flight and builds what to send from the records as stored now.
    /// An op whose local record is gone fails at once.
    async fn prepare_chunk(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        ops: &[OutboxOp],
        options: &SyncOptions,
    ) -> Result<PreparedChunk> {
        let schema = route.schema;
        let seqs: Vec<i64> = ops.iter().map(|o| o.seq).collect();
        // The ops and their records as they are when marked, read in the marking transaction:
        // an edit saved after this goes into a new op behind, never into what is sent.
        let claimed = blocking(&self.store, move |s| s.claim_ops(schema, &seqs)).await?;
        let mut chunk = PreparedChunk {
            ops: Vec::with_capacity(claimed.len()),
            items: Vec::with_capacity(claimed.len()),
            rows: HashMap::new(),
            failed: 0,
        };
        let mut ops = Vec::with_capacity(claimed.len());
        for claim in claimed {
            if let Some(record) = claim.record {
                chunk.rows.insert(claim.op.record_id.clone(), record);
            }
            ops.push(claim.op);
        }
        let rows = &chunk.rows;
        for op in ops {
            let item = match op.op {
                OpKind::Delete => Some(PushItem {
                    seq: op.seq,
                    kind: PushKind::Delete,
                    id: op.record_id.clone(),
                    base_version: op.base_version,
                    data: None,
                    idempotency_key: op.idempotency_key.clone(),
                }),
                OpKind::Create | OpKind::Update => rows.get(&op.record_id).map(|row| {
                    let full = op.op == OpKind::Create
                        || !options.use_delta_sync
                        || op.changed_fields.iter().any(|f| {
                            schema
                                .field_by_wire_name(f)
                                .is_some_and(|spec| spec.skip_delta)
                        });
                    let (kind, data) = if op.op == OpKind::Create {
                        (PushKind::Create, row.data.clone())
                    } else if full {
                        (PushKind::Replace, row.data.clone())
                    } else {
                        let mut delta = Map::new();
                        for field in &op.changed_fields {
                            if let Some(value) = row.data.get(field) {
                                delta.insert(field.clone(), value.clone());
                            }
                        }
                        (PushKind::Update, delta)
                    };
                    PushItem {
                        seq: op.seq,
                        kind,
                        id: op.record_id.clone(),
                        base_version: op.base_version,
                        data: Some(data),
                        idempotency_key: op.idempotency_key.clone(),
                    }
                }),
            };
            match item {
                Some(item) => {
                    chunk.items.push(item);
                    chunk.ops.push(op);
                }
                None => {
                    let seq = op.seq;
                    blocking(&self.store, move |s| {
                        s.fail_op(seq, "the local record of this op is missing")
                    })
                    .await?;
                    chunk.failed += 1;
                }
            }
        }
        Ok(chunk)
    }

    /// Settles a sent chunk from the remote's answer (`None`: nothing was sendable); returns
    /// whether any op left the queue or changed state for good.
    async fn finish_chunk(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        chunk: PreparedChunk,
        sent: Option<PushResult>,
        options: &SyncOptions,
        report: &mut SyncReport,
    ) -> Result<bool> {
        let schema = route.schema;
        let PreparedChunk {
            ops: sendable,
            rows,
            failed,
            ..
        } = chunk;
        report.failed += failed;
        let mut progressed = failed > 0;
        let Some(result) = sent else {
            return Ok(progressed);
        };
        // A remote must answer every item, in order; a short or long answer says nothing
        // reliable about any of them.
        let result = result.and_then(|(outcomes, traffic)| {
            if outcomes.len() == sendable.len() {
                Ok((outcomes, traffic))
            } else {
                Err(RemoteError::BadResponse(format!(
                    "the remote answered {} outcomes for {} pushed changes",
                    outcomes.len(),
                    sendable.len()
                )))
            }
        });
        let (outcomes, traffic) = match result {
            Ok(ok) => ok,
            // The remote refused the whole request for good (a malformed or too large batch,
            // a missing endpoint): no retry can succeed, so the ops fail, kept and visible
            // for `retry_failed` once the cause is fixed. Credentials (401, 403) may be
            // fixed from outside, so those are retried like an outage.
            Err(RemoteError::Refused { status, message })
                if (400..500).contains(&status) && ![401, 403, 408, 429].contains(&status) =>
            {
                let text = format!("HTTP {status}: {message}");
                for op in &sendable {
                    let seq = op.seq;
                    let text2 = text.clone();
                    blocking(&self.store, move |s| s.fail_op(seq, &text2)).await?;
                    report.failed += 1;
                    self.emit(
                        SyncEvent::model(
                            SyncEventType::SyncFailed,
                            schema.model_type,
                            &op.record_id,
                        )
                        .with_data(serde_json::json!({ "error": text, "seq": seq })),
                    );
                }
                self.status
                    .send_modify(|s| s.last_error = Some(text.clone()));
                return Err(Error::Remote(RemoteError::Refused { status, message }));
            }
            Err(err) => {
                // Nothing is known about any item: all of them go back to the queue.
                let retry_after = match &err {
                    RemoteError::Unavailable { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let message = err.to_string();
                for op in &sendable {
                    self.retry_later(schema, op, &message, retry_after, options, report)
                        .await?;
                }
                return Err(Error::Remote(err));
            }
        };
        report.bytes_sent += traffic.sent;
        report.bytes_received += traffic.received;
        // Acknowledge the whole chunk in one store transaction first.
        let mut acks = Vec::new();
        let mut others = Vec::new();
        for (op, outcome) in sendable.iter().zip(outcomes) {
            match outcome {
                PushOutcome::Applied { version, record } => acks.push(Ack {
                    seq: op.seq,
                    version,
                    // Write the server's copy back only where it differs from ours.
                    data: record
                        .filter(|r| !r.deleted)
                        .map(|r| r.data)
                        .filter(|data| rows.get(&op.record_id).is_none_or(|row| row.data != *data)),
                }),
                other => others.push((op, other)),
            }
        }
        if !acks.is_empty() {
            let n = acks.len() as u64;
            blocking(&self.store, move |s| s.ack_ops(schema, &acks)).await?;
            report.pushed += n;
            progressed = true;
            self.progress(n, 0);
        }
        for (op, outcome) in others {
            let seq = op.seq;
            match outcome {
                PushOutcome::Applied { .. } => {}
                PushOutcome::Conflict { current } => {
                    // Back to pending so the resolution may rewrite or drop it.
                    blocking(&self.store, move |s| {
                        s.reschedule_op(seq, Utc::now(), "conflict")
                    })
                    .await?;
                    let id = op.record_id.clone();
                    let state = blocking(&self.store, move |s| s.record_state(schema, &id)).await?;
                    let id = op.record_id.clone();
                    let local = blocking(&self.store, move |s| s.get(schema, &id)).await?;
                    let conflict = PendingConflict {
                        remote: current,
                        local,
                        ops: state.ops,
                    };
                    self.settle(route, conflict, report).await?;
                    progressed = true;
                }
                PushOutcome::Rejected { status, message } => {
                    let text = if status > 0 {
                        format!("HTTP {status}: {message}")
                    } else {
                        message
                    };
                    let text2 = text.clone();
                    blocking(&self.store, move |s| s.fail_op(seq, &text2)).await?;
                    report.failed += 1;
                    progressed = true;
                    self.status
                        .send_modify(|s| s.last_error = Some(text.clone()));
                    self.emit(
                        SyncEvent::model(
                            SyncEventType::SyncFailed,
                            schema.model_type,
                            &op.record_id,
                        )
                        .with_data(serde_json::json!({ "error": text, "seq": seq })),
                    );
                }
                PushOutcome::Transient {
                    message,
                    retry_after,
                } => {
                    self.retry_later(schema, op, &message, retry_after, options, report)
                        .await?;
                }
            }
        }
        Ok(progressed)
    }

    async fn retry_later(
        &self,
        schema: &'static ModelSchema,
        op: &OutboxOp,
        message: &str,
        retry_after: Option<Duration>,
        options: &SyncOptions,
        report: &mut SyncReport,
    ) -> Result<()> {
        let attempts = u32::try_from(op.attempts.max(0)).unwrap_or(0) + 1;
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
            self.emit(
                SyncEvent::model(SyncEventType::SyncFailed, schema.model_type, &op.record_id)
                    .with_data(serde_json::json!({ "error": text, "seq": seq })),
            );
            return Ok(());
        }
        let delay = options.retry.delay(attempts, retry_after);
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        blocking(&self.store, move |s| s.reschedule_op(seq, at, &message)).await?;
        report.retried += 1;
        Ok(())
    }
}

/// Chooses a resolution by strategy.
fn decide(
    strategy: &ConflictStrategy,
    schema: &'static ModelSchema,
    conflict: &PendingConflict,
) -> Resolution {
    let local_deleted =
        conflict.ops.iter().any(|op| op.op == OpKind::Delete) || conflict.local.is_none();
    let mut changed: Vec<String> = Vec::new();
    let mut base_values = Map::new();
    for op in &conflict.ops {
        for field in &op.changed_fields {
            if !changed.contains(field) {
                changed.push(field.clone());
            }
        }
        for (k, v) in &op.base_values {
            base_values.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let local_updated_at = conflict.local.as_ref().map(|l| l.meta.updated_at);
    let local_is_newer = match (local_updated_at, conflict.remote.updated_at) {
        (Some(local), Some(remote)) => local > remote,
        (Some(_), None) => false,
        _ => false,
    };
    let client_wins = |local: &Option<StoredRecord>| match local {
        Some(local) if !local_deleted => Resolution::Merged(local.data.clone()),
        _ => Resolution::KeepLocal,
    };
    match strategy {
        ConflictStrategy::ServerWins => Resolution::TakeRemote,
        ConflictStrategy::ClientWins => client_wins(&conflict.local),
        ConflictStrategy::LastUpdateWins => {
            if local_is_newer {
                client_wins(&conflict.local)
            } else {
                Resolution::TakeRemote
            }
        }
        ConflictStrategy::MergeFields => {
            let is_update = conflict.ops.iter().all(|op| op.op == OpKind::Update);
            match &conflict.local {
                Some(local) if is_update && !local_deleted && !conflict.remote.deleted => {
                    let mut merged = conflict.remote.data.clone();
                    for field in &changed {
                        let local_value = local.data.get(field).cloned().unwrap_or(Value::Null);
                        let remote_value = conflict
                            .remote
                            .data
                            .get(field)
                            .cloned()
                            .unwrap_or(Value::Null);
                        let base = base_values.get(field).cloned().unwrap_or(Value::Null);
                        let take_local = if remote_value == base {
                            true
                        } else if remote_value == local_value {
                            false
                        } else {
                            local_is_newer
                        };
                        if take_local {
                            merged.insert(field.clone(), local_value);
                        }
                    }
                    // Keep the id under its wire name even if the remote copy lacked it.
                    merged
                        .entry(schema.id().wire_name.to_owned())
                        .or_insert_with(|| Value::String(conflict.remote.id.clone()));
                    if merged == conflict.remote.data {
                        Resolution::TakeRemote
                    } else {
                        Resolution::Merged(merged)
                    }
                }
                _ => {
                    if local_is_newer {
                        client_wins(&conflict.local)
                    } else {
                        Resolution::TakeRemote
                    }
                }
            }
        }
        ConflictStrategy::Custom(resolver) => {
            let ctx = ConflictContext {
                model_type: schema.model_type,
                id: &conflict.remote.id,
                local: if local_deleted {
                    None
                } else {
                    conflict.local.as_ref().map(|l| &l.data)
                },
                local_updated_at,
                remote: &conflict.remote,
                changed_fields: &changed,
                base_values: &base_values,
            };
            resolver.resolve(&ctx)
        }
    }
}

/// The background task: debounced auto-push, the retry timer, and sync on reconnect.
/// How long the worker sleeps before the retry at `next` (an hour when there is none). A retry
/// time that passed while the schedule was being read is due now: a negative wait must not
/// turn into the idle hour.
fn retry_wait(next: Option<chrono::DateTime<Utc>>, now: chrono::DateTime<Utc>) -> Duration {
    next.map_or(Duration::from_secs(3600), |at| {
        (at - now).to_std().unwrap_or(Duration::ZERO)
    })
}

async fn worker(inner: Arc<Inner>) {
    let mut online = inner.online.clone();
    let mut was_online = *online.borrow();
    let mut online_open = true;
    loop {
        let now = Utc::now();
        // Ops already due (their time passed while a run was going on) count as due now.
        // Without auto_sync the application drives pushes (sync calls, reconnects).
        let idle =
            inner.paused.load(Ordering::SeqCst) || !inner.is_online() || !inner.options().auto_sync;
        let schedule = blocking(&inner.store, move |s| {
            if idle {
                // Nothing can be sent now; a resume or reconnect wakes the worker.
                return Ok(None);
            }
            if s.ready_ops(now, 1)?.is_empty() {
                s.next_retry_at(now)
            } else {
                Ok(Some(now))
            }
        })
        .await;
        let next_retry = match schedule {
            Ok(next) => next,
            Err(err) => {
                tracing::error!(error = %err, "reading the retry schedule failed");
                None
            }
        };
        let sleep_for = retry_wait(next_retry, Utc::now());
        let has_retry = next_retry.is_some();
        enum Wake {
            Write,
            Retry,
            Online(bool),
            Idle,
        }
        let wake = tokio::select! {
            () = inner.cancel.cancelled() => break,
            () = inner.wake.notified() => Wake::Write,
            () = tokio::time::sleep(sleep_for) => if has_retry { Wake::Retry } else { Wake::Idle },
            changed = online.changed(), if online_open => match changed {
                Ok(()) => Wake::Online(*online.borrow_and_update()),
                Err(_) => {
                    // The connectivity source is gone: its last state stays.
                    online_open = false;
                    Wake::Idle
                }
            },
        };
        let spec = match wake {
            Wake::Idle => continue,
            Wake::Write if !inner.options().auto_sync => continue,
            Wake::Write => {
                let debounce = inner.options().auto_sync_debounce;
                if !debounce.is_zero() {
                    tokio::select! {
                        () = inner.cancel.cancelled() => break,
                        () = tokio::time::sleep(debounce) => {}
                    }
                }
                RunSpec {
                    direction: SyncDirection::PushOnly,
                    force_full: false,
                    batch_size: None,
                    models: None,
                }
            }
            Wake::Retry => RunSpec {
                direction: SyncDirection::PushOnly,
                force_full: false,
                batch_size: None,
                models: None,
            },
            Wake::Online(now_online) => {
                inner.status.send_modify(|s| s.connected = now_online);
                inner.emit(SyncEvent::new(if now_online {
                    SyncEventType::ConnectionEstablished
                } else {
                    SyncEventType::ConnectionClosed
                }));
                let came_back = now_online && !was_online;
                was_online = now_online;
                if !came_back {
                    continue;
                }
                let direction = inner.options().direction;
                RunSpec {
                    direction,
                    force_full: false,
                    batch_size: None,
                    models: None,
                }
            }
        };
        if let Err(err) = inner.run(spec).await {
            tracing::debug!(error = %err, "background sync run failed; it will be retried");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RecordMeta;
    use chrono::TimeZone;
    use serde_json::json;
    use sync_schema::{FieldSpec, SqlType};

    const fn field(position: usize, name: &'static str, id: bool) -> FieldSpec {
        FieldSpec {
            position,
            name,
            wire_name: name,
            column: name,
            sql_type: SqlType::Text,
            nullable: false,
            id,
            index: false,
            skip_delta: false,
            has_default: false,
        }
    }
    const FIELDS: &[FieldSpec] = &[
        field(0, "id", true),
        field(1, "title", false),
        field(2, "note", false),
    ];
    static SCHEMA: ModelSchema = ModelSchema {
        struct_name: "Item",
        model_type: "item",
        endpoint: "items",
        table: "items",
        id_field: 0,
        fields: FIELDS,
    };

    fn obj(v: Value) -> JsonObject {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn at(secs: i64) -> chrono::DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn conflict(local_at: i64, remote_at: i64, op: OpKind) -> PendingConflict {
        PendingConflict {
            remote: RemoteRecord {
                id: "i1".into(),
                version: 5,
                deleted: false,
                data: obj(json!({"id": "i1", "title": "remote title", "note": "remote note"})),
                updated_at: Some(at(remote_at)),
            },
            local: Some(StoredRecord {
                id: "i1".into(),
                data: obj(json!({"id": "i1", "title": "local title", "note": "base note"})),
                meta: RecordMeta {
                    version: 4,
                    created_at: at(0),
                    updated_at: at(local_at),
                    synced: false,
                    deleted: false,
                    user_id: None,
                    sync_error: None,
                    sync_attempts: 0,
                },
            }),
            ops: vec![OutboxOp {
                seq: 1,
                model_type: "item".into(),
                record_id: "i1".into(),
                user_id: None,
                op,
                changed_fields: vec!["title".into()],
                base_version: 4,
                base_values: obj(json!({"title": "base title"})),
                idempotency_key: "k".into(),
                priority: 0,
                attempts: 0,
                next_attempt_at: None,
                last_error: None,
                state: OpState::Pending,
                created_at: at(local_at),
                sent: false,
            }],
        }
    }

    #[test]
    fn server_and_client_wins() {
        let c = conflict(10, 5, OpKind::Update);
        assert_eq!(
            decide(&ConflictStrategy::ServerWins, &SCHEMA, &c),
            Resolution::TakeRemote
        );
        assert_eq!(
            decide(&ConflictStrategy::ClientWins, &SCHEMA, &c),
            Resolution::Merged(c.local.clone().unwrap().data)
        );
    }

    #[test]
    fn last_update_wins_compares_write_times_and_ties_go_to_the_server() {
        let newer_local = conflict(10, 5, OpKind::Update);
        assert!(matches!(
            decide(&ConflictStrategy::LastUpdateWins, &SCHEMA, &newer_local),
            Resolution::Merged(_)
        ));
        let newer_remote = conflict(5, 10, OpKind::Update);
        assert_eq!(
            decide(&ConflictStrategy::LastUpdateWins, &SCHEMA, &newer_remote),
            Resolution::TakeRemote
        );
        let tie = conflict(7, 7, OpKind::Update);
        assert_eq!(
            decide(&ConflictStrategy::LastUpdateWins, &SCHEMA, &tie),
            Resolution::TakeRemote
        );
    }

    #[test]
    fn merge_fields_takes_fields_only_one_side_changed() {
        // Local changed title (base "base title"); remote changed note and title.
        let mut c = conflict(1, 10, OpKind::Update);
        c.remote.data.insert("title".into(), json!("base title"));
        let merged = decide(&ConflictStrategy::MergeFields, &SCHEMA, &c);
        assert_eq!(
            merged,
            Resolution::Merged(obj(
                json!({"id": "i1", "title": "local title", "note": "remote note"})
            ))
        );
    }

    #[test]
    fn merge_fields_breaks_ties_by_write_time() {
        // Both changed the title.
        let remote_newer = conflict(1, 10, OpKind::Update);
        assert_eq!(
            decide(&ConflictStrategy::MergeFields, &SCHEMA, &remote_newer),
            Resolution::TakeRemote
        );
        let local_newer = conflict(10, 1, OpKind::Update);
        assert_eq!(
            decide(&ConflictStrategy::MergeFields, &SCHEMA, &local_newer),
            Resolution::Merged(obj(
                json!({"id": "i1", "title": "local title", "note": "remote note"})
            ))
        );
    }

    #[test]
    fn deletes_fall_back_to_the_tie_break() {
        let mut c = conflict(10, 1, OpKind::Delete);
        c.local = None;
        assert_eq!(
            decide(&ConflictStrategy::ClientWins, &SCHEMA, &c),
            Resolution::KeepLocal
        );
        assert_eq!(
            decide(&ConflictStrategy::MergeFields, &SCHEMA, &c),
            Resolution::TakeRemote,
            "no local write time: the server wins"
        );
        let mut tomb = conflict(1, 10, OpKind::Update);
        tomb.remote.deleted = true;
        assert_eq!(
            decide(&ConflictStrategy::MergeFields, &SCHEMA, &tomb),
            Resolution::TakeRemote
        );
    }

    #[derive(Debug)]
    struct KeepNote;
    impl crate::options::ConflictResolver for KeepNote {
        fn resolve(&self, c: &ConflictContext<'_>) -> Resolution {
            assert_eq!(c.changed_fields, ["title"]);
            assert_eq!(c.base_values.get("title"), Some(&json!("base title")));
            Resolution::KeepLocal
        }
    }

    #[test]
    fn a_retry_time_already_past_is_due_now() {
        let now = at(100);
        assert_eq!(retry_wait(Some(at(99)), now), Duration::ZERO);
        assert_eq!(retry_wait(Some(at(102)), now), Duration::from_secs(2));
        assert_eq!(retry_wait(None, now), Duration::from_secs(3600));
    }

    #[test]
    fn custom_resolver_sees_the_context() {
        let c = conflict(1, 2, OpKind::Update);
        let strategy = ConflictStrategy::Custom(Arc::new(KeepNote));
        assert_eq!(decide(&strategy, &SCHEMA, &c), Resolution::KeepLocal);
    }
}
