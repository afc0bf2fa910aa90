//! Options of the sync engine. Every option has an effect and a test.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::store::{JsonObject, RemoteRecord, Resolution};

/// Order of the two halves of a sync run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncDirection {
    /// Push local changes, then pull remote ones.
    #[default]
    PushThenPull,
    /// Pull first, then push.
    PullThenPush,
    /// Only push.
    PushOnly,
    /// Only pull.
    PullOnly,
}

impl SyncDirection {
    pub(crate) fn pushes(self) -> bool {
        !matches!(self, SyncDirection::PullOnly)
    }
    pub(crate) fn pulls(self) -> bool {
        !matches!(self, SyncDirection::PushOnly)
    }
}

/// Where reads come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FetchStrategy {
    /// Answer from the local store now; refresh from the remote in the background.
    BackgroundSync,
    /// Ask the remote (and store what it returns); fall back to local data when it fails.
    RemoteFirst,
    /// Local data; the remote only when local has nothing.
    LocalWithRemoteFallback,
    /// Local data only (the default: reads never wait for or cause network traffic).
    #[default]
    LocalOnly,
}

/// How saves reach the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveStrategy {
    /// Store locally with a queued op; push later.
    #[default]
    OptimisticLocal,
    /// Succeed only once the remote accepted the write; otherwise keep nothing and return the error.
    RequireRemote,
}

/// How deletes reach the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeleteStrategy {
    /// Tombstone now, remote delete queued.
    #[default]
    Optimistic,
    /// Delete remotely first; delete locally only when that succeeded.
    WaitForRemote,
}

/// Options of one local write ([`SyncManager::save_with`](crate::SyncManager::save_with),
/// [`save_all_with`](crate::SyncManager::save_all_with),
/// [`delete_with`](crate::SyncManager::delete_with)).
///
/// ```
/// use sync_core::WriteOptions;
/// let urgent = WriteOptions::new().priority(10);
/// assert_eq!(urgent.priority, Some(10));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteOptions {
    /// Queue priority of the change (higher is pushed first, across models); `None` takes the
    /// model's ([`ModelConfig::priority`](crate::ModelConfig::priority), else
    /// [`SyncModel::PRIORITY`](crate::SyncModel::PRIORITY), else 0). A change folded into a
    /// record's pending op keeps the higher of the two priorities. Writes sent at once
    /// ([`SaveStrategy::RequireRemote`], [`DeleteStrategy::WaitForRemote`]) are not queued, so
    /// their priority has nothing to order.
    pub priority: Option<i32>,
}

impl WriteOptions {
    /// The model's defaults.
    pub fn new() -> Self {
        WriteOptions::default()
    }

    /// Queue priority of this write (higher is pushed first).
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }
}

/// What a conflict resolver sees.
#[derive(Debug, Clone)]
pub struct ConflictContext<'a> {
    /// Model type.
    pub model_type: &'static str,
    /// Record id.
    pub id: &'a str,
    /// The local record (`None` when it was deleted locally).
    pub local: Option<&'a JsonObject>,
    /// When the local record was last written.
    pub local_updated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The remote record (a tombstone when `remote.deleted`).
    pub remote: &'a RemoteRecord,
    /// Fields the local ops changed (wire names).
    pub changed_fields: &'a [String],
    /// Values of `changed_fields` before the local edits.
    pub base_values: &'a JsonObject,
}

/// Decides conflicts for [`ConflictStrategy::Custom`].
pub trait ConflictResolver: Send + Sync + fmt::Debug {
    /// How to settle this conflict.
    fn resolve(&self, conflict: &ConflictContext<'_>) -> Resolution;
}

#[allow(dead_code)]
fn _resolver_object_safe(_: &dyn ConflictResolver) {}

/// How conflicts between a local change and a newer remote record are settled.
#[derive(Debug, Clone, Default)]
pub enum ConflictStrategy {
    /// The remote record wins; local changes to it are dropped.
    ServerWins,
    /// The local record wins and overwrites the remote one.
    ClientWins,
    /// The record written last wins (local write time vs the server's `updated_at`); ties go to the server.
    #[default]
    LastUpdateWins,
    /// Three-way merge per field using the values before the local edit:
    /// fields only one side changed are merged; a field both sides changed
    /// goes to the side that wrote last (ties to the server).
    MergeFields,
    /// The application decides.
    Custom(Arc<dyn ConflictResolver>),
}

/// Backoff of transient failures: exponential with full jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Delay after the first failure (before jitter).
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Growth per failed attempt.
    pub multiplier: f64,
    /// Full jitter: the delay is uniform in `[0, computed]` (else exactly `computed`).
    pub jitter: bool,
    /// Transient failures after which an op moves to `failed` (`None`: retry forever).
    pub max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(500),
            max: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: true,
            max_attempts: None,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempts + 1`, given `attempts` failures so far
    /// (at least 1); a server's `Retry-After` is a floor, itself clamped to `max` so a server
    /// cannot freeze an op (a `Retry-After` of years) beyond the policy.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        let exp = attempts.saturating_sub(1).min(64) as i32;
        let factor = self.multiplier.max(1.0).powi(exp);
        let ceiling = self.base.as_secs_f64() * factor;
        let ceiling = ceiling.min(self.max.as_secs_f64()).max(0.0);
        let secs = if self.jitter {
            fastrand::f64() * ceiling
        } else {
            ceiling
        };
        let delay = Duration::from_secs_f64(secs);
        match retry_after {
            Some(floor) if floor > delay => floor.min(self.max.max(delay)),
            _ => delay,
        }
    }
}

/// Options of a [`SyncManager`](crate::SyncManager).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncOptions {
    /// Interval of periodic sync (`start_periodic_sync`, `SyncManagerBuilder::auto_start`).
    pub sync_interval: Duration,
    /// Push automatically (debounced by `auto_sync_debounce`) after local writes, and retry
    /// failed pushes by the backoff timer. Off, the application drives every push
    /// (`sync_all`, `synchronize`, periodic sync, coming back online); ops still wait for
    /// their backoff time before they are sent again. It does not pull or start periodic
    /// sync: that is [`SyncManagerBuilder::auto_start`](crate::SyncManagerBuilder::auto_start)
    /// or [`SyncManager::start_periodic_sync`](crate::SyncManager::start_periodic_sync).
    pub auto_sync: bool,
    /// Quiet time after a local write before the automatic push.
    pub auto_sync_debounce: Duration,
    /// Ops per push request and records per pull page.
    pub batch_size: usize,
    /// Send only changed fields of an update (PATCH); `false` sends the full record (PUT).
    pub use_delta_sync: bool,
    /// Pull as well as push; `false` makes every run push-only.
    pub bidirectional: bool,
    /// Conflict policy.
    pub conflict_strategy: ConflictStrategy,
    /// Backoff of transient failures.
    pub retry: RetryPolicy,
    /// Save behaviour.
    pub save_strategy: SaveStrategy,
    /// Delete behaviour.
    pub delete_strategy: DeleteStrategy,
    /// Read behaviour of `query_with` defaults and `get`.
    pub fetch_strategy: FetchStrategy,
    /// Order of a sync run.
    pub direction: SyncDirection,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            sync_interval: Duration::from_secs(60),
            auto_sync: true,
            auto_sync_debounce: Duration::from_millis(1),
            batch_size: 200,
            use_delta_sync: true,
            bidirectional: true,
            conflict_strategy: ConflictStrategy::default(),
            retry: RetryPolicy::default(),
            save_strategy: SaveStrategy::default(),
            delete_strategy: DeleteStrategy::default(),
            fetch_strategy: FetchStrategy::default(),
            direction: SyncDirection::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: false,
            max_attempts: None,
        };
        assert_eq!(p.delay(1, None), Duration::from_millis(100));
        assert_eq!(p.delay(2, None), Duration::from_millis(200));
        assert_eq!(p.delay(4, None), Duration::from_millis(800));
        assert_eq!(p.delay(5, None), Duration::from_secs(1));
        assert_eq!(p.delay(500, None), Duration::from_secs(1));
        // A server's Retry-After is a floor, but never beyond the policy's max.
        assert_eq!(
            p.delay(1, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(1)
        );
        assert_eq!(p.delay(1, Some(Duration::MAX)), Duration::from_secs(1));
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling() {
        let p = RetryPolicy {
            jitter: true,
            ..RetryPolicy::default()
        };
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..200 {
            let d = p.delay(3, None);
            assert!(d <= Duration::from_secs(2));
            distinct.insert(d);
        }
        assert!(distinct.len() > 100, "jitter must spread delays");
    }
}
