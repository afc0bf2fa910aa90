//! Sync-engine settings for tests.

use std::time::Duration;

use sync_core::SyncOptions;

/// Options for fast, deterministic tests: short debounce and backoff.
pub fn fast_options() -> SyncOptions {
    let mut options = SyncOptions::default();
    options.auto_sync_debounce = Duration::from_millis(1);
    options.retry.base = Duration::from_millis(50);
    options.retry.max = Duration::from_millis(200);
    options
}
