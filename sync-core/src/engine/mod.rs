//! The sync engine behind [`SyncManager`](crate::SyncManager): its shared state ([`Inner`]),
//! sync runs under the run lock, and the stages of the data flow, one file each:
//!
//! - `write.rs`: a local save (row + op in one store transaction);
//! - `push.rs`: ready ops -> claimed chunks -> remote -> acknowledgements;
//! - `retry.rs`: what a failed push does to its ops (the one disposition table);
//! - `pull.rs`: cursor pages from the remote;
//! - `apply.rs`: remote records (pulls, realtime, reads) into the store;
//! - `conflict.rs`: the conflict decision (pure) and writing its resolution;
//! - `read.rs`: remote reads that refresh local rows;
//! - `worker.rs`: the background task (debounced push, retry timer, reconnects);
//! - this file: state, status and events, task tracking, and `run`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use chrono::Utc;
use serde_json::Value;
use sync_schema::ModelSchema;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connectivity::Connectivity;
use crate::error::{Error, Result};
use crate::events::{SyncEvent, SyncProgress, SyncReport, SyncState, SyncStatus};
use crate::model::SyncModel;
use crate::options::{SyncDirection, SyncOptions, WriteOptions};
use crate::query::Query;
use crate::realtime::Realtime;
use crate::remote::{ModelRoute, Remote};
use crate::store::{LocalStore, StoreQuery, StoreResult, StoredRecord};

mod apply;
mod conflict;
mod pull;
mod push;
mod read;
mod retry;
pub(crate) mod stats;
mod worker;
mod write;

pub(crate) use self::apply::merge_remote;
pub(crate) use self::pull::normalize_records;
pub(crate) use self::worker::worker;

pub(crate) struct Inner {
    /// Told what the manager sees of the remote; kept alive so its state channel stays open.
    pub(crate) connectivity: Arc<dyn Connectivity>,
    pub(crate) realtime: Option<Arc<Realtime>>,
    pub(crate) store: Arc<dyn LocalStore>,
    pub(crate) remote: Arc<dyn Remote>,
    pub(crate) models: HashMap<&'static str, Arc<ModelRoute>>,
    pub(crate) endpoints: HashMap<String, &'static str>,
    /// Queue priority of each model's changes (`ModelConfig::priority`, else the derive's).
    pub(crate) priorities: HashMap<&'static str, i32>,
    pub(crate) options: RwLock<SyncOptions>,
    pub(crate) user_id: Option<String>,
    pub(crate) status: watch::Sender<SyncStatus>,
    pub(crate) events: broadcast::Sender<SyncEvent>,
    pub(crate) online: watch::Receiver<bool>,
    pub(crate) paused: AtomicBool,
    pub(crate) run_lock: tokio::sync::Mutex<()>,
    /// Held from reading the outbox counts to publishing them in the status, so that a read
    /// taken before a change cannot be published after the read taken after it.
    pub(crate) counts_lock: tokio::sync::Mutex<()>,
    pub(crate) wake: Notify,
    pub(crate) cancel: CancellationToken,
    pub(crate) periodic: Mutex<Option<CancellationToken>>,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// End-to-end field encryption, when a model has `#[sync(encrypted)]` fields.
    pub(crate) crypto: Option<Arc<crate::crypto::FieldCrypto>>,
    /// Tokens from the builder's token provider, shared with the remote and the WebSocket.
    pub(crate) auth: Option<Arc<crate::auth::TokenAuth>>,
    /// This device's id (generated once per store), sent as `X-Sync-Device`.
    pub(crate) device_id: String,
}

/// Runs a store call on the blocking pool. Generic over the store so that a test can run it
/// without one; the engine's store is an `Arc<dyn LocalStore>`.
pub(crate) async fn blocking<S, R, F>(store: &Arc<S>, f: F) -> Result<R>
where
    S: ?Sized + Send + Sync + 'static,
    R: Send + 'static,
    F: FnOnce(&S) -> StoreResult<R> + Send + 'static,
{
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(&*store))
        .await
        .map_err(|source| Error::Task {
            task: "a store call on the blocking pool",
            source,
        })?
        .map_err(Error::Store)
}

pub(crate) fn decode<T: SyncModel>(record: StoredRecord) -> Result<T> {
    serde_json::from_value(Value::Object(record.data)).map_err(|source| Error::Decode {
        model: T::MODEL_TYPE,
        id: record.id,
        source,
    })
}

pub(crate) fn store_query<T>(query: &Query<T>) -> StoreQuery {
    StoreQuery {
        filter: query.filter_expr().cloned(),
        order: query.order().to_vec(),
        limit: query.limit_value(),
        offset: query.offset_value(),
        include_deleted: false,
    }
}

/// A spawned task that is cancelled when its handle is dropped, so that a run stopped
/// half-way (an error, a shutdown) leaves nothing running.
pub(crate) struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) struct RunSpec {
    pub(crate) direction: SyncDirection,
    pub(crate) force_full: bool,
    pub(crate) batch_size: Option<usize>,
    pub(crate) models: Option<Vec<Arc<ModelRoute>>>,
}

impl Inner {
    pub(crate) fn options(&self) -> SyncOptions {
        self.options.read().map(|o| o.clone()).unwrap_or_default()
    }

    /// The remote refused the credentials and no fresh token was had since.
    pub(crate) fn needs_auth(&self) -> bool {
        self.auth.as_ref().is_some_and(|a| a.needs_auth())
    }

    pub(crate) fn is_online(&self) -> bool {
        *self.online.borrow()
    }

    /// Online, or, with a connectivity whose offline state is a belief
    /// ([`Connectivity::recheck_when_offline`]), online after asking the remote's health now.
    pub(crate) async fn confirm_online(&self) -> bool {
        if self.is_online() {
            return true;
        }
        if !self.connectivity.recheck_when_offline() {
            return false;
        }
        // The remote is observed: an answer turns the state online.
        let answered = self.remote.health().await;
        tracing::debug!(answered = answered.is_ok(), "rechecked an offline state");
        self.is_online()
    }

    pub(crate) fn track(&self, handle: JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|h| !h.is_finished());
            tasks.push(handle);
        }
    }

    pub(crate) fn emit(&self, event: SyncEvent) {
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
                tracing::debug!(error = %crate::error::chain_text(&err), "catch-up pull after connecting failed");
            }
        });
        self.track(handle);
    }

    pub(crate) fn route(&self, schema: &'static ModelSchema) -> Result<Arc<ModelRoute>> {
        self.models
            .get(schema.model_type)
            .cloned()
            .ok_or(Error::NotRegistered {
                model: schema.model_type,
                struct_name: schema.struct_name,
            })
    }

    /// The queue priority of a write of `model_type`: the write's own, else the model's.
    pub(crate) fn priority(&self, model_type: &str, write: WriteOptions) -> i32 {
        write
            .priority
            .unwrap_or_else(|| self.priorities.get(model_type).copied().unwrap_or(0))
    }

    pub(crate) fn after_local_write(&self) {
        if self.options().auto_sync {
            self.wake.notify_one();
        }
    }

    pub(crate) async fn refresh_counts(&self) -> Result<()> {
        let _counts = self.counts_lock.lock().await;
        let counts = blocking(&self.store, |s| s.counts()).await?;
        self.publish_counts(counts);
        Ok(())
    }

    /// Publishes outbox counts in the status (when they changed). The caller holds
    /// `counts_lock` from reading them to here.
    pub(crate) fn publish_counts(&self, counts: crate::store::OutboxCounts) {
        self.status.send_if_modified(|s| {
            let changed = s.pending_changes != counts.pending
                || s.failed_changes != counts.failed
                || s.quarantined != counts.quarantined;
            s.pending_changes = counts.pending;
            s.failed_changes = counts.failed;
            s.quarantined = counts.quarantined;
            changed
        });
    }

    /// One sync run under the run lock.
    pub(crate) async fn run(self: &Arc<Self>, spec: RunSpec) -> Result<SyncReport> {
        if !self.paused.load(Ordering::SeqCst) {
            self.confirm_online().await;
        }
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
        if let Some(auth) = self.auth.as_ref().filter(|a| a.needs_auth()) {
            // Refused before: a fresh token first, or nothing is sent.
            if let Err(err) = auth.force_renew().await {
                self.status.send_modify(|s| {
                    s.state = SyncState::NeedsAuth;
                    s.last_error = Some(err.to_string());
                });
                return Err(Error::NeedsAuth {
                    reason: err.to_string(),
                });
            }
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
            s.state = SyncState::Syncing;
        });
        self.emit(SyncEvent::SyncStarted);

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
        let needs_auth = self.needs_auth();
        if needs_auth {
            // The run stopped because the credentials were refused: say so, not how.
            outcome = outcome.map_err(|err| Error::NeedsAuth {
                reason: crate::error::chain_text(&err),
            });
        }
        let counts_guard = self.counts_lock.lock().await;
        let counts = blocking(&self.store, |s| s.counts()).await.ok();
        match &outcome {
            Ok(()) => {
                self.status.send_modify(|s| {
                    s.syncing = false;
                    s.progress = None;
                    s.last_sync_time = Some(Utc::now());
                    s.state = if needs_auth {
                        SyncState::NeedsAuth
                    } else if report.failed == 0 && report.retried == 0 {
                        SyncState::Completed
                    } else {
                        SyncState::Failed
                    };
                    // The last error stays while any op it failed is still failed.
                    if report.failed == 0 && counts.is_none_or(|c| c.failed == 0) {
                        s.last_error = None;
                    }
                    if let Some(c) = counts {
                        s.pending_changes = c.pending;
                        s.failed_changes = c.failed;
                    }
                });
                drop(counts_guard);
                self.emit(SyncEvent::SyncCompleted {
                    report: report.clone(),
                });
            }
            Err(err) => {
                let message = crate::error::chain_text(err);
                self.status.send_modify(|s| {
                    s.syncing = false;
                    s.progress = None;
                    s.last_error = Some(message.clone());
                    s.state = if needs_auth {
                        SyncState::NeedsAuth
                    } else {
                        SyncState::Failed
                    };
                    if let Some(c) = counts {
                        s.pending_changes = c.pending;
                        s.failed_changes = c.failed;
                    }
                });
                drop(counts_guard);
                self.emit(SyncEvent::SyncFailed {
                    error: message,
                    report: report.clone(),
                });
            }
        }
        let pulled: Vec<&'static str> = if pulls {
            routes.iter().map(|r| r.schema.model_type).collect()
        } else {
            Vec::new()
        };
        let error = outcome.as_ref().err().map(|e| crate::error::chain_text(e));
        self.record_run(&report, error, &pulled).await;
        if report.retried > 0 {
            // Let the worker re-arm its retry timer.
            self.wake.notify_one();
        }
        outcome.map(|()| report)
    }

    pub(crate) fn progress(&self, done: u64, more_total: u64) {
        self.status.send_modify(|s| {
            let p = s.progress.get_or_insert_with(SyncProgress::default);
            p.done = p.done.saturating_add(done);
            p.total = p.total.saturating_add(more_total);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards against: a store call that panics on the blocking pool coming back as text only,
    /// without the `JoinError` that says it panicked and carries the payload.
    #[tokio::test]
    async fn a_panicking_store_call_keeps_its_join_error_as_the_source() {
        let store = Arc::new(());
        let err = blocking(&store, |_: &()| -> StoreResult<()> {
            panic!("the store broke")
        })
        .await
        .unwrap_err();
        let Error::Task { source, .. } = &err else {
            panic!("expected Error::Task, got {err:?}");
        };
        assert!(source.is_panic(), "{source:?}");
        let chained = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<tokio::task::JoinError>())
            .expect("the JoinError is the source");
        assert!(chained.is_panic());
        let text = crate::error::chain_text(&err);
        assert!(
            text.starts_with("background task failed: ") && text.contains("panicked"),
            "{text}"
        );
    }
}
