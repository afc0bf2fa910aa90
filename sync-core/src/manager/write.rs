//! Writes: save, save_all and delete, local-first or remote-first by strategy.

use std::sync::Arc;

use super::SyncManager;
use crate::engine::{blocking, merge_remote};
use crate::error::{Error, Result};
use crate::events::SyncEvent;
use crate::model::SyncModel;
use crate::options::{DeleteStrategy, SaveStrategy, WriteOptions};
use crate::remote::{ModelRoute, PushItem, PushKind, PushOutcome, RemoteError};
use crate::store::{JsonObject, LocalWrite};

/// Refuses ids that cannot travel: empty, a dot segment (`.`, `..`: a URL parser resolves them,
/// so a REST call for the record would address another resource), or with a control character
/// (NUL cannot be stored on Postgres; none belongs in a URL or a log line).
pub(crate) fn check_id(model: &'static str, id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "it is empty"
    } else if id == "." || id == ".." {
        "`.` and `..` are path segments a URL parser resolves"
    } else if id.chars().any(char::is_control) {
        "it holds a control character"
    } else {
        return Ok(());
    };
    Err(Error::InvalidId {
        model,
        id: id.to_owned(),
        reason,
    })
}

impl SyncManager {
    /// Creates or updates a record. With [`SaveStrategy::OptimisticLocal`] the
    /// record and its queued op commit together locally and the push follows;
    /// with [`SaveStrategy::RequireRemote`] the call succeeds only once the
    /// remote accepted the write, and keeps nothing locally otherwise.
    ///
    /// The queued change has the model's priority; [`save_with`](Self::save_with) sets one
    /// for this write.
    pub async fn save<T: SyncModel>(&self, model: &T) -> Result<()> {
        self.save_with(model, WriteOptions::default()).await
    }

    /// [`save`](Self::save) with options for this write, such as its queue priority:
    ///
    /// ```no_run
    /// # use sync_core::{SyncManager, SyncModel, WriteOptions};
    /// # async fn f<T: SyncModel>(sync: &SyncManager, urgent: &T) -> sync_core::Result<()> {
    /// sync.save_with(urgent, WriteOptions::new().priority(10)).await?; // pushed before priority 0
    /// # Ok(()) }
    /// ```
    pub async fn save_with<T: SyncModel>(&self, model: &T, write: WriteOptions) -> Result<()> {
        self.check_open()?;
        let route = self.route::<T>()?;
        let id = model.id().into_owned();
        check_id(route.schema.model_type, &id)?;
        let data = model.to_record_json()?;
        let strategy = self.inner.options().save_strategy;
        match strategy {
            SaveStrategy::OptimisticLocal => {
                let priority = self.inner.priority(T::MODEL_TYPE, write);
                self.inner
                    .save_local(&route, id, data, true, None, priority)
                    .await?;
                self.inner.after_local_write();
                Ok(())
            }
            SaveStrategy::RequireRemote => self.save_remote_first(&route, id, data).await,
        }
    }

    /// Saves many records in one local transaction (each with its op).
    pub async fn save_all<T: SyncModel>(&self, models: &[T]) -> Result<()> {
        self.save_all_with(models, WriteOptions::default()).await
    }

    /// [`save_all`](Self::save_all) with options for these writes (one priority for all).
    pub async fn save_all_with<T: SyncModel>(
        &self,
        models: &[T],
        write: WriteOptions,
    ) -> Result<()> {
        self.check_open()?;
        let route = self.route::<T>()?;
        // Every id first: a bad one refuses the whole batch before anything is written.
        for model in models {
            check_id(route.schema.model_type, &model.id())?;
        }
        if self.inner.options().save_strategy == SaveStrategy::RequireRemote {
            for model in models {
                self.save(model).await?;
            }
            return Ok(());
        }
        let mut rows = Vec::with_capacity(models.len());
        for model in models {
            rows.push((model.id().into_owned(), model.to_record_json()?));
        }
        let user = self.inner.user_id.clone();
        let schema = route.schema;
        let priority = self.inner.priority(T::MODEL_TYPE, write);
        let rows2 = rows.clone();
        let outcomes = blocking(&self.inner.store, move |s| {
            let writes: Vec<LocalWrite<'_>> = rows2
                .iter()
                .map(|(id, data)| LocalWrite {
                    schema,
                    id,
                    data,
                    user_id: user.as_deref(),
                    priority,
                    enqueue: true,
                    version: None,
                })
                .collect();
            s.save_batch(&writes)
        })
        .await?;
        for ((id, data), outcome) in rows.into_iter().zip(outcomes) {
            if outcome.changed_fields.is_empty() {
                continue;
            }
            self.inner.emit(SyncEvent::written(
                outcome.created,
                schema.model_type,
                &id,
                Some(data),
            ));
        }
        self.inner.refresh_counts().await?;
        self.inner.after_local_write();
        Ok(())
    }

    pub(crate) async fn save_remote_first(
        &self,
        route: &Arc<ModelRoute>,
        id: String,
        data: JsonObject,
    ) -> Result<()> {
        if !self.inner.confirm_online().await {
            return Err(Error::Offline {
                what: "a save with SaveStrategy::RequireRemote",
            });
        }
        let schema = route.schema;
        let id2 = id.clone();
        let existing = blocking(&self.inner.store, move |s| s.get(schema, &id2)).await?;
        let (kind, base_version) = match &existing {
            Some(row) if row.meta.version > 0 => (PushKind::Replace, row.meta.version),
            _ => (PushKind::Create, 0),
        };
        let item = PushItem {
            seq: 0,
            kind,
            id: id.clone(),
            base_version,
            data: Some(data.clone()),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            sent: false,
        };
        let (outcomes, _) = self
            .inner
            .remote
            .push(route, std::slice::from_ref(&item))
            .await?;
        match outcomes.into_iter().next() {
            Some(PushOutcome::Applied { version, record }) => {
                let data = record.map(|r| merge_remote(&data, r.data)).unwrap_or(data);
                self.inner
                    .save_local(route, id, data, false, Some(version), 0)
                    .await?;
                Ok(())
            }
            Some(PushOutcome::Conflict { .. }) => Err(Error::RemoteRefused {
                what: "save",
                message: "the remote has a newer version of the record (409); pull first".into(),
            }),
            Some(PushOutcome::Rejected { message, .. }) => Err(Error::RemoteRefused {
                what: "save",
                message,
            }),
            Some(PushOutcome::Transient {
                message,
                retry_after,
            }) => Err(Error::Remote(RemoteError::Unavailable {
                message,
                retry_after,
                source: None,
            })),
            None => Err(Error::Remote(RemoteError::bad_response(
                "no result for the save",
            ))),
        }
    }

    /// Deletes a record: a local tombstone with a queued remote delete
    /// ([`DeleteStrategy::Optimistic`]), or remote first ([`DeleteStrategy::WaitForRemote`]).
    pub async fn delete<T: SyncModel>(&self, id: &str) -> Result<()> {
        self.delete_with::<T>(id, WriteOptions::default()).await
    }

    /// [`delete`](Self::delete) with options for this write, such as the queued delete's
    /// priority.
    pub async fn delete_with<T: SyncModel>(&self, id: &str, write: WriteOptions) -> Result<()> {
        self.check_open()?;
        let route = self.route::<T>()?;
        let schema = route.schema;
        check_id(schema.model_type, id)?;
        let user = self.inner.user_id.clone();
        let strategy = self.inner.options().delete_strategy;
        let enqueue = match strategy {
            DeleteStrategy::Optimistic => true,
            DeleteStrategy::WaitForRemote => {
                let id2 = id.to_owned();
                let state =
                    blocking(&self.inner.store, move |s| s.record_state(schema, &id2)).await?;
                let version = state.meta.as_ref().map_or(0, |m| m.version);
                if version == 0 {
                    // Never reached the remote: removing it locally (and its queued create) is the whole delete.
                    true
                } else {
                    if !self.inner.confirm_online().await {
                        return Err(Error::Offline {
                            what: "a delete with DeleteStrategy::WaitForRemote",
                        });
                    }
                    let item = PushItem {
                        seq: 0,
                        kind: PushKind::Delete,
                        id: id.to_owned(),
                        base_version: version,
                        data: None,
                        idempotency_key: uuid::Uuid::new_v4().to_string(),
                        sent: false,
                    };
                    let (outcomes, _) = self
                        .inner
                        .remote
                        .push(&route, std::slice::from_ref(&item))
                        .await?;
                    match outcomes.into_iter().next() {
                        Some(PushOutcome::Applied { .. }) => false,
                        Some(PushOutcome::Conflict { .. }) => {
                            return Err(Error::RemoteRefused {
                                what: "delete",
                                message:
                                    "the remote has a newer version of the record (409); pull first"
                                        .into(),
                            })
                        }
                        Some(PushOutcome::Rejected { message, .. }) => {
                            return Err(Error::RemoteRefused {
                                what: "delete",
                                message,
                            })
                        }
                        Some(PushOutcome::Transient {
                            message,
                            retry_after,
                        }) => {
                            return Err(Error::Remote(RemoteError::Unavailable {
                                message,
                                retry_after,
                                source: None,
                            }))
                        }
                        None => {
                            return Err(Error::Remote(RemoteError::bad_response(
                                "no result for the delete",
                            )))
                        }
                    }
                }
            }
        };
        let id2 = id.to_owned();
        let priority = self.inner.priority(T::MODEL_TYPE, write);
        let outcome = blocking(&self.inner.store, move |s| {
            s.delete(schema, &id2, user.as_deref(), priority, enqueue)
        })
        .await?;
        if outcome.existed {
            self.inner.emit(SyncEvent::ModelDeleted {
                model_type: schema.model_type,
                id: id.to_owned(),
            });
        }
        self.inner.refresh_counts().await?;
        if enqueue {
            self.inner.after_local_write();
        }
        Ok(())
    }
}
