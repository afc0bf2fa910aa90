//! Whether the remote can be reached.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::remote::Remote;

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
}

#[allow(dead_code)]
fn _object_safe(_: &dyn Connectivity) {}

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
        self.tx.send_if_modified(|state| {
            let changed = *state != online;
            *state = online;
            changed
        });
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
                tx.send_if_modified(|state| {
                    let changed = *state != online;
                    *state = online;
                    changed
                });
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
    }
}
