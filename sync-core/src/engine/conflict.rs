//! Conflicts: [`decide`] chooses a resolution by strategy (pure, table-tested below);
//! `settle` writes it and reports it.

use std::sync::Arc;

use serde_json::{Map, Value};
use sync_schema::ModelSchema;

use super::{blocking, Inner};
use crate::error::Result;
use crate::events::{SyncEvent, SyncReport};
use crate::options::{ConflictContext, ConflictStrategy};
use crate::remote::ModelRoute;
use crate::store::{OpKind, PendingConflict, Resolution, StoredRecord};

impl Inner {
    /// Decides and writes the resolution of one conflict.
    pub(crate) async fn settle(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        conflict: PendingConflict,
        report: &mut SyncReport,
    ) -> Result<()> {
        let schema = route.schema;
        let id = conflict.remote.id.clone();
        report.conflicts += 1;
        self.emit(SyncEvent::ConflictDetected {
            model_type: schema.model_type,
            id: id.clone(),
            local: conflict.local.as_ref().map(|l| l.data.clone()),
            remote: conflict.remote.data.clone(),
            remote_version: conflict.remote.version,
            remote_deleted: conflict.remote.deleted,
        });
        let strategy = self.options().conflict_strategy;
        let resolution = decide(&strategy, schema, &conflict);
        let remote = conflict.remote.clone();
        let resolution2 = resolution.clone();
        blocking(&self.store, move |s| {
            s.resolve_conflict(schema, &remote, &resolution2)
        })
        .await?;
        self.emit(SyncEvent::ConflictResolved {
            model_type: schema.model_type,
            id: id.clone(),
            resolution: resolution.clone(),
        });
        match resolution {
            Resolution::TakeRemote if conflict.remote.deleted => {
                self.emit(SyncEvent::ModelDeleted {
                    model_type: schema.model_type,
                    id,
                });
            }
            Resolution::TakeRemote => self.emit(SyncEvent::ModelUpdated {
                model_type: schema.model_type,
                id,
                data: Some(conflict.remote.data.clone()),
            }),
            Resolution::Merged(data) => self.emit(SyncEvent::ModelUpdated {
                model_type: schema.model_type,
                id,
                data: Some(data),
            }),
            Resolution::KeepLocal => {}
        }
        Ok(())
    }
}

/// Chooses a resolution by strategy.
pub(crate) fn decide(
    strategy: &ConflictStrategy,
    schema: &'static ModelSchema,
    conflict: &PendingConflict,
) -> Resolution {
    let local_deleted =
        conflict.ops.iter().any(|op| op.op == OpKind::Delete) || conflict.local.is_none();
    let mut changed: Vec<String> = Vec::new();
    let mut base_values = Map::new();
    for op in &conflict.ops {
        for field in &op.changed_fields {
            if !changed.contains(field) {
                changed.push(field.clone());
            }
        }
        for (k, v) in &op.base_values {
            base_values.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let local_updated_at = conflict.local.as_ref().map(|l| l.meta.updated_at);
    let local_is_newer = match (local_updated_at, conflict.remote.updated_at) {
        (Some(local), Some(remote)) => local > remote,
        (Some(_), None) => false,
        _ => false,
    };
    let client_wins = |local: &Option<StoredRecord>| match local {
        Some(local) if !local_deleted => Resolution::Merged(local.data.clone()),
        _ => Resolution::KeepLocal,
    };
    match strategy {
        ConflictStrategy::ServerWins => Resolution::TakeRemote,
        ConflictStrategy::ClientWins => client_wins(&conflict.local),
        ConflictStrategy::LastUpdateWins => {
            if local_is_newer {
                client_wins(&conflict.local)
            } else {
                Resolution::TakeRemote
            }
        }
        ConflictStrategy::MergeFields => {
            let is_update = conflict.ops.iter().all(|op| op.op == OpKind::Update);
            match &conflict.local {
                Some(local) if is_update && !local_deleted && !conflict.remote.deleted => {
                    let mut merged = conflict.remote.data.clone();
                    for field in &changed {
                        let local_value = local.data.get(field).cloned().unwrap_or(Value::Null);
                        let remote_value = conflict
                            .remote
                            .data
                            .get(field)
                            .cloned()
                            .unwrap_or(Value::Null);
                        let base = base_values.get(field).cloned().unwrap_or(Value::Null);
                        let take_local = if remote_value == base {
                            true
                        } else if remote_value == local_value {
                            false
                        } else {
                            local_is_newer
                        };
                        if take_local {
                            merged.insert(field.clone(), local_value);
                        }
                    }
                    // Keep the id under its wire name even if the remote copy lacked it.
                    merged
                        .entry(schema.id().wire_name.to_owned())
                        .or_insert_with(|| Value::String(conflict.remote.id.clone()));
                    if merged == conflict.remote.data {
                        Resolution::TakeRemote
                    } else {
                        Resolution::Merged(merged)
                    }
                }
                _ => {
                    if local_is_newer {
                        client_wins(&conflict.local)
                    } else {
                        Resolution::TakeRemote
                    }
                }
            }
        }
        ConflictStrategy::Custom(resolver) => {
            let ctx = ConflictContext {
                model_type: schema.model_type,
                id: &conflict.remote.id,
                local: if local_deleted {
                    None
                } else {
                    conflict.local.as_ref().map(|l| &l.data)
                },
                local_updated_at,
                remote: &conflict.remote,
                changed_fields: &changed,
                base_values: &base_values,
            };
            resolver.resolve(&ctx)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::options::ConflictContext;
    use crate::store::{JsonObject, OpState, OutboxOp, RecordMeta, RemoteRecord, StoredRecord};
    use chrono::{TimeZone, Utc};
    use serde_json::json;
    use serde_json::Value;
    use sync_schema::{FieldSpec, SqlType};

    const fn field(position: usize, name: &'static str, id: bool) -> FieldSpec {
        FieldSpec {
            position,
            name,
            wire_name: name,
            column: name,
            sql_type: SqlType::Text,
            nullable: false,
            id,
            index: false,
            skip_delta: false,
            has_default: false,
        }
    }
    const FIELDS: &[FieldSpec] = &[
        field(0, "id", true),
        field(1, "title", false),
        field(2, "note", false),
    ];
    static SCHEMA: ModelSchema = ModelSchema {
        struct_name: "Item",
        model_type: "item",
        endpoint: "items",
        table: "items",
        id_field: 0,
        fields: FIELDS,
    };

    fn obj(v: Value) -> JsonObject {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn at(secs: i64) -> chrono::DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn conflict(local_at: i64, remote_at: i64, op: OpKind) -> PendingConflict {
        PendingConflict {
            remote: RemoteRecord {
                id: "i1".into(),
                version: 5,
                deleted: false,
                data: obj(json!({"id": "i1", "title": "remote title", "note": "remote note"})),
                updated_at: Some(at(remote_at)),
            },
            local: Some(StoredRecord {
                id: "i1".into(),
                data: obj(json!({"id": "i1", "title": "local title", "note": "base note"})),
                meta: RecordMeta {
                    version: 4,
                    created_at: at(0),
                    updated_at: at(local_at),
                    synced: false,
                    deleted: false,
                    user_id: None,
                    sync_error: None,
                    sync_attempts: 0,
                },
            }),
            ops: vec![OutboxOp {
                seq: 1,
                model_type: "item".into(),
                record_id: "i1".into(),
                user_id: None,
                op,
                changed_fields: vec!["title".into()],
                base_version: 4,
                base_values: obj(json!({"title": "base title"})),
                idempotency_key: "k".into(),
                priority: 0,
                attempts: 0,
                next_attempt_at: None,
                last_error: None,
                state: OpState::Pending,
                created_at: at(local_at),
                sent: false,
            }],
        }
    }

    #[test]
    fn server_and_client_wins() {
        let c = conflict(10, 5, OpKind::Update);
        assert_eq!(
            decide(&ConflictStrategy::ServerWins, &SCHEMA, &c),
            Resolution::TakeRemote
        );
        assert_eq!(
            decide(&ConflictStrategy::ClientWins, &SCHEMA, &c),
            Resolution::Merged(c.local.clone().unwrap().data)
        );
    }

    #[test]
    fn last_update_wins_compares_write_times_and_ties_go_to_the_server() {
        let newer_local = conflict(10, 5, OpKind::Update);
        assert!(matches!(
            decide(&ConflictStrategy::LastUpdateWins, &SCHEMA, &newer_local),
            Resolution::Merged(_)
        ));
        let newer_remote = conflict(5, 10, OpKind::Update);
        assert_eq!(
            decide(&ConflictStrategy::LastUpdateWins, &SCHEMA, &newer_remote),
            Resolution::TakeRemote
        );
        let tie = conflict(7, 7, OpKind::Update);
        assert_eq!(
            decide(&ConflictStrategy::LastUpdateWins, &SCHEMA, &tie),
            Resolution::TakeRemote
        );
    }

    #[test]
    fn merge_fields_takes_fields_only_one_side_changed() {
        // Local changed title (base "base title"); remote changed note and title.
        let mut c = conflict(1, 10, OpKind::Update);
        c.remote.data.insert("title".into(), json!("base title"));
        let merged = decide(&ConflictStrategy::MergeFields, &SCHEMA, &c);
        assert_eq!(
            merged,
            Resolution::Merged(obj(
                json!({"id": "i1", "title": "local title", "note": "remote note"})
            ))
        );
    }

    #[test]
    fn merge_fields_breaks_ties_by_write_time() {
        // Both changed the title.
        let remote_newer = conflict(1, 10, OpKind::Update);
        assert_eq!(
            decide(&ConflictStrategy::MergeFields, &SCHEMA, &remote_newer),
            Resolution::TakeRemote
        );
        let local_newer = conflict(10, 1, OpKind::Update);
        assert_eq!(
            decide(&ConflictStrategy::MergeFields, &SCHEMA, &local_newer),
            Resolution::Merged(obj(
                json!({"id": "i1", "title": "local title", "note": "remote note"})
            ))
        );
    }

    #[test]
    fn deletes_fall_back_to_the_tie_break() {
        let mut c = conflict(10, 1, OpKind::Delete);
        c.local = None;
        assert_eq!(
            decide(&ConflictStrategy::ClientWins, &SCHEMA, &c),
            Resolution::KeepLocal
        );
        assert_eq!(
            decide(&ConflictStrategy::MergeFields, &SCHEMA, &c),
            Resolution::TakeRemote,
            "no local write time: the server wins"
        );
        let mut tomb = conflict(1, 10, OpKind::Update);
        tomb.remote.deleted = true;
        assert_eq!(
            decide(&ConflictStrategy::MergeFields, &SCHEMA, &tomb),
            Resolution::TakeRemote
        );
    }

    #[derive(Debug)]
    struct KeepNote;
    impl crate::options::ConflictResolver for KeepNote {
        fn resolve(&self, c: &ConflictContext<'_>) -> Resolution {
            assert_eq!(c.changed_fields, ["title"]);
            assert_eq!(c.base_values.get("title"), Some(&json!("base title")));
            Resolution::KeepLocal
        }
    }

    #[test]
    fn custom_resolver_sees_the_context() {
        let c = conflict(1, 2, OpKind::Update);
        let strategy = ConflictStrategy::Custom(Arc::new(KeepNote));
        assert_eq!(decide(&strategy, &SCHEMA, &c), Resolution::KeepLocal);
    }
}
