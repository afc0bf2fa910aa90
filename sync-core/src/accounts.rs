//! Several users on one device: [`SyncAccounts`] signs users in and out, each with a
//! [`SyncManager`] of their own over a store of their own ([`AccountStores`]).
//!
//! Isolation is by construction: a user's rows, queries, live queries, outbox, cursors, status
//! and metadata live in that user's store, and that user's manager sends them with that user's
//! credentials only. A store also records its owner ([`LocalStore::claim_owner`]), so even a
//! store handed to the wrong user is refused rather than read or pushed.
//!
//! Lifecycle: [`sign_in`](SyncAccounts::sign_in) opens the user's store and builds their
//! manager from the application's template; [`sign_out`](SyncAccounts::sign_out) and
//! [`switch_user`](SyncAccounts::switch_user) shut the manager down first (its background
//! tasks, realtime connection and any running sync stop between two steps, so nothing is half
//! applied; queued ops stay queued in the user's store), then, for
//! [`SignOut::WipeLocalData`], delete the user's store. A signed-out user's sync is paused:
//! nothing of theirs is sent until they sign in again.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::TokenProvider;
use crate::error::{Error, Result};
use crate::events::{SyncReport, SyncState, SyncStatus};
use crate::manager::{SyncManager, SyncManagerBuilder, SyncRun};
use crate::store::{LocalStore, StoreError};

/// Where each user's local store lives. sync-diesel's `SqliteAccountStores` keeps one SQLite
/// file per user in a directory; an application can implement this for other layouts (a
/// Postgres schema per user, per-user encryption keys).
#[async_trait]
pub trait AccountStores: Send + Sync + fmt::Debug + 'static {
    /// Opens `user`'s store, creating it when the user has none.
    async fn open(&self, user: &str) -> std::result::Result<Arc<dyn LocalStore>, StoreError>;

    /// Deletes `user`'s store and everything in it. Called only while no manager of the user
    /// runs; deleting a store that does not exist is not an error.
    async fn wipe(&self, user: &str) -> std::result::Result<(), StoreError>;

    /// True if `user` has a store (signed in at least once and not wiped since).
    async fn exists(&self, user: &str) -> std::result::Result<bool, StoreError>;
}

/// How a user proves who they are to the remote, applied to the manager the template builds.
#[derive(Clone, Default)]
pub struct Credentials {
    headers: Vec<(String, String)>,
    provider: Option<Arc<dyn TokenProvider>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values are secrets: only their names are shown.
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Credentials")
            .field("headers", &names)
            .field("token_provider", &self.provider.is_some())
            .finish()
    }
}

impl Credentials {
    /// No credentials of its own: whatever the template sets.
    pub fn none() -> Credentials {
        Credentials::default()
    }

    /// `Authorization: Bearer {token}` on every request of the user's manager.
    pub fn bearer(token: impl AsRef<str>) -> Credentials {
        Credentials::none().header("Authorization", format!("Bearer {}", token.as_ref()))
    }

    /// A header on every request of the user's manager (other auth schemes, API keys).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Credentials {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Expiring bearer tokens from `provider` (see
    /// [`SyncManagerBuilder::token_provider`]).
    pub fn token_provider(provider: impl TokenProvider) -> Credentials {
        Credentials {
            headers: Vec::new(),
            provider: Some(Arc::new(provider)),
        }
    }

    fn apply(&self, mut builder: SyncManagerBuilder) -> SyncManagerBuilder {
        for (name, value) in &self.headers {
            builder = builder.header(name.clone(), value.clone());
        }
        if let Some(provider) = &self.provider {
            builder = builder.token_provider_shared(Arc::clone(provider));
        }
        builder
    }
}

/// What [`SyncAccounts::sign_out`] does with the user's local data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignOut {
    /// Keep the user's store (rows, queued changes, cursors) for their next sign-in.
    KeepLocalData,
    /// Delete the user's store, queued changes included.
    WipeLocalData,
}

type Template = dyn Fn(&str) -> SyncManagerBuilder + Send + Sync;

/// Signs users in and out on one device, each with their own [`SyncManager`] and store.
/// Cheap to clone.
///
/// ```no_run
/// # async fn demo(stores: impl sync_core::AccountStores) -> sync_core::Result<()> {
/// use sync_core::{Credentials, SignOut, SyncAccounts, SyncManager};
/// let accounts = SyncAccounts::new(stores, |_user| {
///     SyncManager::builder().base_url("http://127.0.0.1:8080") // .model::<Todo>() ...
/// });
/// let alice = accounts.sign_in("alice", Credentials::bearer("alice-token")).await?;
/// // ... alice works, offline or not ...
/// accounts.switch_user("bob", Credentials::bearer("bob-token")).await?; // alice's manager stops
/// accounts.sign_out(SignOut::WipeLocalData).await?; // bob's store is deleted
/// # drop(alice); Ok(()) }
/// ```
#[derive(Clone)]
pub struct SyncAccounts {
    inner: Arc<AccountsInner>,
}

struct AccountsInner {
    stores: Arc<dyn AccountStores>,
    template: Box<Template>,
    /// Signed-in users; held across a whole sign-in, sign-out or switch.
    sessions: tokio::sync::Mutex<BTreeMap<String, Session>>,
    /// Per-user status, kept across sign-ins so a listener can subscribe before and stay after.
    statuses: Mutex<HashMap<String, watch::Sender<SyncStatus>>>,
    current: watch::Sender<Option<String>>,
}

struct Session {
    manager: SyncManager,
    /// Copies the manager's status into the user's long-lived status channel.
    forward: JoinHandle<()>,
}

impl fmt::Debug for SyncAccounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncAccounts")
            .field("stores", &self.inner.stores)
            .field("current", &*self.inner.current.borrow())
            .finish_non_exhaustive()
    }
}

fn signed_out_status() -> SyncStatus {
    SyncStatus {
        paused: true,
        state: SyncState::Paused,
        ..SyncStatus::default()
    }
}

impl SyncAccounts {
    /// Accounts whose stores come from `stores` and whose managers `template` configures
    /// (remote, models, options, websocket...). Each sign-in then sets the user's own store and
    /// user id (replacing any the template set) and adds the user's credentials.
    pub fn new(
        stores: impl AccountStores,
        template: impl Fn(&str) -> SyncManagerBuilder + Send + Sync + 'static,
    ) -> SyncAccounts {
        let (current, _) = watch::channel(None);
        SyncAccounts {
            inner: Arc::new(AccountsInner {
                stores: Arc::new(stores),
                template: Box::new(template),
                sessions: tokio::sync::Mutex::new(BTreeMap::new()),
                statuses: Mutex::new(HashMap::new()),
                current,
            }),
        }
    }

    /// Signs `user` in and makes them the current user: opens their store (creating it on
    /// first sign-in), builds their manager and returns it. Signing in a user who is already
    /// signed in replaces their manager (new credentials); other signed-in users stay signed
    /// in (see [`switch_user`](Self::switch_user) to sign the current one out).
    pub async fn sign_in(&self, user: &str, credentials: Credentials) -> Result<SyncManager> {
        check_user(user)?;
        let mut sessions = self.inner.sessions.lock().await;
        self.sign_in_locked(&mut sessions, user, &credentials).await
    }

    /// Signs the current user out keeping their data, then signs `user` in, as one step for
    /// other callers. The old user's manager is shut down first: a sync or realtime session of
    /// theirs stops between two steps (nothing half applied, their queue kept), and nothing of
    /// theirs is sent after.
    pub async fn switch_user(&self, user: &str, credentials: Credentials) -> Result<SyncManager> {
        check_user(user)?;
        let mut sessions = self.inner.sessions.lock().await;
        let current = self.inner.current.borrow().clone();
        if let Some(current) = current.filter(|c| c != user) {
            self.inner.current.send_replace(None);
            if let Some(old) = sessions.remove(&current) {
                self.close(&current, old).await?;
            }
        }
        self.sign_in_locked(&mut sessions, user, &credentials).await
    }

    async fn sign_in_locked(
        &self,
        sessions: &mut BTreeMap<String, Session>,
        user: &str,
        credentials: &Credentials,
    ) -> Result<SyncManager> {
        if let Some(old) = sessions.remove(user) {
            self.close(user, old).await?;
        }
        let manager = self.open(user, credentials).await?;
        let forward = self.forward_status(user, &manager);
        sessions.insert(
            user.to_owned(),
            Session {
                manager: manager.clone(),
                forward,
            },
        );
        self.inner.current.send_replace(Some(user.to_owned()));
        Ok(manager)
    }

    /// Signs the current user out (a no-op when nobody is signed in).
    pub async fn sign_out(&self, mode: SignOut) -> Result<()> {
        let current = self.inner.current.borrow().clone();
        match current {
            Some(user) => self.sign_out_user(&user, mode).await,
            None => Ok(()),
        }
    }

    /// Signs `user` out: their manager is shut down (sync paused, nothing more sent) and, with
    /// [`SignOut::WipeLocalData`], their store is deleted, also when they were not signed in.
    pub async fn sign_out_user(&self, user: &str, mode: SignOut) -> Result<()> {
        check_user(user)?;
        let mut sessions = self.inner.sessions.lock().await;
        if let Some(session) = sessions.remove(user) {
            self.close(user, session).await?;
        }
        self.inner.current.send_if_modified(|c| {
            if c.as_deref() == Some(user) {
                *c = None;
                true
            } else {
                false
            }
        });
        if mode == SignOut::WipeLocalData {
            self.inner.stores.wipe(user).await.map_err(Error::Store)?;
        }
        Ok(())
    }

    /// The current user, if one is signed in.
    pub fn current_user(&self) -> Option<String> {
        self.inner.current.borrow().clone()
    }

    /// The current user, as a watch channel (`None` while nobody is signed in).
    pub fn watch_current_user(&self) -> watch::Receiver<Option<String>> {
        self.inner.current.subscribe()
    }

    /// The current user's manager.
    pub async fn current(&self) -> Option<SyncManager> {
        let user = self.current_user()?;
        self.manager(&user).await
    }

    /// The manager of a signed-in user.
    pub async fn manager(&self, user: &str) -> Option<SyncManager> {
        let sessions = self.inner.sessions.lock().await;
        sessions.get(user).map(|s| s.manager.clone())
    }

    /// The users signed in now, in order.
    pub async fn signed_in(&self) -> Vec<String> {
        self.inner.sessions.lock().await.keys().cloned().collect()
    }

    /// Runs a sync of `user`'s data with `user`'s manager; an error if they are signed out
    /// (a signed-out user's sync is paused).
    pub async fn synchronize_user(&self, user: &str, run: SyncRun) -> Result<SyncReport> {
        self.signed_in_manager(user).await?.synchronize(run).await
    }

    /// `user`'s status as a watch channel that lives across sign-ins: the manager's status
    /// while they are signed in, [`SyncState::Paused`] while they are not.
    pub fn status_for_user(&self, user: &str) -> watch::Receiver<SyncStatus> {
        self.status_sender(user).subscribe()
    }

    /// `user`'s local sync metadata (see [`SyncManager::sync_metadata`]); they must be
    /// signed in.
    pub async fn sync_metadata(&self, user: &str) -> Result<crate::SyncMetadata> {
        self.signed_in_manager(user).await?.sync_metadata().await
    }

    /// Clears `user`'s local sync metadata: their next sync is a full one (see
    /// [`SyncManager::clear_sync_metadata`]); they must be signed in.
    pub async fn clear_sync_metadata(&self, user: &str) -> Result<()> {
        self.signed_in_manager(user)
            .await?
            .clear_sync_metadata()
            .await
    }

    async fn signed_in_manager(&self, user: &str) -> Result<SyncManager> {
        self.manager(user).await.ok_or_else(|| Error::NotSignedIn {
            user: user.to_owned(),
        })
    }

    /// True if `user` has local data (a store) on this device.
    pub async fn has_local_data(&self, user: &str) -> Result<bool> {
        check_user(user)?;
        self.inner.stores.exists(user).await.map_err(Error::Store)
    }

    fn status_sender(&self, user: &str) -> watch::Sender<SyncStatus> {
        let mut statuses = self
            .inner
            .statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        statuses
            .entry(user.to_owned())
            .or_insert_with(|| watch::channel(signed_out_status()).0)
            .clone()
    }

    async fn open(&self, user: &str, credentials: &Credentials) -> Result<SyncManager> {
        let store = self.inner.stores.open(user).await.map_err(Error::Store)?;
        let builder = credentials
            .apply((self.inner.template)(user))
            .store_arc(store)
            .user_id(user);
        builder.build().await
    }

    fn forward_status(&self, user: &str, manager: &SyncManager) -> JoinHandle<()> {
        let sender = self.status_sender(user);
        let mut source = manager.status();
        sender.send_replace(source.borrow_and_update().clone());
        tokio::spawn(async move {
            while source.changed().await.is_ok() {
                let status = source.borrow_and_update().clone();
                sender.send_replace(status);
            }
        })
    }

    async fn close(&self, user: &str, session: Session) -> Result<()> {
        let result = session.manager.shutdown().await;
        session.forward.abort();
        self.status_sender(user).send_modify(|s| {
            s.paused = true;
            s.syncing = false;
            s.progress = None;
            s.state = SyncState::Paused;
        });
        result
    }
}

fn check_user(user: &str) -> Result<()> {
    if user.is_empty() || user.chars().any(char::is_control) {
        return Err(Error::Config(format!(
            "user id {user:?} is empty or has control characters"
        )));
    }
    Ok(())
}
