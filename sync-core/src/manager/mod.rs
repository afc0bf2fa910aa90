//! [`SyncManager`]: the public facade over the engine (`crate::engine`). The facade's
//! methods are grouped by concern: writes (`write.rs`), reads (`read.rs`), sync control
//! (this file), realtime (`realtime.rs`), live queries (`live.rs`); the builder is
//! `builder.rs`.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub(crate) use crate::engine::Inner;
use crate::engine::{blocking, RunSpec};
use crate::error::{Error, Result};
use crate::events::{SyncEvent, SyncReport, SyncStatus};
use crate::model::SyncModel;
use crate::options::{SyncDirection, SyncOptions};
use crate::remote::ModelRoute;
use crate::store::{LocalStore, OutboxOp, RecordState};

mod builder;
mod live;
mod metadata;
mod quarantine;
mod read;
mod websocket;
mod write;

pub use self::builder::{ModelConfig, SyncManagerBuilder};
pub use self::live::LiveQuery;
pub use self::metadata::{
    EntityMetadata, MetadataComparison, RemoteSyncMetadata, SyncMetadata, VerifyReport,
};
pub use self::websocket::RealtimeHandle;

/// What a [`SyncManager::synchronize`] run does.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SyncRun {
    /// Order of the halves.
    pub direction: SyncDirection,
    /// Forget the pull cursors first and pull everything.
    pub force_full: bool,
    /// Ops per push request and records per pull page for this run (default: the options').
    pub batch_size: Option<usize>,
}

impl SyncRun {
    /// A run in `direction`, from the stored cursors, with the options' batch size.
    pub fn new(direction: SyncDirection) -> Self {
        SyncRun {
            direction,
            ..SyncRun::default()
        }
    }

    /// Forget the pull cursors first and pull everything.
    #[must_use]
    pub fn force_full(mut self) -> Self {
        self.force_full = true;
        self
    }

    /// Ops per push request and records per pull page for this run.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = Some(batch_size);
        self
    }
}

/// Local-first CRUD over registered models, and the sync engine that pushes
/// queued changes and pulls remote ones. Cheap to clone.
#[derive(Clone)]
pub struct SyncManager {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for SyncManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncManager")
            .field("models", &self.inner.models.keys().collect::<Vec<_>>())
            .field("status", &*self.inner.status.borrow())
            .finish_non_exhaustive()
    }
}

impl SyncManager {
    pub(crate) fn route<T: SyncModel>(&self) -> Result<Arc<ModelRoute>> {
        self.inner.route(T::SCHEMA)
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.cancel.is_cancelled() {
            Err(Error::Shutdown)
        } else {
            Ok(())
        }
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
    ///
    /// A run that cannot happen now, because sync is [paused](Self::pause) or the remote is
    /// offline, is not an error: it returns `Ok` with [`SyncReport::skipped`] set and nothing
    /// done. Check [`SyncReport::is_success`] (false when skipped or when an op failed) rather
    /// than only the `Result`:
    ///
    /// ```no_run
    /// # async fn f(sync: &sync_core::SyncManager) -> sync_core::Result<()> {
    /// let report = sync.sync_all().await?;
    /// if !report.is_success() {
    ///     eprintln!("not synced: skipped {}, {} changes refused", report.skipped, report.failed);
    /// }
    /// # Ok(()) }
    /// ```
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

    /// Syncs every `sync_interval` until [`stop_periodic_sync`](Self::stop_periodic_sync); the
    /// first run comes after one interval. Calling it again restarts the timer.
    /// [`SyncManagerBuilder::auto_start`] starts it when the manager is built, with a first
    /// run at once.
    pub fn start_periodic_sync(&self) {
        self.start_periodic(false);
    }

    /// Periodic sync; `now`: the first run at once rather than after one interval.
    pub(crate) fn start_periodic(&self, now: bool) {
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
            let mut wait = !now;
            loop {
                let interval = inner.options().sync_interval;
                if wait {
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(interval) => {}
                    }
                }
                wait = true;
                if token.is_cancelled() {
                    break;
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
                    tracing::warn!(error = %crate::error::chain_text(&err), "periodic sync failed");
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
        self.inner.status.send_modify(|s| {
            s.paused = true;
            s.state = crate::events::SyncState::Paused;
        });
    }

    /// Resumes sync and pushes what queued up meanwhile.
    pub fn resume(&self) {
        self.inner.paused.store(false, Ordering::SeqCst);
        self.inner.status.send_modify(|s| {
            s.paused = false;
            if s.state == crate::events::SyncState::Paused {
                s.state = crate::events::SyncState::Idle;
            }
        });
        self.inner.wake.notify_one();
    }

    /// Asks the token provider (see
    /// [`SyncManagerBuilder::token_provider`](crate::SyncManagerBuilder::token_provider)) for
    /// a fresh token and, when it gives one, lets automatic sync go on (a state of
    /// [`NeedsAuth`](crate::SyncState::NeedsAuth) turns back to idle). An error with no
    /// provider, or when the provider fails.
    pub async fn refresh_credentials(&self) -> Result<()> {
        self.check_open()?;
        let auth = self.inner.auth.as_ref().ok_or_else(|| {
            Error::Config("no token provider: see SyncManagerBuilder::token_provider".into())
        })?;
        match auth.force_renew().await {
            Ok(_) => {
                auth.answered(false);
                self.inner.status.send_modify(|s| {
                    if s.state == crate::events::SyncState::NeedsAuth {
                        s.state = crate::events::SyncState::Idle;
                    }
                });
                self.inner.wake.notify_one();
                Ok(())
            }
            Err(err) => {
                self.inner
                    .status
                    .send_modify(|s| s.state = crate::events::SyncState::NeedsAuth);
                Err(Error::NeedsAuth {
                    reason: err.to_string(),
                })
            }
        }
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
        let id2 = id.to_owned();
        let mut state =
            blocking(&self.inner.store, move |s| s.record_state(T::SCHEMA, &id2)).await?;
        if let Some(crypto) = &self.inner.crypto {
            state.decryption_error = crypto.failure_of(T::MODEL_TYPE, id).await;
        }
        Ok(state)
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

    /// The store the manager uses.
    pub fn store(&self) -> Arc<dyn LocalStore> {
        Arc::clone(&self.inner.store)
    }

    /// The model type registered for a wire collection (endpoint).
    pub fn model_type_for_endpoint(&self, endpoint: &str) -> Option<&'static str> {
        self.inner.endpoints.get(endpoint).copied()
    }
}
