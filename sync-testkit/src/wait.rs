//! Waiting for a condition or an event, with a deadline that fails the test.

use std::time::Duration;

use sync_core::{SyncEvent, SyncEventType};

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for an event of `kind` (optionally for record `id`).
pub async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<SyncEvent>,
    kind: SyncEventType,
    id: Option<&str>,
) -> SyncEvent {
    let deadline = Duration::from_secs(10);
    tokio::time::timeout(deadline, async {
        loop {
            match events.recv().await {
                Ok(event) if event.kind() == kind && (id.is_none() || event.id() == id) => {
                    return event
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event channel closed: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind:?} event within {deadline:?}"))
}
