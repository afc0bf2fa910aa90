//! The background task of a manager.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::{blocking, Inner, RunSpec};
use crate::events::SyncEvent;
use crate::options::SyncDirection;

/// How long the worker sleeps before the retry at `next` (an hour when there is none). A retry
/// time that passed while the schedule was being read is due now: a negative wait must not
/// turn into the idle hour.
pub(crate) fn retry_wait(
    next: Option<chrono::DateTime<Utc>>,
    now: chrono::DateTime<Utc>,
) -> Duration {
    next.map_or(Duration::from_secs(3600), |at| {
        (at - now).to_std().unwrap_or(Duration::ZERO)
    })
}

/// The background task: debounced auto-push, the retry timer, and sync on reconnect.
pub(crate) async fn worker(inner: Arc<Inner>) {
    let mut online = inner.online.clone();
    let mut was_online = *online.borrow();
    let mut online_open = true;
    loop {
        let now = Utc::now();
        // Ops already due (their time passed while a run was going on) count as due now.
        // Without auto_sync the application drives pushes (sync calls, reconnects).
        // Nor while the credentials are refused: no retry storm, the queue waits for a sync
        // call or `refresh_credentials`.
        let idle = inner.paused.load(Ordering::SeqCst)
            || !inner.is_online()
            || !inner.options().auto_sync
            || inner.needs_auth();
        let schedule = blocking(&inner.store, move |s| {
            if idle {
                // Nothing can be sent now; a resume or reconnect wakes the worker.
                return Ok(None);
            }
            if s.ready_ops(now, 1)?.is_empty() {
                s.next_retry_at(now)
            } else {
                Ok(Some(now))
            }
        })
        .await;
        let next_retry = match schedule {
            Ok(next) => next,
            Err(err) => {
                tracing::error!(error = %err, "reading the retry schedule failed");
                None
            }
        };
        let sleep_for = retry_wait(next_retry, Utc::now());
        let has_retry = next_retry.is_some();
        // Ops ready already when the worker looks (writes made before it was listening, or
        // while a run was going on) are gathered like a write's: after the debounce, so that
        // a burst still goes out in one push however the worker's turn falls.
        let ready_now = next_retry.is_some_and(|at| at <= now);
        enum Wake {
            Write,
            Retry,
            Online(bool),
            Idle,
        }
        let wake = tokio::select! {
            () = inner.cancel.cancelled() => break,
            () = inner.wake.notified() => Wake::Write,
            () = tokio::time::sleep(sleep_for) => if ready_now {
                Wake::Write
            } else if has_retry {
                Wake::Retry
            } else {
                Wake::Idle
            },
            changed = online.changed(), if online_open => match changed {
                Ok(()) => Wake::Online(*online.borrow_and_update()),
                Err(_) => {
                    // The connectivity source is gone: its last state stays.
                    online_open = false;
                    Wake::Idle
                }
            },
        };
        let spec = match wake {
            Wake::Idle => continue,
            Wake::Write if !inner.options().auto_sync || inner.needs_auth() => continue,
            Wake::Retry if inner.needs_auth() => continue,
            Wake::Write => {
                let debounce = inner.options().auto_sync_debounce;
                if !debounce.is_zero() {
                    tokio::select! {
                        () = inner.cancel.cancelled() => break,
                        () = tokio::time::sleep(debounce) => {}
                    }
                }
                RunSpec {
                    direction: SyncDirection::PushOnly,
                    force_full: false,
                    batch_size: None,
                    models: None,
                }
            }
            Wake::Retry => RunSpec {
                direction: SyncDirection::PushOnly,
                force_full: false,
                batch_size: None,
                models: None,
            },
            Wake::Online(now_online) => {
                inner.status.send_modify(|s| s.connected = now_online);
                inner.emit(if now_online {
                    SyncEvent::ConnectionEstablished
                } else {
                    SyncEvent::ConnectionClosed
                });
                let came_back = now_online && !was_online;
                was_online = now_online;
                if !came_back {
                    continue;
                }
                let direction = inner.options().direction;
                RunSpec {
                    direction,
                    force_full: false,
                    batch_size: None,
                    models: None,
                }
            }
        };
        if let Err(err) = inner.run(spec).await {
            tracing::debug!(error = %crate::error::chain_text(&err), "background sync run failed; it will be retried");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> chrono::DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_retry_time_already_past_is_due_now() {
        let now = at(100);
        assert_eq!(retry_wait(Some(at(99)), now), Duration::ZERO);
        assert_eq!(retry_wait(Some(at(102)), now), Duration::from_secs(2));
        assert_eq!(retry_wait(None, now), Duration::from_secs(3600));
    }
}
