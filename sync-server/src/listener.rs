//! Receives the events other instances commit on the same Postgres database.
//!
//! A dedicated connection (outside the pool) `LISTEN`s on the schema's channel. Payloads from
//! other instances are published to this instance's hub. If the connection is lost, the
//! listener reconnects and, once listening again, replays the records changed since the last
//! version it saw (as `item_updated`/`item_deleted` with their latest data), so a subscriber
//! never silently misses a change; it may then see an event twice, which clients ignore by
//! version.

use std::thread;
use std::time::{Duration, Instant};

use diesel::PgConnection;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::events::{ChangeEvent, Hub, NotifyPayload};
use crate::protocol::EventKind;
use crate::store::postgres;
use crate::store::{NotifyTarget, RecordRow};

/// How often the connection is checked for notifications.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How often an idle connection is probed, so a dead one is noticed.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CATCH_UP_PAGE: i64 = 1000;

/// Starts the listener on the blocking pool. The receiver resolves once the first `LISTEN`
/// succeeded (or failed), so a server never reports ready while deaf to other instances.
pub(crate) fn spawn(
    url: String,
    target: NotifyTarget,
    hub: Hub,
    cancel: CancellationToken,
) -> (tokio::task::JoinHandle<()>, oneshot::Receiver<Result<()>>) {
    let (ready_tx, ready_rx) = oneshot::channel();
    let handle = tokio::task::spawn_blocking(move || {
        Listener {
            url,
            target,
            hub,
            cancel,
            last_version: None,
        }
        .run(ready_tx);
    });
    (handle, ready_rx)
}

struct Listener {
    url: String,
    target: NotifyTarget,
    hub: Hub,
    cancel: CancellationToken,
    /// Highest version seen in a notification or catch-up.
    last_version: Option<i64>,
}

impl Listener {
    fn run(mut self, ready: oneshot::Sender<Result<()>>) {
        let mut ready = Some(ready);
        let mut backoff = Duration::from_millis(100);
        while !self.cancel.is_cancelled() {
            let connected = postgres::listen(&self.url, &self.target)
                .and_then(|mut conn| self.start(&mut conn).map(|()| conn));
            match connected {
                Ok(mut conn) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                    tracing::debug!(channel = %self.target.channel, "listening for events of other instances");
                    backoff = Duration::from_millis(100);
                    match self.poll(&mut conn) {
                        Ok(()) => return,
                        Err(err) => {
                            tracing::warn!(error = %err, "event listener connection lost; reconnecting");
                        }
                    }
                }
                Err(err) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(err));
                        return;
                    }
                    tracing::warn!(error = %err, "event listener cannot reconnect; retrying");
                    self.sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// After `LISTEN`: take the baseline version, or replay what was missed while disconnected.
    ///
    /// Both start with [`postgres::fence_writers`]: writers send no NOTIFY while no other
    /// instance listens, and the fence waits out every writer that may have decided so before
    /// this session listened, so their changes are at or below the baseline, or in the table
    /// for the catch-up.
    fn start(&mut self, conn: &mut PgConnection) -> Result<()> {
        let fenced = postgres::fence_writers(conn)?;
        match self.last_version {
            None => {
                self.last_version = Some(fenced);
            }
            Some(mut since) => loop {
                let rows = postgres::changed_since(conn, since, CATCH_UP_PAGE)?;
                let Some(last) = rows.last().map(|row| row.version) else {
                    break;
                };
                let count = rows.len();
                self.hub.publish(rows.iter().filter_map(catch_up_event));
                since = last;
                self.last_version = Some(last);
                if (count as i64) < CATCH_UP_PAGE {
                    break;
                }
            },
        }
        Ok(())
    }

    fn poll(&mut self, conn: &mut PgConnection) -> Result<()> {
        let mut last_probe = Instant::now();
        loop {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            let mut payloads = Vec::new();
            for notification in conn.notifications_iter() {
                payloads.push(notification?.payload);
            }
            if payloads.is_empty() {
                if last_probe.elapsed() >= PROBE_INTERVAL {
                    postgres::current_version(conn)?;
                    last_probe = Instant::now();
                }
                thread::sleep(POLL_INTERVAL);
                continue;
            }
            for payload in payloads {
                self.handle(conn, &payload)?;
            }
        }
    }

    fn handle(&mut self, conn: &mut PgConnection, payload: &str) -> Result<()> {
        let payload: NotifyPayload = match serde_json::from_str(payload) {
            Ok(p) => p,
            Err(err) => {
                tracing::warn!(error = %err, "skipping a malformed event notification");
                return Ok(());
            }
        };
        let max = payload
            .events
            .iter()
            .map(|e| e.message.version)
            .chain(payload.refs.iter().map(|r| r.version))
            .max();
        if let Some(max) = max {
            self.last_version = Some(self.last_version.map_or(max, |v| v.max(max)));
        }
        if payload.instance == self.target.instance {
            // Published by this instance right after its commit.
            return Ok(());
        }
        self.hub.publish(payload.events);
        for r in &payload.refs {
            // A record changed again since is skipped: its newer event follows.
            if let Some(row) = postgres::resolve_ref(conn, r)? {
                let record = row.to_record()?;
                self.hub.publish([ChangeEvent::new(
                    &row.owner,
                    r.kind,
                    &row.collection,
                    &row.id,
                    row.version,
                    record,
                )]);
            }
        }
        Ok(())
    }

    fn sleep(&self, total: Duration) {
        let until = Instant::now() + total;
        while Instant::now() < until && !self.cancel.is_cancelled() {
            thread::sleep(POLL_INTERVAL * 5);
        }
    }
}

fn catch_up_event(row: &RecordRow) -> Option<ChangeEvent> {
    let kind = if row.deleted {
        EventKind::Deleted
    } else {
        EventKind::Updated
    };
    match row.to_record() {
        Ok(record) => Some(ChangeEvent::new(
            &row.owner,
            kind,
            &row.collection,
            &row.id,
            row.version,
            record,
        )),
        Err(err) => {
            tracing::warn!(error = %err, "skipping a corrupt record during event catch-up");
            None
        }
    }
}
