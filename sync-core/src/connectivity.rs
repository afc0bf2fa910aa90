//! Whether the remote can be reached.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::remote::{
    ChangeFeed, ModelRoute, PushItem, PushOutcome, Remote, RemoteError, RemotePage, Traffic,
};
use crate::store::RemoteRecord;

/// Tells the engine whether the remote can be reached. Going from offline to
/// online triggers a sync; sync attempts while offline are skipped and do not
/// count as failures.
pub trait Connectivity: Send + Sync + fmt::Debug + 'static {
    /// A receiver of the online state; the current value is the state now.
    fn subscribe(&self) -> watch::Receiver<bool>;

    /// Starts whatever background work the implementation needs (a probe).
    /// Called once by the manager; stop it with `cancel`.
    fn start(&self, remote: Arc<dyn Remote>, cancel: CancellationToken) {
        let _ = (remote, cancel);
    }

    /// What the manager saw of the remote: every request's outcome, and the realtime
    /// socket opening and closing. The default ignores it; [`RemoteConnectivity`] (the
    /// builder's default) follows it.
    fn observe(&self, observation: Observation) {
        let _ = observation;
    }

    /// Whether an offline state is only a belief that a request may correct. When it is, a
    /// sync run or a remote-first write that finds the state offline asks the remote's health
    /// first and goes ahead if it answers (the answer turns the state online). True for
    /// [`RemoteConnectivity`]; false by default, so an offline state the application set
    /// ([`ManualConnectivity`]) is obeyed without a request.
    fn recheck_when_offline(&self) -> bool {
        false
    }
}

#[allow(dead_code)]
fn _object_safe(_: &dyn Connectivity) {}

/// What the manager saw of the remote, told to [`Connectivity::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Observation {
    /// The remote answered (a refusal is an answer too), or the realtime socket opened.
    Answered,
    /// A request failed as an outage (not reached, timed out, 5xx, 408, 429), or the realtime
    /// socket was lost: the remote may be unreachable.
    Failed,
}

impl Observation {
    /// The observation a request's outcome makes; `None` when no request was made
    /// (a configuration error).
    pub(crate) fn of<T>(result: &Result<T, RemoteError>) -> Option<Observation> {
        match result {
            Ok(_) | Err(RemoteError::Refused { .. } | RemoteError::BadResponse { .. }) => {
                Some(Observation::Answered)
            }
            Err(RemoteError::Unavailable { .. }) => Some(Observation::Failed),
            Err(_) => None,
        }
    }
}

/// Connectivity the application sets (from the platform's network callbacks,
/// or a toggle in tests).
#[derive(Debug, Clone)]
pub struct ManualConnectivity {
    tx: Arc<watch::Sender<bool>>,
}

impl ManualConnectivity {
    /// Starts in the given state.
    pub fn new(online: bool) -> Self {
        ManualConnectivity {
            tx: Arc::new(watch::channel(online).0),
        }
    }

    /// Sets the state.
    pub fn set_online(&self, online: bool) {
        set(&self.tx, online);
    }

    /// The state now.
    pub fn is_online(&self) -> bool {
        *self.tx.borrow()
    }
}

impl Connectivity for ManualConnectivity {
    fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
}

fn set(tx: &watch::Sender<bool>, online: bool) {
    tx.send_if_modified(|state| {
        let changed = *state != online;
        *state = online;
        changed
    });
}

/// Probes the remote's health endpoint on an interval.
#[derive(Debug, Clone)]
pub struct ProbeConnectivity {
    interval: Duration,
    tx: Arc<watch::Sender<bool>>,
}

impl ProbeConnectivity {
    /// Probes every `interval`; assumed online until the first probe says otherwise.
    pub fn new(interval: Duration) -> Self {
        ProbeConnectivity {
            interval,
            tx: Arc::new(watch::channel(true).0),
        }
    }
}

impl Connectivity for ProbeConnectivity {
    fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    fn start(&self, remote: Arc<dyn Remote>, cancel: CancellationToken) {
        let tx = Arc::clone(&self.tx);
        let interval = self.interval;
        tokio::spawn(async move {
            loop {
                // Cancellable mid-probe too, so a shutdown never waits on a slow health check.
                let online = tokio::select! {
                    () = cancel.cancelled() => break,
                    health = remote.health() => health.is_ok(),
                };
                set(&tx, online);
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
    }
}

/// The builder's default: the remote is reachable while it answers. It follows the outcome of
/// every request the manager makes and a probe of the remote's health:
///
/// - a request answered (any answer, a refusal too) or the realtime socket opening: online;
/// - a request failing as an outage (not reached, timed out, 5xx, 408, 429) or the realtime
///   socket lost: the health endpoint is probed at once, and the probe decides (a server that
///   answers 503 to one push but whose health is fine stays online);
/// - a probe every `interval` (30 s) while online, so an idle manager notices an outage too;
/// - while offline, a probe after `retry_min` (250 ms), doubling up to `retry_max` (5 s), with
///   jitter; the first that is answered turns it online, which syncs;
/// - a sync run or a remote-first write (`SaveStrategy::RequireRemote`,
///   `DeleteStrategy::WaitForRemote`) that finds it offline asks the health endpoint first
///   ([`Connectivity::recheck_when_offline`]), so the application's own call is not refused
///   on a belief older than the last probe.
///
/// A probe counts as answered when the health request gets any HTTP answer but 5xx, 408 or 429
/// (a REST API without a health endpoint answers 404, and is reachable).
#[derive(Debug, Clone)]
pub struct RemoteConnectivity {
    interval: Duration,
    retry_min: Duration,
    retry_max: Duration,
    tx: Arc<watch::Sender<bool>>,
    probe_now: Arc<Notify>,
    /// Counts `Answered` observations, so that a probe that failed while an answer came
    /// (the server returning mid-probe) does not turn the state offline after it.
    answers: Arc<AtomicU64>,
}

impl Default for RemoteConnectivity {
    fn default() -> Self {
        RemoteConnectivity::new()
    }
}

impl RemoteConnectivity {
    /// Probes every 30 s while online, and from 250 ms up to every 5 s while offline. Assumed
    /// online until the first probe (at start) or request says otherwise.
    pub fn new() -> Self {
        RemoteConnectivity {
            interval: Duration::from_secs(30),
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(5),
            tx: Arc::new(watch::channel(true).0),
            probe_now: Arc::new(Notify::new()),
            answers: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How often the health endpoint is probed while online.
    #[must_use]
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The wait before the first probe after going offline, doubling up to `max`.
    #[must_use]
    pub fn retry_delays(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max.max(min);
        self
    }

    /// The state now.
    pub fn is_online(&self) -> bool {
        *self.tx.borrow()
    }

    /// The wait before offline probe `failures` (1-based): doubling with full jitter, never
    /// below a tenth of the step.
    fn retry_delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let ceiling = self
            .retry_min
            .saturating_mul(1u32 << exp)
            .min(self.retry_max);
        ceiling.mul_f64(0.1 + 0.9 * fastrand::f64())
    }
}

impl Connectivity for RemoteConnectivity {
    fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    fn start(&self, remote: Arc<dyn Remote>, cancel: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut failures: u32 = 0;
            loop {
                let answers = this.answers.load(Ordering::SeqCst);
                let answered = tokio::select! {
                    () = cancel.cancelled() => break,
                    health = remote.health() => !matches!(health, Err(RemoteError::Unavailable { .. })),
                } || this.answers.load(Ordering::SeqCst) != answers;
                set(&this.tx, answered);
                failures = if answered {
                    0
                } else {
                    failures.saturating_add(1)
                };
                let wait = if answered {
                    this.interval
                } else {
                    this.retry_delay(failures)
                };
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                    () = this.probe_now.notified() => {}
                }
            }
        });
    }

    fn recheck_when_offline(&self) -> bool {
        true
    }

    fn observe(&self, observation: Observation) {
        match observation {
            Observation::Answered => {
                self.answers.fetch_add(1, Ordering::SeqCst);
                set(&self.tx, true);
            }
            Observation::Failed => self.probe_now.notify_one(),
        }
    }
}

/// The manager's remote as the engine sees it: every request's outcome is told to the
/// connectivity ([`Connectivity::observe`]).
#[derive(Debug)]
pub(crate) struct ObservedRemote {
    pub(crate) inner: Arc<dyn Remote>,
    pub(crate) connectivity: Arc<dyn Connectivity>,
}

impl ObservedRemote {
    fn seen<T>(&self, result: Result<T, RemoteError>) -> Result<T, RemoteError> {
        if let Some(observation) = Observation::of(&result) {
            self.connectivity.observe(observation);
        }
        result
    }
}

#[async_trait]
impl Remote for ObservedRemote {
    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }

    async fn push(
        &self,
        route: &ModelRoute,
        items: &[PushItem],
    ) -> Result<(Vec<PushOutcome>, Traffic), RemoteError> {
        self.seen(self.inner.push(route, items).await)
    }

    async fn pull(
        &self,
        route: &ModelRoute,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RemotePage, RemoteError> {
        self.seen(self.inner.pull(route, cursor, limit).await)
    }

    async fn fetch(
        &self,
        route: &ModelRoute,
        id: &str,
    ) -> Result<Option<RemoteRecord>, RemoteError> {
        self.seen(self.inner.fetch(route, id).await)
    }

    async fn fetch_page(
        &self,
        route: &ModelRoute,
        params: &[(String, String)],
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<RemotePage, RemoteError> {
        self.seen(self.inner.fetch_page(route, params, limit, offset).await)
    }

    async fn health(&self) -> Result<(), RemoteError> {
        self.seen(self.inner.health().await)
    }

    fn has_sync_metadata(&self) -> bool {
        self.inner.has_sync_metadata()
    }

    async fn sync_metadata(&self) -> Result<crate::protocol::SyncMetadataResponse, RemoteError> {
        self.seen(self.inner.sync_metadata().await)
    }

    async fn digest_page(
        &self,
        route: &ModelRoute,
        after: &str,
        limit: usize,
    ) -> Result<crate::protocol::DigestPage, RemoteError> {
        self.seen(self.inner.digest_page(route, after, limit).await)
    }

    async fn forget_device(&self, device: &str) -> Result<bool, RemoteError> {
        self.seen(self.inner.forget_device(device).await)
    }

    fn change_feed(&self) -> Option<&dyn ChangeFeed> {
        self.inner.change_feed()
    }

    fn connection_state(&self) -> Option<watch::Receiver<bool>> {
        self.inner.connection_state()
    }
}
