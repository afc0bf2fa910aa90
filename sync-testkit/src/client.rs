//! Sync-engine settings for tests.

use std::time::Duration;

use sync_core::{RetryPolicy, SyncOptions};

/// Options for fast, deterministic tests: short debounce and backoff.
pub fn fast_options() -> SyncOptions {
    let defaults = SyncOptions::default();
    SyncOptions {
        auto_sync_debounce: Duration::from_millis(1),
        retry: RetryPolicy {
            base: Duration::from_millis(50),
            max: Duration::from_millis(200),
            ..defaults.retry
        },
        ..defaults
    }
}
