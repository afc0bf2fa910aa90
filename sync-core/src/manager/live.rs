//! Live queries: [`SyncManager::watch`] and [`LiveQuery`].

use serde_json::Value;
use tokio::sync::broadcast;

use super::SyncManager;
use crate::engine::store_query;
use crate::error::Result;
use crate::events::SyncEventType;
use crate::model::SyncModel;
use crate::query::Query;

impl SyncManager {
    /// A live query: yields the result set now and again whenever local data
    /// of the model changes in a way that changes the result (local saves,
    /// pulls, realtime updates).
    pub fn watch<T: SyncModel>(&self, query: Query<T>) -> Result<LiveQuery<T>> {
        self.route::<T>()?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut events = self.inner.events.subscribe();
        let manager = self.clone();
        let cancel = self.inner.cancel.child_token();
        let handle = tokio::spawn(async move {
            let mut last: Option<Vec<Value>> = None;
            let mut dirty = true;
            loop {
                if dirty {
                    let result = manager.local_query::<T>(store_query(&query)).await;
                    let send = match &result {
                        Ok(rows) => {
                            let snapshot: Vec<Value> = rows
                                .iter()
                                .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                                .collect();
                            let changed = last.as_ref() != Some(&snapshot);
                            last = Some(snapshot);
                            changed
                        }
                        Err(_) => true,
                    };
                    if send && tx.send(result).await.is_err() {
                        break;
                    }
                }
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tx.closed() => break,
                    event = events.recv() => match event {
                        Ok(event) => {
                            dirty = event.model_type() == Some(T::MODEL_TYPE)
                                && matches!(event.kind(), SyncEventType::ModelAdded | SyncEventType::ModelUpdated | SyncEventType::ModelDeleted);
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => dirty = true,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        });
        self.inner.track(handle);
        Ok(LiveQuery { rx })
    }
}

/// Result sets of a live query ([`SyncManager::watch`]).
#[derive(Debug)]
pub struct LiveQuery<T> {
    rx: tokio::sync::mpsc::Receiver<Result<Vec<T>>>,
}

impl<T> LiveQuery<T> {
    /// The next result set (the first one at once); `None` once the manager shut down.
    pub async fn next(&mut self) -> Option<Result<Vec<T>>> {
        self.rx.recv().await
    }
}
