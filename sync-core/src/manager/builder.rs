//! [`SyncManagerBuilder`]: configuration, model registration and `build()`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Map;
use sync_schema::ModelSchema;
use tokio::sync::{broadcast, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::SyncManager;
use crate::auth::{TokenAuth, TokenProvider};
use crate::protocol::DEVICE_ID_HEADER;

/// The `_sync_metadata` key (under the empty user) of this store's device id.
const DEVICE_KEY: &str = "device_id";
use crate::connectivity::{Connectivity, ManualConnectivity, ObservedRemote, RemoteConnectivity};
use crate::crypto::{EncryptingRemote, FieldCrypto, KeyProvider};
use crate::engine::{blocking, worker, Inner};
use crate::error::{Error, Result};
use crate::events::SyncStatus;
use crate::http::HttpRemote;
use crate::model::SyncModel;
use crate::options::SyncOptions;
use crate::realtime::{self, Realtime, WebSocketConfig};
use crate::remote::{ModelRoute, Remote};
use crate::rest::{PullMode, RestMethod, RestRequests};
use crate::store::LocalStore;

/// Per-model configuration beyond what the derive generates.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ModelConfig {
    /// Request overrides merged over the derive's `rest(...)` configuration.
    pub rest: Option<RestRequests>,
    /// How the model is pulled, replacing the derive's `#[sync(pull(...))]` (default: the
    /// cursor protocol).
    pub pull: Option<PullMode>,
    /// Queue priority of the model's changes, replacing the derive's `#[sync(priority = N)]`
    /// ([`SyncModel::PRIORITY`]); a write's [`WriteOptions::priority`](crate::WriteOptions)
    /// overrides both.
    pub priority: Option<i32>,
    /// How a REST backend versions, conflicts, replays and keys the model's records,
    /// replacing the derive's `#[sync(backend(...))]` (default: sync-server's behaviour).
    pub backend: Option<crate::backend::RestBackend>,
}

impl ModelConfig {
    /// Nothing beyond the derive's configuration.
    pub fn new() -> Self {
        ModelConfig::default()
    }

    /// Request overrides merged over the derive's `rest(...)` configuration.
    #[must_use]
    pub fn rest(mut self, rest: RestRequests) -> Self {
        self.rest = Some(rest);
        self
    }

    /// How the model is pulled.
    #[must_use]
    pub fn pull(mut self, pull: impl Into<PullMode>) -> Self {
        self.pull = Some(pull.into());
        self
    }

    /// Queue priority of the model's changes (higher is pushed first, across models).
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// How a REST backend treats the model's records (see [`RestBackend`](crate::RestBackend)).
    #[must_use]
    pub fn backend(mut self, backend: crate::backend::RestBackend) -> Self {
        self.backend = Some(backend);
        self
    }
}

/// Why a pull mode cannot work, if it cannot.
fn check_pull(pull: &PullMode) -> std::result::Result<(), String> {
    match pull {
        PullMode::Cursor | PullMode::FullPaged => Ok(()),
        PullMode::UpdatedSince { field, since_param } => {
            if field.is_empty() || since_param.is_empty() {
                Err(format!(
                    "`PullMode::UpdatedSince` needs a field and a since parameter (got {field:?} and {since_param:?})"
                ))
            } else {
                Ok(())
            }
        }
        PullMode::Rest(pull) => pull.check(),
    }
}

/// Why the methods configured cannot work with the backend, if they cannot.
fn check_methods(
    rest: &RestRequests,
    backend: &crate::backend::RestBackend,
) -> std::result::Result<(), String> {
    for method in RestMethod::ALL {
        let Some(sent) = rest.get_for(method).and_then(|r| r.send_as) else {
            continue;
        };
        let fits = match method {
            RestMethod::Get => sent == RestMethod::Get,
            RestMethod::Post => matches!(sent, RestMethod::Post | RestMethod::Put),
            RestMethod::Put | RestMethod::Patch => {
                matches!(sent, RestMethod::Put | RestMethod::Patch | RestMethod::Post)
            }
            RestMethod::Delete => matches!(sent, RestMethod::Delete | RestMethod::Post),
        };
        if !fits {
            return Err(format!("`{method}` cannot be sent as {sent}"));
        }
        if method == RestMethod::Post && sent == RestMethod::Put && backend.server_ids.is_some() {
            return Err(
                "a create sent as PUT to the item URL uses the client's id, so it cannot go with `server_ids`"
                    .into(),
            );
        }
    }
    Ok(())
}

pub(crate) struct Registration {
    pub(crate) schema: &'static ModelSchema,
    pub(crate) route: ModelRoute,
    pub(crate) encrypted: &'static [&'static str],
    pub(crate) priority: i32,
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
    field_keys: Option<Arc<dyn KeyProvider>>,
    token_provider: Option<Arc<dyn TokenProvider>>,
    auto_start: bool,
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

    /// Expiring credentials: `Authorization: Bearer <token>` from `provider` on every request
    /// of the default remote and on the WebSocket upgrade. On a 401 the provider is asked for
    /// a fresh token once and the request retried; when that fails the status says
    /// [`SyncState::NeedsAuth`](crate::SyncState::NeedsAuth), the queue is kept and nothing is
    /// sent automatically until a sync call or
    /// [`refresh_credentials`](SyncManager::refresh_credentials) gets a token the remote takes.
    /// Replaces a [`bearer_token`](Self::bearer_token). Not for a custom
    /// [`remote`](Self::remote), which handles its own credentials.
    pub fn token_provider(self, provider: impl TokenProvider) -> Self {
        self.token_provider_shared(Arc::new(provider))
    }

    pub(crate) fn token_provider_shared(mut self, provider: Arc<dyn TokenProvider>) -> Self {
        self.headers.remove("Authorization");
        self.token_provider = Some(provider);
        self
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

    /// How the manager learns whether the remote is reachable. The default follows the
    /// remote: with a remote that has a connection state of its own
    /// ([`WebSocketRemote`](crate::WebSocketRemote)) that state, otherwise
    /// [`RemoteConnectivity`](crate::RemoteConnectivity): the outcome of every request, the
    /// realtime socket opening and closing, and a probe of the health endpoint (every 30 s
    /// online, from 250 ms up to 5 s offline). [`ManualConnectivity`] lets the application
    /// decide (`ManualConnectivity::new(true)` is "always online": failures are only retried).
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
        if let Err(err) = rest.resolve(RestMethod::Get).check_query_supplemental() {
            self.errors
                .push(format!("model `{}`: {err}", schema.model_type));
        }
        let pull = config
            .pull
            .or_else(T::pull_mode)
            .unwrap_or(PullMode::Cursor);
        let backend = config.backend.or_else(T::rest_backend).unwrap_or_default();
        if let Err(err) = check_pull(&pull).and_then(|()| backend.check(schema)) {
            self.errors
                .push(format!("model `{}`: {err}", schema.model_type));
        }
        if let Err(err) = check_methods(&rest, &backend) {
            self.errors
                .push(format!("model `{}`: {err}", schema.model_type));
        }
        self.models.push(Registration {
            schema,
            route: ModelRoute {
                schema,
                endpoint: T::ENDPOINT.to_owned(),
                rest,
                pull,
                backend,
                normalize: crate::remote::normalize_record::<T>,
            },
            encrypted: T::ENCRYPTED_FIELDS,
            priority: config.priority.unwrap_or(T::PRIORITY),
        });
        self
    }

    /// The keys of the `#[sync(encrypted)]` fields (end-to-end encryption; see
    /// [`crate::envelope`]). Required when a registered model has such a field.
    pub fn field_keys(mut self, keys: impl KeyProvider) -> Self {
        self.field_keys = Some(Arc::new(keys));
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

    /// Realtime updates over WebSocket (connect with [`SyncManager::realtime`] and [`RealtimeHandle::connect`](crate::RealtimeHandle::connect)).
    pub fn websocket(mut self, config: WebSocketConfig) -> Self {
        self.websocket = Some(config);
        self
    }

    /// Start syncing when built (default `false`): [`build`](Self::build) starts
    /// [`SyncManager::start_periodic_sync`] with a first full sync at once rather than after
    /// the first `sync_interval`, so an application that opens its manager at launch gets the
    /// remote's changes without a call. Off, nothing is pulled until the application calls a
    /// sync method or starts periodic sync; local writes are still pushed by `auto_sync`.
    pub fn auto_start(mut self, on: bool) -> Self {
        self.auto_start = on;
        self
    }

    /// The user whose data the store holds: recorded on local rows, ops and cursors, and the
    /// store's owner. A store that already belongs to another user (or is opened without a
    /// user id once it belongs to one) is refused at [`build`](Self::build) with
    /// [`Error::StoreOwnedByAnotherUser`]; data saved before any user id was given goes to the
    /// first user who opens the store with one. Several users on one device each get their own
    /// store through [`SyncAccounts`](crate::SyncAccounts).
    pub fn user_id(mut self, user: impl Into<String>) -> Self {
        self.user_id = Some(user.into());
        self
    }

    /// Checks the configuration, prepares the model tables, recovers ops left
    /// in flight by a crash, and starts the background tasks.
    pub async fn build(mut self) -> Result<SyncManager> {
        if let Some(first) = self.errors.into_iter().next() {
            return Err(Error::Config(first));
        }
        let store = self
            .store
            .ok_or_else(|| Error::Config("no store: call .store(...)".into()))?;
        if self.options.batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        // This device's id, made once per store, on every request and WebSocket upgrade.
        let device_id = blocking(&store, |s| {
            if let Some(id) = s.metadata(None, DEVICE_KEY)? {
                return Ok(id);
            }
            let id = uuid::Uuid::new_v4().simple().to_string();
            s.set_metadata(None, DEVICE_KEY, &id)?;
            Ok(id)
        })
        .await?;
        if !self
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case(DEVICE_ID_HEADER))
        {
            self.headers
                .insert(DEVICE_ID_HEADER.to_owned(), device_id.clone());
        }
        let auth = self.token_provider.map(TokenAuth::new);
        if auth.is_some() {
            // The provider's token is the one credential.
            self.headers.remove("Authorization");
        }
        let remote: Arc<dyn Remote> = match self.remote {
            Some(_) if auth.is_some() => {
                return Err(Error::Config(
                    "token_provider applies to the default remote; a custom remote handles its own credentials"
                        .into(),
                ))
            }
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
                if let Some(auth) = &auth {
                    builder = builder.token_auth(Arc::clone(auth));
                }
                Arc::new(builder.build()?)
            }
        };
        let encrypted: HashMap<&'static str, &'static [&'static str]> = self
            .models
            .iter()
            .filter(|r| !r.encrypted.is_empty())
            .map(|r| (r.schema.model_type, r.encrypted))
            .collect();
        let crypto = match (self.field_keys, encrypted.keys().next()) {
            (Some(keys), _) => Some(Arc::new(FieldCrypto::new(keys, encrypted))),
            (None, Some(model)) => {
                return Err(Error::Config(format!(
                    "model `{model}` has #[sync(encrypted)] fields; register their keys with .field_keys(...)"
                )))
            }
            (None, None) => None,
        };
        let raw_remote = Arc::clone(&remote);
        let remote: Arc<dyn Remote> = match &crypto {
            Some(crypto) => Arc::new(EncryptingRemote {
                inner: remote,
                crypto: Arc::clone(crypto),
            }),
            None => remote,
        };
        let explicit_connectivity = self.connectivity.is_some();
        let remote_state = remote.connection_state();
        let connectivity: Arc<dyn Connectivity> = match self.connectivity {
            Some(c) => c,
            // Unused: the remote's own state is the connectivity (below).
            None if remote_state.is_some() => Arc::new(ManualConnectivity::new(true)),
            None => Arc::new(RemoteConnectivity::new()),
        };
        // A remote that knows its own connection state (a WebSocket) is the
        // connectivity, unless the application gave one.
        let online = match (explicit_connectivity, remote_state) {
            (false, Some(state)) => state,
            _ => connectivity.subscribe(),
        };
        // The probe asks the remote directly: its answers are not observations.
        let probed = Arc::clone(&remote);
        let remote: Arc<dyn Remote> = Arc::new(ObservedRemote {
            inner: remote,
            connectivity: Arc::clone(&connectivity),
        });
        // Before anything reads or sends the store's data: is it this user's?
        let user = self.user_id.clone();
        let claim = blocking(&store, move |s| s.claim_owner(user.as_deref())).await?;
        if let Some(owner) = claim {
            return Err(Error::StoreOwnedByAnotherUser {
                owner,
                requested: self.user_id,
            });
        }
        let mut models = HashMap::new();
        let mut endpoints = HashMap::new();
        let mut priorities = HashMap::new();
        for registration in self.models {
            let schema = registration.schema;
            let auto = self.auto_migrate;
            let store2 = Arc::clone(&store);
            blocking(&store2, move |s| s.prepare_model(schema, auto)).await?;
            endpoints.insert(registration.route.endpoint.clone(), schema.model_type);
            priorities.insert(schema.model_type, registration.priority);
            models.insert(schema.model_type, Arc::new(registration.route));
        }
        blocking(&store, |s| s.requeue_inflight()).await?;

        let (status, _) = watch::channel(SyncStatus {
            connected: *online.borrow(),
            ..SyncStatus::default()
        });
        let (events, _) = broadcast::channel(4096);
        if let Some(crypto) = &crypto {
            crypto
                .attach(
                    raw_remote,
                    Arc::clone(&store),
                    events.clone(),
                    self.user_id.clone(),
                )
                .await;
        }
        let realtime = self.websocket.map(|config| {
            let realtime = Realtime::new(config, self.headers.clone(), auth.clone());
            if realtime.config().subscribe_all_models {
                for endpoint in endpoints.keys() {
                    realtime.driver.subscribe(endpoint, Map::new());
                }
            }
            Arc::new(realtime)
        });
        let inner = Arc::new(Inner {
            connectivity: Arc::clone(&connectivity),
            realtime,
            store,
            remote,
            models,
            endpoints,
            priorities,
            options: RwLock::new(self.options),
            user_id: self.user_id,
            status,
            events,
            online,
            paused: AtomicBool::new(false),
            run_lock: tokio::sync::Mutex::new(()),
            counts_lock: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            cancel: CancellationToken::new(),
            periodic: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            crypto,
            auth,
            device_id,
        });
        inner.refresh_counts().await?;
        connectivity.start(probed, inner.cancel.child_token());
        let worker = tokio::spawn(worker(Arc::clone(&inner)));
        inner.track(worker);
        if let Some(feed) = inner.remote.change_feed() {
            let mut changes = feed.events();
            if feed.subscribe_all_models() {
                let mut endpoints: Vec<&String> = inner.endpoints.keys().collect();
                endpoints.sort();
                for endpoint in endpoints {
                    feed.subscribe(endpoint, Map::new());
                }
            }
            let task_inner = Arc::clone(&inner);
            let cancel = inner.cancel.child_token();
            let mapper = feed.event_mapper();
            let format = feed.message_format();
            let handle = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        message = changes.recv() => match message {
                            Ok(value) => realtime::apply_change_message(&task_inner, &mapper, &format, &value).await,
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
        let manager = SyncManager { inner };
        if self.auto_start {
            manager.start_periodic(true);
        }
        Ok(manager)
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
            field_keys: None,
            auto_start: false,
            token_provider: None,
            errors: Vec::new(),
        }
    }
}
