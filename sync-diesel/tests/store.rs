//! The store suite: every test runs against SQLite, and against Postgres when
//! `SYNC_TEST_POSTGRES_URL` is set (each Postgres run in a fresh schema).

#![allow(clippy::unwrap_used)]

mod support;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use support::{json, prepare, save, todo, Fixture, Gadget, Spec, Todo};
use sync_core::store::StoreError;
use sync_core::store::{
    Ack, JsonObject, LocalStore, LocalWrite, OpKind, OpState, RemoteRecord, Resolution, StoreQuery,
};
use sync_core::Condition;
use sync_core::{Query, SyncModel};

// One test per backend: `sqlite::<name>` and `postgres::<name>`.
sync_testkit::backend_matrix!(
    sync:
    every_column_type_roundtrips_what_serde_writes,
    a_save_writes_the_row_and_its_create_op_together,
    a_failed_save_leaves_neither_row_nor_op,
    coalescing_rules_table,
    every_changed_op_gets_a_new_idempotency_key_and_keys_are_unique,
    ready_ops_by_priority_then_seq_and_due_time,
    a_delete_carries_its_priority_and_a_fold_keeps_the_higher,
    ack_fail_retry_and_discard,
    released_ops_are_as_if_never_marked,
    batched_acks_equal_one_by_one_acks,
    deletes_are_tombstones_until_acknowledged,
    a_copy_older_than_a_known_tombstone_does_not_bring_the_record_back,
    saves_without_enqueue_write_synced_rows,
    a_page_of_many_new_rows_and_repeated_records_applies_in_order,
    old_versions_of_a_record_with_a_pending_edit_are_stale_not_conflicts,
    apply_remote_inserts_updates_skips_and_reports_conflicts,
    a_failure_while_applying_a_page_keeps_rows_and_cursor,
    conflicts_are_resolved_in_one_transaction,
    queries_run_in_sql_with_the_same_results_as_in_memory,
    metadata_and_cursors_are_per_user,
    quarantine_keeps_replaces_lists_and_releases,
    prepare_model_reports_a_missing_table_without_auto_migration,
    a_stored_value_that_no_longer_deserialises_names_model_id_and_field,
    user_ids_are_kept_on_rows_and_ops,
    a_rekey_moves_the_row_and_every_queued_op_of_the_record,
);

fn gadget(n: u128) -> Gadget {
    Gadget {
        uid: uuid::Uuid::from_u128(n),
        name: format!("gadget {n}"),
        enabled: n.is_multiple_of(2),
        small: -7,
        count: 42,
        big: i64::MAX - 1,
        ratio: 0.1,
        precise: 1.0 / 3.0,
        made_at: "2024-02-29T12:34:56.123456Z".parse().unwrap(),
        local_time: "2023-12-31T23:59:59.5".parse().unwrap(),
        owner: uuid::Uuid::from_u128(n + 1000),
        blob: vec![0, 1, 2, 254, 255],
        spec: Spec {
            name: "x".into(),
            weight: 2.5,
        },
        note: None,
        maybe_flag: Some(false),
        maybe_small: None,
        maybe_count: Some(-1),
        maybe_big: None,
        maybe_ratio: Some(1.5),
        maybe_precise: None,
        maybe_at: Some("1999-01-01T00:00:00Z".parse().unwrap()),
        maybe_local: None,
        maybe_owner: Some(uuid::Uuid::nil()),
        maybe_blob: Some(vec![]),
        maybe_spec: None,
    }
}

fn all_query() -> StoreQuery {
    StoreQuery::default()
}

fn from<M>(q: &Query<M>) -> StoreQuery {
    StoreQuery {
        filter: q.filter_expr().cloned(),
        order: q.order().to_vec(),
        limit: q.limit_value(),
        offset: q.offset_value(),
        include_deleted: false,
    }
}

fn ops(f: &Fixture, id: &str) -> Vec<sync_core::store::OutboxOp> {
    f.store.record_state(Todo::SCHEMA, id).unwrap().ops
}

fn far() -> DateTime<Utc> {
    Utc::now() + TimeDelta::days(3650)
}

fn remote(id: &str, version: i64, model: Option<&Todo>) -> RemoteRecord {
    RemoteRecord {
        id: id.into(),
        version,
        deleted: model.is_none(),
        data: model.map(json).unwrap_or_default(),
        updated_at: None,
    }
}

fn every_column_type_roundtrips_what_serde_writes(f: &Fixture) {
    prepare(&f.store);
    let full = gadget(1);
    let mut empty = gadget(2);
    empty.maybe_flag = None;
    empty.maybe_count = None;
    empty.maybe_ratio = None;
    empty.maybe_at = None;
    empty.maybe_owner = None;
    empty.maybe_blob = None;
    empty.note = Some("n\u{e9}".into());
    empty.maybe_spec = Some(Spec {
        name: "y".into(),
        weight: -0.0,
    });
    empty.maybe_precise = Some(f64::MIN_POSITIVE);
    empty.maybe_big = Some(i64::MIN);
    empty.maybe_small = Some(i16::MAX);
    empty.maybe_local = Some("2020-01-01T00:00:00".parse().unwrap());
    for g in [&full, &empty] {
        save(&f.store, g);
        let stored = f
            .store
            .get(Gadget::SCHEMA, &g.uid.to_string())
            .unwrap()
            .unwrap();
        assert_eq!(stored.data, json(g), "{}", f.backend);
        let back: Gadget = serde_json::from_value(Value::Object(stored.data)).unwrap();
        assert_eq!(&back, g, "{}", f.backend);
    }
}

fn a_save_writes_the_row_and_its_create_op_together(f: &Fixture) {
    prepare(&f.store);
    let t = todo("t1", "Buy milk", 2);
    let outcome = save(&f.store, &t);
    assert!(outcome.created);
    assert_eq!(outcome.changed_fields.len(), Todo::SCHEMA.fields.len());
    let state = f.store.record_state(Todo::SCHEMA, "t1").unwrap();
    let meta = state.meta.unwrap();
    assert!(!meta.synced && !meta.deleted);
    assert_eq!(meta.version, 0);
    assert_eq!(state.ops.len(), 1);
    let op = &state.ops[0];
    assert_eq!(op.op, OpKind::Create);
    assert_eq!(op.state, OpState::Pending);
    assert_eq!(Some(op.seq), outcome.op_seq);
    assert_eq!(op.model_type, "todo");
    // The key: this process's random prefix (32 hex digits) and a counter in hex.
    let (prefix, n) = op.idempotency_key.rsplit_once('-').unwrap();
    assert_eq!(prefix.len(), 32, "{}", op.idempotency_key);
    assert!(prefix.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(u64::from_str_radix(n, 16).is_ok(), "{}", op.idempotency_key);
    assert_eq!(f.store.counts().unwrap().pending, 1);
    // Saving the same data again changes nothing.
    let again = save(&f.store, &t);
    assert_eq!(again.op_seq, None);
    assert!(again.changed_fields.is_empty());
    assert_eq!(ops(f, "t1").len(), 1);
}

fn a_failed_save_leaves_neither_row_nor_op(f: &Fixture) {
    prepare(&f.store);
    let mut data = json(&todo("bad", "x", 1));
    data.insert("priority".into(), json!("high"));
    let err = f
        .store
        .save(&LocalWrite {
            schema: Todo::SCHEMA,
            id: "bad",
            data: &data,
            user_id: None,
            priority: 0,
            enqueue: true,
            version: None,
        })
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::InvalidValue { field, .. } if field == "priority"),
        "{err}"
    );
    assert!(f
        .store
        .record_state(Todo::SCHEMA, "bad")
        .unwrap()
        .meta
        .is_none());
    assert_eq!(f.store.counts().unwrap().pending, 0);
    // A batch with one bad record writes nothing.
    let good = json(&todo("good", "x", 1));
    let writes: Vec<LocalWrite<'_>> = [("good", &good), ("bad", &data)]
        .into_iter()
        .map(|(id, data)| LocalWrite {
            schema: Todo::SCHEMA,
            id,
            data,
            user_id: None,
            priority: 0,
            enqueue: true,
            version: None,
        })
        .collect();
    assert!(f.store.save_batch(&writes).is_err());
    assert!(f.store.get(Todo::SCHEMA, "good").unwrap().is_none());
    assert_eq!(f.store.counts().unwrap().pending, 0);
}

/// One step of a coalescing scenario.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Save the record with this title (and priority = title length).
    Save(&'static str),
    /// Save with a new description only.
    Describe(&'static str),
    Delete,
    /// Mark the record's ready op in flight.
    Send,
    /// The remote acknowledged the in-flight op with this version.
    Ack(i64),
    /// Transient failure of the in-flight op.
    Retry,
    /// Crash and reopen-style requeue.
    Requeue,
}

struct Expect {
    /// (kind, state, changed fields) of every op, oldest first.
    ops: &'static [(OpKind, OpState, &'static [&'static str])],
    /// The row: None = gone; Some(deleted).
    row: Option<bool>,
    /// Base values of the pending op, if checked.
    base: Option<Value>,
    /// Base version of the pending op, if checked.
    base_version: Option<i64>,
}

fn run_steps(f: &Fixture, steps: &[Step]) {
    let id = "r";
    let mut current = todo(id, "orig", 4);
    for step in steps {
        match *step {
            Step::Save(title) => {
                current.title = title.into();
                current.priority = i32::try_from(title.len()).unwrap();
                save(&f.store, &current);
            }
            Step::Describe(d) => {
                current.description = d.into();
                save(&f.store, &current);
            }
            Step::Delete => {
                f.store.delete(Todo::SCHEMA, id, None, 0, true).unwrap();
            }
            Step::Send => {
                let ready = f.store.ready_ops(far(), 100).unwrap();
                let seqs: Vec<i64> = ready
                    .iter()
                    .filter(|o| o.record_id == id)
                    .map(|o| o.seq)
                    .collect();
                assert_eq!(seqs.len(), 1, "one ready op to send");
                assert_eq!(f.store.mark_inflight(&seqs).unwrap(), seqs);
            }
            Step::Ack(version) => {
                let op = ops(f, id)
                    .into_iter()
                    .find(|o| o.state == OpState::Inflight)
                    .unwrap();
                f.store.ack_op(Todo::SCHEMA, op.seq, version, None).unwrap();
            }
            Step::Retry => {
                let op = ops(f, id)
                    .into_iter()
                    .find(|o| o.state == OpState::Inflight)
                    .unwrap();
                f.store
                    .reschedule_op(op.seq, Utc::now(), "timeout")
                    .unwrap();
            }
            Step::Requeue => {
                f.store.requeue_inflight().unwrap();
            }
        }
    }
}

fn coalescing_rules_table(f: &Fixture) {
    use OpKind::{Create, Delete, Update};
    use OpState::{Inflight, Pending};
    use Step::*;
    let cases: Vec<(&str, Vec<Step>, Expect)> = vec![
        (
            "create+update = create with latest data",
            vec![Save("a"), Save("b")],
            Expect {
                ops: &[(Create, Pending, &[])],
                row: Some(false),
                base: Some(json!({})),
                base_version: Some(0),
            },
        ),
        (
            "create+delete = both vanish",
            vec![Save("a"), Save("b"), Step::Delete],
            Expect {
                ops: &[],
                row: None,
                base: None,
                base_version: None,
            },
        ),
        (
            "update+update = union, first pre-edit values",
            vec![
                Save("a"),
                Send,
                Ack(3),
                Save("bb"),
                Save("ccc"),
                Describe("d"),
            ],
            Expect {
                ops: &[(Update, Pending, &["title", "priority", "description"])],
                row: Some(false),
                base: Some(json!({"title": "a", "priority": 1, "description": ""})),
                base_version: Some(3),
            },
        ),
        (
            "update+delete = delete",
            vec![Save("a"), Send, Ack(3), Save("bb"), Step::Delete],
            Expect {
                ops: &[(Delete, Pending, &[])],
                row: Some(true),
                base: Some(json!({"title": "a", "priority": 1})),
                base_version: Some(3),
            },
        ),
        (
            "delete then save again = update of every field",
            vec![Save("a"), Send, Ack(3), Step::Delete, Save("new")],
            Expect {
                ops: &[(
                    Update,
                    Pending,
                    &[
                        "id",
                        "title",
                        "description",
                        "isCompleted",
                        "priority",
                        "tags",
                        "due",
                    ],
                )],
                row: Some(false),
                base: None,
                base_version: Some(3),
            },
        ),
        (
            "edit while inflight = new op after it",
            vec![Save("a"), Send, Save("b")],
            Expect {
                ops: &[(Create, Inflight, &[]), (Update, Pending, &["title"])],
                row: Some(false),
                base: Some(json!({"title": "a"})),
                base_version: Some(0),
            },
        ),
        (
            "edits while inflight coalesce with each other, not with the inflight op",
            vec![Save("a"), Send, Save("b"), Save("cc")],
            Expect {
                ops: &[
                    (Create, Inflight, &[]),
                    (Update, Pending, &["title", "priority"]),
                ],
                row: Some(false),
                base: Some(json!({"title": "a", "priority": 1})),
                base_version: Some(0),
            },
        ),
        (
            "ack of the inflight op rebases the next one",
            vec![Save("a"), Send, Save("b"), Ack(7)],
            Expect {
                ops: &[(Update, Pending, &["title"])],
                row: Some(false),
                base: Some(json!({"title": "a"})),
                base_version: Some(7),
            },
        ),
        (
            "delete while create inflight = delete op after it",
            vec![Save("a"), Send, Step::Delete],
            Expect {
                ops: &[(Create, Inflight, &[]), (Delete, Pending, &[])],
                row: Some(true),
                base: None,
                base_version: None,
            },
        ),
        (
            "acked create then acked delete removes the row",
            vec![Save("a"), Send, Step::Delete, Ack(2), Send, Ack(3)],
            Expect {
                ops: &[],
                row: None,
                base: None,
                base_version: None,
            },
        ),
        (
            "a retried (possibly sent) op is frozen: the newer edit stays behind it",
            vec![Save("a"), Send, Save("b"), Retry],
            Expect {
                ops: &[(Create, Pending, &[]), (Update, Pending, &["title"])],
                row: Some(false),
                base: None,
                base_version: None,
            },
        ),
        (
            "a sent create then delete: the delete goes behind the frozen create",
            vec![Save("a"), Send, Retry, Step::Delete],
            Expect {
                ops: &[(Create, Pending, &[]), (Delete, Pending, &[])],
                row: Some(true),
                base: None,
                base_version: None,
            },
        ),
        (
            "a requeued (possibly sent) update keeps its content; the newer edit follows it",
            vec![
                Save("a"),
                Send,
                Ack(1),
                Save("bb"),
                Send,
                Describe("x"),
                Requeue,
            ],
            Expect {
                ops: &[
                    (Update, Pending, &["title", "priority"]),
                    (Update, Pending, &["description"]),
                ],
                row: Some(false),
                base: Some(json!({"description": ""})),
                base_version: Some(1),
            },
        ),
    ];
    prepare(&f.store);
    for (name, steps, expect) in &cases {
        // Each case on a clean record.
        let _ = f.store.delete(Todo::SCHEMA, "r", None, 0, false);
        run_steps(f, steps);
        let state = f.store.record_state(Todo::SCHEMA, "r").unwrap();
        let got: Vec<(OpKind, OpState, Vec<String>)> = state
            .ops
            .iter()
            .map(|o| (o.op, o.state, o.changed_fields.clone()))
            .collect();
        let want: Vec<(OpKind, OpState, Vec<String>)> = expect
            .ops
            .iter()
            .map(|(k, s, c)| (*k, *s, c.iter().map(|x| (*x).to_owned()).collect()))
            .collect();
        assert_eq!(got, want, "{name} ({})", f.backend);
        assert_eq!(
            state.meta.as_ref().map(|m| m.deleted),
            expect.row,
            "{name} ({}): row",
            f.backend
        );
        // At most one pending op that was never sent, and it is the last op.
        let unsent = state
            .ops
            .iter()
            .filter(|o| o.state == OpState::Pending && !o.sent);
        assert!(unsent.count() <= 1, "{name}: at most one unsent pending op");
        assert!(
            state.ops.iter().skip(1).all(|o| !o.sent),
            "{name}: only the oldest op may have been sent"
        );
        if let Some(pending) = state.ops.iter().rev().find(|o| o.state == OpState::Pending) {
            if let Some(base) = &expect.base {
                assert_eq!(
                    &Value::Object(pending.base_values.clone()),
                    base,
                    "{name} ({}): base values",
                    f.backend
                );
            }
            if let Some(v) = expect.base_version {
                assert_eq!(pending.base_version, v, "{name}: base version");
            }
        }
        if let Some(meta) = &state.meta {
            assert_eq!(meta.synced, state.ops.is_empty(), "{name}: synced flag");
        }
        // Clean up: drop everything queued for the record.
        for op in f.store.record_state(Todo::SCHEMA, "r").unwrap().ops {
            if op.state == OpState::Inflight {
                f.store.ack_op(Todo::SCHEMA, op.seq, 100, None).unwrap();
            }
        }
    }
}

fn every_changed_op_gets_a_new_idempotency_key_and_keys_are_unique(f: &Fixture) {
    prepare(&f.store);
    let mut keys = std::collections::HashSet::new();
    let mut t = todo("k", "a", 1);
    save(&f.store, &t);
    keys.insert(ops(f, "k")[0].idempotency_key.clone());
    for title in ["b", "c", "d"] {
        t.title = title.into();
        save(&f.store, &t);
        let key = ops(f, "k")[0].idempotency_key.clone();
        assert!(keys.insert(key), "a coalesced op gets a fresh key");
    }
    for i in 0..20 {
        save(&f.store, &todo(&format!("u{i}"), "x", 1));
    }
    let all = f.store.ready_ops(far(), 1000).unwrap();
    let unique: std::collections::HashSet<_> =
        all.iter().map(|o| o.idempotency_key.clone()).collect();
    assert_eq!(unique.len(), all.len());
}

fn ready_ops_by_priority_then_seq_and_due_time(f: &Fixture) {
    prepare(&f.store);
    let write = |id: &str, priority: i32| {
        let data = json(&todo(id, "x", 1));
        f.store
            .save(&LocalWrite {
                schema: Todo::SCHEMA,
                id,
                data: &data,
                user_id: Some("alice"),
                priority,
                enqueue: true,
                version: None,
            })
            .unwrap()
    };
    write("a", 0);
    write("b", 5);
    write("c", 0);
    write("e", -3);
    write("d", 5);
    write("f", 2);
    // Bookkeeping times are kept to the millisecond.
    let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis() + 1000).unwrap();
    let ids = |ops: Vec<sync_core::store::OutboxOp>| -> Vec<String> {
        ops.into_iter().map(|o| o.record_id).collect()
    };
    // Priorities above 0 and below 0 come from the ready index, priority 0 from the table in
    // seq order (bookkeeping migration 7): one order across the three.
    assert_eq!(
        ids(f.store.ready_ops(now, 10).unwrap()),
        ["b", "d", "f", "a", "c", "e"]
    );
    assert_eq!(ids(f.store.ready_ops(now, 2).unwrap()), ["b", "d"]);
    assert_eq!(
        ids(f.store.ready_ops(now, 4).unwrap()),
        ["b", "d", "f", "a"]
    );
    assert_eq!(ops(f, "a")[0].user_id.as_deref(), Some("alice"));
    // A rescheduled op waits for its time.
    let b = ops(f, "b")[0].seq;
    f.store.mark_inflight(&[b]).unwrap();
    let later = now + TimeDelta::seconds(60);
    f.store.reschedule_op(b, later, "503").unwrap();
    let b_op = &ops(f, "b")[0];
    assert_eq!(b_op.attempts, 1);
    assert_eq!(b_op.last_error.as_deref(), Some("503"));
    assert_eq!(
        ids(f.store.ready_ops(now, 10).unwrap()),
        ["d", "f", "a", "c", "e"]
    );
    assert_eq!(f.store.next_retry_at(now).unwrap(), Some(later));
    assert_eq!(
        ids(f.store.ready_ops(later, 10).unwrap()),
        ["b", "d", "f", "a", "c", "e"]
    );
    assert_eq!(f.store.next_retry_at(later).unwrap(), None);
    // mark_inflight only marks pending ops.
    let a = ops(f, "a")[0].seq;
    assert_eq!(f.store.mark_inflight(&[a, a, 999_999]).unwrap(), [a]);
    assert_eq!(f.store.counts().unwrap().pending, 6);
}

fn ack_fail_retry_and_discard(f: &Fixture) {
    prepare(&f.store);
    let t = todo("a", "x", 1);
    save(&f.store, &t);
    let seq = ops(f, "a")[0].seq;
    f.store.mark_inflight(&[seq]).unwrap();
    let mut server = json(&t);
    server.insert("title".into(), json!("normalised by server"));
    f.store.ack_op(Todo::SCHEMA, seq, 9, Some(&server)).unwrap();
    let rec = f.store.get(Todo::SCHEMA, "a").unwrap().unwrap();
    assert!(rec.meta.synced);
    assert_eq!(rec.meta.version, 9);
    assert_eq!(rec.data["title"], json!("normalised by server"));
    assert!(ops(f, "a").is_empty());
    assert!(matches!(
        f.store.ack_op(Todo::SCHEMA, seq, 9, None),
        Err(StoreError::UnknownOp { .. })
    ));

    // A permanent failure keeps the op and the data, and shows the error.
    let mut t2 = t.clone();
    t2.title = "edit".into();
    save(&f.store, &t2);
    let seq = ops(f, "a")[0].seq;
    f.store.mark_inflight(&[seq]).unwrap();
    f.store.fail_op(seq, "422 title too short").unwrap();
    let state = f.store.record_state(Todo::SCHEMA, "a").unwrap();
    assert_eq!(state.ops[0].state, OpState::Failed);
    let meta = state.meta.unwrap();
    assert_eq!(meta.sync_error.as_deref(), Some("422 title too short"));
    assert!(!meta.synced);
    assert_eq!(f.store.counts().unwrap().failed, 1);
    assert_eq!(f.store.failed_ops().unwrap()[0].seq, seq);
    // A failed op blocks later ops of its record, not other records.
    let mut t3 = t2.clone();
    t3.description = "more".into();
    save(&f.store, &t3);
    save(&f.store, &todo("other", "o", 1));
    let ready: Vec<String> = f
        .store
        .ready_ops(far(), 10)
        .unwrap()
        .into_iter()
        .map(|o| o.record_id)
        .collect();
    assert_eq!(ready, ["other"]);
    // Retrying sends the failed op again as it was (it went out once, so it is frozen);
    // the newer edit stays queued behind it.
    assert_eq!(f.store.retry_failed(Some(seq)).unwrap(), 1);
    let state = f.store.record_state(Todo::SCHEMA, "a").unwrap();
    assert_eq!(state.ops.len(), 2);
    assert_eq!(state.ops[0].state, OpState::Pending);
    assert!(state.ops[0].sent);
    assert_eq!(state.ops[0].changed_fields, ["title"]);
    assert_eq!(
        state.ops[0].base_values["title"],
        json!("normalised by server")
    );
    assert_eq!(state.ops[1].changed_fields, ["description"]);
    assert!(!state.ops[1].sent);
    assert_eq!(state.meta.unwrap().sync_error, None);
    // Discarding keeps the local data and marks it synced once no op is left.
    let behind = state.ops[1].seq;
    let seq = state.ops[0].seq;
    f.store.fail_op(seq, "422 again").unwrap();
    f.store.discard_op(seq).unwrap();
    f.store.discard_op(behind).unwrap();
    let rec = f.store.get(Todo::SCHEMA, "a").unwrap().unwrap();
    assert_eq!(rec.data["description"], json!("more"));
    assert!(rec.meta.synced);
    assert!(ops(f, "a").is_empty());
    assert_eq!(f.store.counts().unwrap().failed, 0);
    assert!(matches!(
        f.store.discard_op(seq),
        Err(StoreError::UnknownOp { .. })
    ));
    // In-flight ops cannot be discarded.
    let other = ops(f, "other")[0].seq;
    f.store.mark_inflight(&[other]).unwrap();
    assert!(f.store.discard_op(other).is_err());
    assert_eq!(f.store.requeue_inflight().unwrap(), 1);
    assert_eq!(ops(f, "other")[0].state, OpState::Pending);
}

fn released_ops_are_as_if_never_marked(f: &Fixture) {
    prepare(&f.store);
    // A create marked but never sent, then deleted locally: released, both vanish,
    // and so does the local tombstone.
    save(&f.store, &todo("r", "x", 1));
    let seq = ops(f, "r")[0].seq;
    f.store.mark_inflight(&[seq]).unwrap();
    let out = f.store.delete(Todo::SCHEMA, "r", None, 0, true).unwrap();
    assert!(out.existed);
    assert_eq!(ops(f, "r").len(), 2);
    f.store.release_inflight(&[seq]).unwrap();
    let state = f.store.record_state(Todo::SCHEMA, "r").unwrap();
    assert!(state.ops.is_empty(), "{:?}", state.ops);
    assert!(state.meta.is_none());

    // The same after a transient failure keeps the delete: the create may have landed.
    save(&f.store, &todo("s", "x", 1));
    let seq = ops(f, "s")[0].seq;
    f.store.mark_inflight(&[seq]).unwrap();
    f.store.delete(Todo::SCHEMA, "s", None, 0, true).unwrap();
    f.store.reschedule_op(seq, Utc::now(), "503").unwrap();
    let state = f.store.record_state(Todo::SCHEMA, "s").unwrap();
    let kinds: Vec<OpKind> = state.ops.iter().map(|o| o.op).collect();
    assert_eq!(kinds, [OpKind::Create, OpKind::Delete]);
    assert_eq!(state.ops[0].attempts, 1);
    assert!(state.ops[0].sent);

    // A released update takes the edit queued meanwhile, counts no attempt and is due now.
    let t = todo("u", "x", 1);
    save(&f.store, &t);
    let seq = ops(f, "u")[0].seq;
    f.store.mark_inflight(&[seq]).unwrap();
    f.store.ack_op(Todo::SCHEMA, seq, 4, None).unwrap();
    let mut edit = t.clone();
    edit.title = "first".into();
    save(&f.store, &edit);
    let seq = ops(f, "u")[0].seq;
    f.store.mark_inflight(&[seq]).unwrap();
    edit.description = "second".into();
    save(&f.store, &edit);
    assert_eq!(ops(f, "u").len(), 2);
    f.store.release_inflight(&[seq, 999_999]).unwrap();
    let state = f.store.record_state(Todo::SCHEMA, "u").unwrap();
    assert_eq!(state.ops.len(), 1);
    let op = &state.ops[0];
    assert_eq!((op.seq, op.state, op.attempts), (seq, OpState::Pending, 0));
    assert_eq!(op.changed_fields, ["title", "description"]);
    assert_eq!(op.base_version, 4);
    let ready = f.store.ready_ops(far(), 10).unwrap();
    assert!(ready.iter().any(|o| o.seq == seq));
    // Releasing a pending op changes nothing.
    f.store.release_inflight(&[seq]).unwrap();
    assert_eq!(
        f.store.record_state(Todo::SCHEMA, "u").unwrap().ops,
        state.ops
    );
}

/// `ack_ops` (batched) leaves the store exactly as `ack_op` one by one would.
fn batched_acks_equal_one_by_one_acks(f: &Fixture) {
    prepare(&f.store);
    // Per prefix: a plain create, a create the server normalised, a record with an edit
    // queued behind its op, and a delete.
    let setup = |p: &str| -> Vec<Ack> {
        for name in ["plain", "data", "behind", "gone"] {
            save(&f.store, &todo(&format!("{p}-{name}"), name, 1));
        }
        // "gone" is synced first, then deleted.
        let gone = format!("{p}-gone");
        let seq = ops(f, &gone)[0].seq;
        f.store.mark_inflight(&[seq]).unwrap();
        f.store.ack_op(Todo::SCHEMA, seq, 1, None).unwrap();
        f.store.delete(Todo::SCHEMA, &gone, None, 0, true).unwrap();
        let seqs: Vec<i64> = ["plain", "data", "behind", "gone"]
            .iter()
            .map(|name| ops(f, &format!("{p}-{name}"))[0].seq)
            .collect();
        assert_eq!(f.store.mark_inflight(&seqs).unwrap(), seqs);
        let mut edit = todo(&format!("{p}-behind"), "behind", 1);
        edit.title = "edited while in flight".into();
        save(&f.store, &edit);
        let mut server = json(&todo(&format!("{p}-data"), "data", 1));
        server.insert("title".into(), json!("normalised"));
        vec![
            Ack {
                seq: seqs[0],
                version: 10,
                data: None,
            },
            Ack {
                seq: seqs[1],
                version: 11,
                data: Some(server),
            },
            Ack {
                seq: seqs[2],
                version: 12,
                data: None,
            },
            Ack {
                seq: seqs[3],
                version: 13,
                data: None,
            },
        ]
    };
    let one = setup("one");
    for ack in &one {
        f.store
            .ack_op(Todo::SCHEMA, ack.seq, ack.version, ack.data.as_ref())
            .unwrap();
    }
    let many = setup("many");
    // An unknown seq fails the whole call and changes nothing.
    let mut bad = many.clone();
    bad.push(Ack {
        seq: 999_999,
        version: 1,
        data: None,
    });
    assert!(matches!(
        f.store.ack_ops(Todo::SCHEMA, &bad),
        Err(StoreError::UnknownOp { seq: 999_999, .. })
    ));
    assert_eq!(ops(f, "many-plain")[0].state, OpState::Inflight);
    f.store.ack_ops(Todo::SCHEMA, &many).unwrap();

    for name in ["plain", "data", "behind", "gone"] {
        let a = f
            .store
            .record_state(Todo::SCHEMA, &format!("one-{name}"))
            .unwrap();
        let b = f
            .store
            .record_state(Todo::SCHEMA, &format!("many-{name}"))
            .unwrap();
        let view = |st: &sync_core::store::RecordState| {
            let meta = st
                .meta
                .as_ref()
                .map(|m| (m.version, m.synced, m.deleted, m.sync_attempts));
            let ops: Vec<_> = st
                .ops
                .iter()
                .map(|o| (o.op, o.state, o.base_version, o.changed_fields.clone()))
                .collect();
            (meta, ops)
        };
        assert_eq!(view(&a), view(&b), "{name}");
        let get = |id: String| f.store.get(Todo::SCHEMA, &id).unwrap().map(|r| r.data);
        let (mut da, mut db) = (get(format!("one-{name}")), get(format!("many-{name}")));
        for d in [&mut da, &mut db].into_iter().flatten() {
            d.remove("id");
        }
        assert_eq!(da, db, "{name}");
    }
    let plain = f.store.get(Todo::SCHEMA, "many-plain").unwrap().unwrap();
    assert!(plain.meta.synced);
    assert_eq!(plain.meta.version, 10);
    let data = f.store.get(Todo::SCHEMA, "many-data").unwrap().unwrap();
    assert_eq!(data.data["title"], json!("normalised"));
    let behind = f.store.record_state(Todo::SCHEMA, "many-behind").unwrap();
    assert_eq!(behind.ops.len(), 1);
    assert_eq!(behind.ops[0].base_version, 12);
    assert!(!behind.meta.unwrap().synced);
    assert!(f
        .store
        .record_state(Todo::SCHEMA, "many-gone")
        .unwrap()
        .meta
        .is_none());

    // Two ops of one record in one call take the one-by-one path.
    save(&f.store, &todo("twice", "a", 1));
    let first = ops(f, "twice")[0].seq;
    f.store.mark_inflight(&[first]).unwrap();
    save(&f.store, &todo("twice", "b", 1));
    let second = ops(f, "twice")[1].seq;
    f.store.mark_inflight(&[second]).unwrap();
    f.store
        .ack_ops(
            Todo::SCHEMA,
            &[
                Ack {
                    seq: first,
                    version: 20,
                    data: None,
                },
                Ack {
                    seq: second,
                    version: 21,
                    data: None,
                },
            ],
        )
        .unwrap();
    let twice = f.store.get(Todo::SCHEMA, "twice").unwrap().unwrap();
    assert_eq!((twice.meta.version, twice.meta.synced), (21, true));
    assert!(ops(f, "twice").is_empty());
}

fn deletes_are_tombstones_until_acknowledged(f: &Fixture) {
    prepare(&f.store);
    let t = todo("d", "x", 1);
    save(&f.store, &t);
    let seq = ops(f, "d")[0].seq;
    f.store.mark_inflight(&[seq]).unwrap();
    f.store.ack_op(Todo::SCHEMA, seq, 1, None).unwrap();
    let out = f.store.delete(Todo::SCHEMA, "d", None, 0, true).unwrap();
    assert!(out.existed);
    let seq = out.op_seq.unwrap();
    assert!(f.store.get(Todo::SCHEMA, "d").unwrap().is_none());
    let q = StoreQuery {
        include_deleted: true,
        ..StoreQuery::default()
    };
    let rows = f.store.query(Todo::SCHEMA, &q).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].meta.deleted);
    assert_eq!(f.store.count(Todo::SCHEMA, &all_query()).unwrap(), 0);
    assert_eq!(f.store.count(Todo::SCHEMA, &q).unwrap(), 1);
    let op = &ops(f, "d")[0];
    assert_eq!((op.op, op.base_version), (OpKind::Delete, 1));
    // Deleting again changes nothing.
    let again = f.store.delete(Todo::SCHEMA, "d", None, 0, true).unwrap();
    assert!(!again.existed);
    assert_eq!(again.op_seq, Some(seq));
    f.store.mark_inflight(&[seq]).unwrap();
    f.store.ack_op(Todo::SCHEMA, seq, 2, None).unwrap();
    assert!(f
        .store
        .record_state(Todo::SCHEMA, "d")
        .unwrap()
        .meta
        .is_none());
    // A missing record.
    let none = f.store.delete(Todo::SCHEMA, "nope", None, 0, true).unwrap();
    assert!(!none.existed && none.op_seq.is_none());
    // enqueue = false removes the row and queues nothing.
    save(&f.store, &todo("e", "x", 1));
    let out = f.store.delete(Todo::SCHEMA, "e", None, 0, false).unwrap();
    assert!(out.existed && out.op_seq.is_none());
    let state = f.store.record_state(Todo::SCHEMA, "e").unwrap();
    assert!(state.meta.is_none() && state.ops.is_empty());
    // Discarding a delete brings the record back (the remote still has it).
    save(&f.store, &todo("g", "x", 1));
    let s = ops(f, "g")[0].seq;
    f.store.mark_inflight(&[s]).unwrap();
    f.store.ack_op(Todo::SCHEMA, s, 1, None).unwrap();
    let del = f.store.delete(Todo::SCHEMA, "g", None, 0, true).unwrap();
    f.store.discard_op(del.op_seq.unwrap()).unwrap();
    let back = f.store.get(Todo::SCHEMA, "g").unwrap().unwrap();
    assert!(back.meta.synced && !back.meta.deleted);
}

/// A record copy older than a tombstone the store already applied (a realtime event sent
/// before the delete and handled after a pull brought the tombstone, an answer computed
/// earlier) must not bring the record back: the device would hold a record the server
/// deleted, and no later pull would ever repair it.
fn a_copy_older_than_a_known_tombstone_does_not_bring_the_record_back(f: &Fixture) {
    prepare(&f.store);
    let apply = |records: &[RemoteRecord]| {
        f.store
            .apply_remote(Todo::SCHEMA, None, records, None)
            .unwrap()
    };
    let v16 = todo("k", "v16", 1);
    apply(&[remote("k", 16, Some(&v16))]);
    let out = apply(&[remote("k", 21, None)]);
    assert_eq!(out.deleted, ["k"]);
    let late = apply(&[remote("k", 16, Some(&v16))]);
    assert_eq!(late.stale, ["k"], "{late:?}");
    assert!(f.store.get(Todo::SCHEMA, "k").unwrap().is_none());

    // Never held here: the tombstone comes first, then an older copy.
    apply(&[remote("n", 9, None)]);
    let late = apply(&[remote("n", 4, Some(&todo("n", "old", 1)))]);
    assert_eq!(late.stale, ["n"], "{late:?}");
    assert!(f.store.get(Todo::SCHEMA, "n").unwrap().is_none());
    // Within one page as well.
    let page = apply(&[
        remote("p", 7, None),
        remote("p", 5, Some(&todo("p", "old", 1))),
    ]);
    assert!(page.created.is_empty(), "{page:?}");
    assert!(f.store.get(Todo::SCHEMA, "p").unwrap().is_none());

    // A version newer than the tombstone is the record created again: applied.
    let again = todo("k", "again", 1);
    let out = apply(&[remote("k", 25, Some(&again))]);
    assert_eq!(out.created, ["k"]);
    assert_eq!(
        f.store.get(Todo::SCHEMA, "k").unwrap().unwrap().data["title"],
        json!("again")
    );

    // The device's own delete, acknowledged at version 30: older copies stay out too.
    let del = f.store.delete(Todo::SCHEMA, "k", None, 0, true).unwrap();
    let seq = del.op_seq.unwrap();
    f.store.mark_inflight(&[seq]).unwrap();
    f.store.ack_op(Todo::SCHEMA, seq, 30, None).unwrap();
    let late = apply(&[remote("k", 25, Some(&again))]);
    assert_eq!(late.stale, ["k"], "{late:?}");
    assert!(f.store.get(Todo::SCHEMA, "k").unwrap().is_none());

    // A local save over a remembered tombstone is a create like any other.
    save(&f.store, &todo("n", "mine", 1));
    let op = &ops(f, "n")[0];
    assert_eq!(op.op, OpKind::Create);
    assert_eq!(
        f.store.get(Todo::SCHEMA, "n").unwrap().unwrap().data["title"],
        json!("mine")
    );
    // The tombstone it was made over, arriving again (a late event, a catch-up page), is
    // stale, not a conflict: under ServerWins a conflict would drop the new record.
    let late = apply(&[remote("n", 9, None)]);
    assert!(late.conflicts.is_empty(), "{late:?}");
    assert_eq!(late.stale, ["n"]);
    assert_eq!(ops(f, "n").len(), 1);
    // A newer delete from elsewhere still is one.
    let newer = apply(&[remote("n", 12, None)]);
    assert_eq!(newer.conflicts.len(), 1, "{newer:?}");
}

fn a_delete_carries_its_priority_and_a_fold_keeps_the_higher(f: &Fixture) {
    prepare(&f.store);
    let write = |id: &str, title: &str, priority: i32, enqueue: bool| {
        let data = json(&todo(id, title, 1));
        f.store
            .save(&LocalWrite {
                schema: Todo::SCHEMA,
                id,
                data: &data,
                user_id: None,
                priority,
                enqueue,
                version: (!enqueue).then_some(3),
            })
            .unwrap()
    };
    // Synced records, so a delete queues an op.
    write("p", "synced", 0, false);
    write("q", "synced", 0, false);
    write("r", "synced", 0, false);
    f.store.delete(Todo::SCHEMA, "p", None, 9, true).unwrap();
    assert_eq!(ops(f, "p")[0].priority, 9);
    // An update of priority 4, then a delete of priority 1 folded into it: the higher stays.
    write("q", "edited", 4, true);
    f.store.delete(Todo::SCHEMA, "q", None, 1, true).unwrap();
    let q = ops(f, "q");
    assert_eq!((q.len(), q[0].op, q[0].priority), (1, OpKind::Delete, 4));
    // A delete of priority 6 folded into an update of priority 2 raises it.
    write("r", "edited", 2, true);
    f.store.delete(Todo::SCHEMA, "r", None, 6, true).unwrap();
    assert_eq!(ops(f, "r")[0].priority, 6);
    let ready: Vec<String> = f
        .store
        .ready_ops(far(), 10)
        .unwrap()
        .into_iter()
        .map(|o| o.record_id)
        .collect();
    assert_eq!(ready, ["p", "r", "q"]);
}

fn saves_without_enqueue_write_synced_rows(f: &Fixture) {
    prepare(&f.store);
    let data = json(&todo("s", "from server", 1));
    let out = f
        .store
        .save(&LocalWrite {
            schema: Todo::SCHEMA,
            id: "s",
            data: &data,
            user_id: Some("u1"),
            priority: 0,
            enqueue: false,
            version: Some(12),
        })
        .unwrap();
    assert!(out.created && out.op_seq.is_none());
    let rec = f.store.get(Todo::SCHEMA, "s").unwrap().unwrap();
    assert!(rec.meta.synced);
    assert_eq!(rec.meta.version, 12);
    assert_eq!(rec.meta.user_id.as_deref(), Some("u1"));
    assert_eq!(f.store.counts().unwrap().pending, 0);
}

fn a_page_of_many_new_rows_and_repeated_records_applies_in_order(f: &Fixture) {
    prepare(&f.store);
    // 250 new rows (several multi-row INSERTs), with "r7" created, updated and deleted,
    // and "r9" created then updated, inside the same page.
    let mut page: Vec<_> = (0..250)
        .map(|i| {
            let t = todo(&format!("r{i}"), &format!("t{i}"), 1);
            remote(&t.id, i + 1, Some(&t))
        })
        .collect();
    let r9 = todo("r9", "r9 second", 2);
    page.insert(20, remote("r9", 300, Some(&r9)));
    page.insert(100, remote("r7", 301, None));
    let out = f
        .store
        .apply_remote(Todo::SCHEMA, None, &page, Some("301"))
        .unwrap();
    assert_eq!(out.created.len(), 250);
    assert_eq!(out.updated, ["r9"]);
    assert_eq!(out.deleted, ["r7"]);
    assert!(f.store.get(Todo::SCHEMA, "r7").unwrap().is_none());
    let r = f.store.get(Todo::SCHEMA, "r9").unwrap().unwrap();
    assert_eq!((r.meta.version, r.data.clone()), (300, json(&r9)));
    let r = f.store.get(Todo::SCHEMA, "r249").unwrap().unwrap();
    assert_eq!(r.meta.version, 250);
    assert!(r.meta.synced);
    assert_eq!(f.store.count(Todo::SCHEMA, &all_query()).unwrap(), 249);
    assert_eq!(
        f.store.cursor(Todo::SCHEMA, None).unwrap().as_deref(),
        Some("301")
    );
}

/// A version the row already has, or an older one, is no conflict even with a pending edit:
/// under ServerWins a spurious conflict would drop the edit for stale data.
fn old_versions_of_a_record_with_a_pending_edit_are_stale_not_conflicts(f: &Fixture) {
    prepare(&f.store);
    let t = todo("s", "server", 1);
    save(&f.store, &t);
    let seq = ops(f, "s")[0].seq;
    f.store.mark_inflight(&[seq]).unwrap();
    f.store.ack_op(Todo::SCHEMA, seq, 5, None).unwrap();
    let mut edit = t.clone();
    edit.title = "local edit".into();
    save(&f.store, &edit);
    let mut old = t.clone();
    old.title = "old server copy".into();
    let out = f
        .store
        .apply_remote(
            Todo::SCHEMA,
            None,
            &[remote("s", 5, Some(&t)), remote("s", 3, Some(&old))],
            Some("5"),
        )
        .unwrap();
    assert!(out.conflicts.is_empty(), "{:?}", out.conflicts);
    assert_eq!(out.stale, ["s", "s"]);
    let rec = f.store.get(Todo::SCHEMA, "s").unwrap().unwrap();
    assert_eq!(rec.data["title"], json!("local edit"));
    assert_eq!(ops(f, "s").len(), 1);
    // A newer version still is one.
    let mut newer = t.clone();
    newer.title = "newer on the server".into();
    let out = f
        .store
        .apply_remote(
            Todo::SCHEMA,
            None,
            &[remote("s", 6, Some(&newer))],
            Some("6"),
        )
        .unwrap();
    assert_eq!(out.conflicts.len(), 1);
}

fn apply_remote_inserts_updates_skips_and_reports_conflicts(f: &Fixture) {
    prepare(&f.store);
    let a = todo("a", "remote a", 1);
    let b = todo("b", "remote b", 2);
    let out = f
        .store
        .apply_remote(
            Todo::SCHEMA,
            None,
            &[remote("a", 5, Some(&a)), remote("b", 6, Some(&b))],
            Some("6"),
        )
        .unwrap();
    assert_eq!(out.created, ["a", "b"]);
    assert_eq!(
        f.store.cursor(Todo::SCHEMA, None).unwrap().as_deref(),
        Some("6")
    );
    let rec = f.store.get(Todo::SCHEMA, "a").unwrap().unwrap();
    assert!(rec.meta.synced);
    assert_eq!(rec.meta.version, 5);
    assert_eq!(rec.data, json(&a));

    // Local edits: a pending update on a, an inflight update on b, a failed one on c.
    let mut a2 = a.clone();
    a2.title = "local a".into();
    save(&f.store, &a2);
    let mut b2 = b.clone();
    b2.title = "local b".into();
    save(&f.store, &b2);
    let bseq = ops(f, "b")[0].seq;
    f.store.mark_inflight(&[bseq]).unwrap();
    let c = todo("c", "c", 3);
    save(&f.store, &c);
    let cseq = ops(f, "c")[0].seq;
    f.store.mark_inflight(&[cseq]).unwrap();
    f.store.fail_op(cseq, "400").unwrap();

    let mut a3 = a.clone();
    a3.title = "remote a v7".into();
    let mut b3 = b.clone();
    b3.title = "remote b v8".into();
    let mut d = todo("d", "remote d", 1);
    let stale_a = a.clone();
    let out = f
        .store
        .apply_remote(
            Todo::SCHEMA,
            None,
            &[
                remote("a", 7, Some(&a3)),
                remote("b", 8, Some(&b3)),
                remote("c", 9, Some(&c)),
                remote("d", 10, Some(&d)),
            ],
            Some("10"),
        )
        .unwrap();
    let conflicted: Vec<&str> = out.conflicts.iter().map(|c| c.remote.id.as_str()).collect();
    assert_eq!(conflicted, ["a", "b", "c"]);
    assert_eq!(out.created, ["d"]);
    let ca = &out.conflicts[0];
    assert_eq!(ca.local.as_ref().unwrap().data["title"], json!("local a"));
    assert_eq!(ca.ops.len(), 1);
    assert_eq!(out.conflicts[1].ops[0].state, OpState::Inflight);
    assert_eq!(out.conflicts[2].ops[0].state, OpState::Failed);
    // Local edits were not overwritten.
    let rec = f.store.get(Todo::SCHEMA, "a").unwrap().unwrap();
    assert_eq!(rec.data["title"], json!("local a"));
    assert_eq!(rec.meta.version, 5);

    // Stale versions are skipped; newer ones update; tombstones delete.
    d.title = "remote d v11".into();
    let out = f
        .store
        .apply_remote(
            Todo::SCHEMA,
            None,
            &[
                remote("d", 10, Some(&stale_a)),
                remote("d", 11, Some(&d)),
                remote("zz", 12, None),
            ],
            None,
        )
        .unwrap();
    assert_eq!(out.stale, ["d", "zz"]);
    assert_eq!(out.updated, ["d"]);
    assert_eq!(
        f.store.cursor(Todo::SCHEMA, None).unwrap().as_deref(),
        Some("10")
    );
    let out = f
        .store
        .apply_remote(Todo::SCHEMA, None, &[remote("d", 13, None)], Some("13"))
        .unwrap();
    assert_eq!(out.deleted, ["d"]);
    assert!(f
        .store
        .record_state(Todo::SCHEMA, "d")
        .unwrap()
        .meta
        .is_none());
    // Cursors are per user.
    assert_eq!(f.store.cursor(Todo::SCHEMA, Some("bob")).unwrap(), None);
    f.store.reset_cursor(Todo::SCHEMA, None).unwrap();
    assert_eq!(f.store.cursor(Todo::SCHEMA, None).unwrap(), None);
}

fn a_failure_while_applying_a_page_keeps_rows_and_cursor(f: &Fixture) {
    prepare(&f.store);
    let a = todo("a", "v1", 1);
    f.store
        .apply_remote(Todo::SCHEMA, None, &[remote("a", 1, Some(&a))], Some("1"))
        .unwrap();
    let mut a2 = a.clone();
    a2.title = "v2".into();
    let good = remote("a", 2, Some(&a2));
    let new = remote("n", 3, Some(&todo("n", "new", 1)));
    let mut bad = remote("x", 4, Some(&todo("x", "x", 1)));
    bad.data.insert("priority".into(), json!(1_u64 << 40));
    let err = f
        .store
        .apply_remote(Todo::SCHEMA, None, &[good, new, bad], Some("4"))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::InvalidValue { field, .. } if field == "priority"),
        "{err}"
    );
    assert_eq!(
        f.store.cursor(Todo::SCHEMA, None).unwrap().as_deref(),
        Some("1")
    );
    let rec = f.store.get(Todo::SCHEMA, "a").unwrap().unwrap();
    assert_eq!(
        (rec.data["title"].clone(), rec.meta.version),
        (json!("v1"), 1)
    );
    assert!(f.store.get(Todo::SCHEMA, "n").unwrap().is_none());
}

fn conflicts_are_resolved_in_one_transaction(f: &Fixture) {
    prepare(&f.store);
    let base = todo("r", "base", 1);
    let setup = |f: &Fixture, local_title: &str| {
        let _ = f.store.delete(Todo::SCHEMA, "r", None, 0, false);
        f.store
            .apply_remote(Todo::SCHEMA, None, &[remote("r", 1, Some(&base))], None)
            .unwrap();
        let mut local = base.clone();
        local.title = local_title.into();
        save(&f.store, &local);
    };
    let mut theirs = base.clone();
    theirs.priority = 9;

    // TakeRemote: the remote record wins, local ops are dropped.
    setup(f, "mine");
    f.store
        .resolve_conflict(
            Todo::SCHEMA,
            &remote("r", 2, Some(&theirs)),
            &Resolution::TakeRemote,
        )
        .unwrap();
    let rec = f.store.get(Todo::SCHEMA, "r").unwrap().unwrap();
    assert_eq!(rec.data, json(&theirs));
    assert!(rec.meta.synced);
    assert_eq!(rec.meta.version, 2);
    assert!(ops(f, "r").is_empty());

    // KeepLocal: local data stays, the op is rebased on the remote version.
    setup(f, "mine");
    f.store
        .resolve_conflict(
            Todo::SCHEMA,
            &remote("r", 3, Some(&theirs)),
            &Resolution::KeepLocal,
        )
        .unwrap();
    let rec = f.store.get(Todo::SCHEMA, "r").unwrap().unwrap();
    assert_eq!(rec.data["title"], json!("mine"));
    assert_eq!(rec.meta.version, 3);
    let op = &ops(f, "r")[0];
    assert_eq!(
        (op.op, op.base_version, op.state),
        (OpKind::Update, 3, OpState::Pending)
    );
    assert_eq!(op.changed_fields, ["title"]);

    // Merged: the merged data is written and what differs from the remote is queued.
    setup(f, "mine");
    let mut merged = theirs.clone();
    merged.title = "mine".into();
    f.store
        .resolve_conflict(
            Todo::SCHEMA,
            &remote("r", 4, Some(&theirs)),
            &Resolution::Merged(json(&merged)),
        )
        .unwrap();
    let rec = f.store.get(Todo::SCHEMA, "r").unwrap().unwrap();
    assert_eq!(rec.data, json(&merged));
    let state = ops(f, "r");
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].changed_fields, ["title"]);
    assert_eq!(state[0].base_values["title"], json!("base"));
    assert_eq!(state[0].base_version, 4);

    // Merged equal to the remote: nothing to send, synced.
    setup(f, "mine");
    f.store
        .resolve_conflict(
            Todo::SCHEMA,
            &remote("r", 5, Some(&theirs)),
            &Resolution::Merged(json(&theirs)),
        )
        .unwrap();
    assert!(ops(f, "r").is_empty());
    assert!(f.store.get(Todo::SCHEMA, "r").unwrap().unwrap().meta.synced);

    // Against a remote tombstone, KeepLocal and Merged re-create the record.
    for resolution in [Resolution::KeepLocal, Resolution::Merged(json(&merged))] {
        setup(f, "mine");
        f.store
            .resolve_conflict(Todo::SCHEMA, &remote("r", 6, None), &resolution)
            .unwrap();
        let state = ops(f, "r");
        assert_eq!(state.len(), 1, "{resolution:?}");
        assert_eq!(state[0].op, OpKind::Create, "{resolution:?}");
        assert_eq!(state[0].base_version, 6);
        assert!(f.store.get(Todo::SCHEMA, "r").unwrap().is_some());
    }
    // TakeRemote of a tombstone deletes the local record.
    setup(f, "mine");
    f.store
        .resolve_conflict(Todo::SCHEMA, &remote("r", 7, None), &Resolution::TakeRemote)
        .unwrap();
    let state = f.store.record_state(Todo::SCHEMA, "r").unwrap();
    assert!(state.meta.is_none() && state.ops.is_empty());
    // An inflight op that got a 409: KeepLocal makes it pending again, rebased.
    setup(f, "mine");
    let seq = ops(f, "r")[0].seq;
    f.store.mark_inflight(&[seq]).unwrap();
    let mut mine2 = base.clone();
    mine2.title = "mine2".into();
    save(&f.store, &mine2);
    f.store
        .resolve_conflict(
            Todo::SCHEMA,
            &remote("r", 8, Some(&theirs)),
            &Resolution::KeepLocal,
        )
        .unwrap();
    let state = ops(f, "r");
    assert_eq!(state.len(), 1);
    assert_eq!(
        (state[0].state, state[0].base_version),
        (OpState::Pending, 8)
    );
}

fn query_fixture(f: &Fixture) -> Vec<Todo> {
    prepare(&f.store);
    let titles = [
        ("q1", "Apple pie", 3, false, Some("2024-01-02T00:00:00Z")),
        ("q2", "apple juice", 1, true, None),
        ("q3", "Banana", 3, false, Some("2024-01-01T00:00:00Z")),
        (
            "q4",
            "cherry APPLE",
            2,
            true,
            Some("2024-03-01T10:00:00.5Z"),
        ),
        ("q5", "Date", 5, false, None),
        ("q6", "100% apple", 0, false, Some("2023-12-31T23:59:59Z")),
        ("q7", "", 3, true, None),
    ];
    let todos: Vec<Todo> = titles
        .iter()
        .map(|(id, title, p, done, due)| Todo {
            id: (*id).into(),
            title: (*title).into(),
            description: format!("{id} desc"),
            is_completed: *done,
            priority: *p,
            tags: vec![],
            due: due.map(|d| d.parse().unwrap()),
        })
        .collect();
    for t in &todos {
        save(&f.store, t);
    }
    // A tombstone that no query may return.
    let mut gone = todo("q8", "Apple", 3);
    gone.is_completed = false;
    save(&f.store, &gone);
    let s = ops(f, "q8")[0].seq;
    f.store.mark_inflight(&[s]).unwrap();
    f.store.ack_op(Todo::SCHEMA, s, 1, None).unwrap();
    f.store.delete(Todo::SCHEMA, "q8", None, 0, true).unwrap();
    todos
}

fn queries_run_in_sql_with_the_same_results_as_in_memory(f: &Fixture) {
    let todos = query_fixture(f);
    let t = Todo::fields;
    let due: DateTime<Utc> = "2024-01-01T12:00:00Z".parse().unwrap();
    let queries: Vec<(&str, Query<Todo>)> = vec![
        ("all", Query::new()),
        ("eq", Query::new().filter(t().priority.eq(3))),
        ("ne", Query::new().filter(t().priority.ne(3))),
        (
            "gt/le",
            Query::new()
                .filter(t().priority.gt(1))
                .filter(t().priority.le(3)),
        ),
        (
            "ge/lt",
            Query::new().filter(t().priority.ge(2).and(t().priority.lt(5))),
        ),
        ("bool", Query::new().filter(t().is_completed.eq(true))),
        (
            "contains is case-sensitive",
            Query::new().filter(t().title.contains("apple")),
        ),
        (
            "contains %",
            Query::new().filter(t().title.contains("100%")),
        ),
        (
            "starts_with",
            Query::new().filter(t().title.starts_with("Apple")),
        ),
        (
            "starts_with empty",
            Query::new().filter(t().title.starts_with("")),
        ),
        (
            "ends_with",
            Query::new().filter(t().title.ends_with("APPLE")),
        ),
        (
            "ends_with longer",
            Query::new().filter(t().title.ends_with("xx Date")),
        ),
        (
            "ends_with empty",
            Query::new().filter(t().title.ends_with("")),
        ),
        ("text order", Query::new().filter(t().title.gt("B"))),
        ("in", Query::new().filter(t().priority.in_list([1, 5]))),
        (
            "in empty",
            Query::new().filter(t().priority.in_list(Vec::<i32>::new())),
        ),
        ("null", Query::new().filter(t().due.is_null())),
        ("not null", Query::new().filter(t().due.is_not_null())),
        ("timestamp gt", Query::new().filter(t().due.gt(due))),
        (
            "timestamp eq",
            Query::new().filter(
                t().due
                    .eq("2024-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()),
            ),
        ),
        ("ne excludes null", Query::new().filter(t().due.ne(due))),
        (
            "nested and/or",
            Query::new().filter(
                t().priority
                    .eq(3)
                    .and(t().is_completed.eq(false))
                    .or(t().title.starts_with("apple").and(t().priority.lt(2))),
            ),
        ),
        ("empty or", Query::new().filter(Condition::any(Vec::new()))),
        ("empty and", Query::new().filter(Condition::all(Vec::new()))),
        (
            "order desc then id",
            Query::new().order_by(t().priority.desc()),
        ),
        (
            "two keys",
            Query::new()
                .order_by(t().is_completed.asc())
                .order_by(t().title.desc()),
        ),
        ("nulls first asc", Query::new().order_by(t().due.asc())),
        ("nulls last desc", Query::new().order_by(t().due.desc())),
        (
            "limit offset",
            Query::new().order_by(t().priority.asc()).limit(3).offset(2),
        ),
        (
            "offset only",
            Query::new().order_by(t().title.asc()).offset(5),
        ),
        ("limit 0", Query::new().limit(0)),
    ];
    for (name, q) in queries {
        let got: Vec<String> = f
            .store
            .query(Todo::SCHEMA, &from(&q))
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        // In memory: sorted by id first, so ties break by id as in SQL.
        let mut sorted = todos.clone();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        let want: Vec<String> = q.apply(sorted).into_iter().map(|t| t.id).collect();
        assert_eq!(got, want, "{name} ({})", f.backend);
        let count = f.store.count(Todo::SCHEMA, &from(&q)).unwrap();
        if q.limit_value().is_none() && q.offset_value().is_none() {
            assert_eq!(count, got.len() as u64, "{name}: count");
        }
    }
}

#[test]
fn a_filter_on_an_indexed_field_uses_the_index() {
    let f = support::sqlite();
    query_fixture(&f);
    let t = Todo::fields;
    for q in [
        Query::new().filter(t().priority.eq(3)),
        Query::new().filter(t().priority.in_list([1, 3])),
        Query::new()
            .filter(t().priority.eq(3).and(t().title.starts_with("A")))
            .order_by(t().title.asc())
            .limit(2),
    ] {
        let plan = f.store.explain(Todo::SCHEMA, &from(&q)).unwrap().join("\n");
        assert!(
            plan.contains("USING INDEX todos_priority_idx"),
            "plan does not use the index:\n{plan}"
        );
    }
    // Sanity: a filter on an unindexed field scans.
    let plan = f
        .store
        .explain(Todo::SCHEMA, &from(&Query::new().filter(t().title.eq("x"))))
        .unwrap()
        .join("\n");
    assert!(!plan.contains("todos_priority_idx"), "{plan}");
}

fn metadata_and_cursors_are_per_user(f: &Fixture) {
    assert_eq!(f.store.metadata(None, "device_id").unwrap(), None);
    f.store.set_metadata(None, "device_id", "d1").unwrap();
    f.store.set_metadata(Some("u"), "device_id", "d2").unwrap();
    f.store.set_metadata(None, "device_id", "d3").unwrap();
    assert_eq!(
        f.store.metadata(None, "device_id").unwrap().as_deref(),
        Some("d3")
    );
    assert_eq!(
        f.store.metadata(Some("u"), "device_id").unwrap().as_deref(),
        Some("d2")
    );
}

fn quarantine_keeps_replaces_lists_and_releases(f: &Fixture) {
    use sync_core::store::QuarantinedRecord;
    let raw = serde_json::json!({"id": "q1", "title": 5});
    let first = QuarantinedRecord::new(Some("q1".into()), raw.clone(), "title: not a string");
    let keyless = QuarantinedRecord::new(None, serde_json::json!([1, 2]), "not an object");
    assert!(keyless.key.starts_with('#'), "{}", keyless.key);
    assert_eq!(
        keyless.key,
        QuarantinedRecord::new(None, serde_json::json!([1, 2]), "again").key,
        "the key of a record without id is stable"
    );
    f.store
        .quarantine(Todo::SCHEMA, &[first, keyless.clone()])
        .unwrap();
    assert_eq!(f.store.counts().unwrap().quarantined, 2);
    // The same record again replaces its entry.
    let again = QuarantinedRecord::new(Some("q1".into()), raw.clone(), "still not a string");
    f.store.quarantine(Todo::SCHEMA, &[again]).unwrap();
    let kept = f.store.quarantined(Todo::SCHEMA).unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let q1 = kept.iter().find(|r| r.key == "q1").expect("q1 kept");
    assert_eq!(
        (q1.raw.clone(), q1.error.as_str()),
        (raw, "still not a string")
    );
    assert_eq!(q1.id.as_deref(), Some("q1"));
    assert_eq!(
        f.store
            .release_quarantined(Todo::SCHEMA, &["q1".to_owned(), "absent".to_owned()])
            .unwrap(),
        1
    );
    let left = f.store.quarantined(Todo::SCHEMA).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key, keyless.key);
    assert_eq!(f.store.counts().unwrap().quarantined, 1);
}

fn prepare_model_reports_a_missing_table_without_auto_migration(f: &Fixture) {
    let err = f.store.prepare_model(Todo::SCHEMA, false).unwrap_err();
    assert!(
        matches!(err, StoreError::MissingTable { table: "todos", .. }),
        "{err}"
    );
    f.store.prepare_model(Todo::SCHEMA, true).unwrap();
    f.store.prepare_model(Todo::SCHEMA, true).unwrap();
    f.store.prepare_model(Todo::SCHEMA, false).unwrap();
}

fn a_stored_value_that_no_longer_deserialises_names_model_id_and_field(f: &Fixture) {
    use diesel::RunQueryDsl;
    prepare(&f.store);
    save(&f.store, &todo("c1", "x", 1));
    let sql = "UPDATE todos SET tags = 'not json' WHERE id = 'c1'";
    if f.backend == "sqlite" {
        let mut conn =
            <diesel::SqliteConnection as diesel::Connection>::establish(&f.location).unwrap();
        diesel::sql_query(sql).execute(&mut conn).unwrap();
    } else {
        let mut conn =
            <diesel::PgConnection as diesel::Connection>::establish(&f.location).unwrap();
        diesel::sql_query(sql).execute(&mut conn).unwrap();
    }
    let err = f.store.get(Todo::SCHEMA, "c1").unwrap_err();
    match &err {
        StoreError::CorruptRow {
            model, id, field, ..
        } => assert_eq!(
            (*model, id.as_str(), field.as_str()),
            ("todo", "c1", "tags")
        ),
        other => panic!("{other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("todo") && text.contains("c1") && text.contains("tags"),
        "{text}"
    );
    // The record can still be deleted.
    f.store.delete(Todo::SCHEMA, "c1", None, 0, true).unwrap();
}

fn user_ids_are_kept_on_rows_and_ops(f: &Fixture) {
    prepare(&f.store);
    let data = json(&todo("u", "x", 1));
    f.store
        .save(&LocalWrite {
            schema: Todo::SCHEMA,
            id: "u",
            data: &data,
            user_id: Some("alice"),
            priority: 3,
            enqueue: true,
            version: None,
        })
        .unwrap();
    let state = f.store.record_state(Todo::SCHEMA, "u").unwrap();
    assert_eq!(state.meta.unwrap().user_id.as_deref(), Some("alice"));
    assert_eq!(state.ops[0].user_id.as_deref(), Some("alice"));
    assert_eq!(state.ops[0].priority, 3);
    let _: JsonObject = data;
}

/// A record whose id the remote assigned (`RestBackend::server_ids`): the row and every op
/// of the record move to the new id together, so the update queued behind the create goes
/// to the remote's id; a copy pulled under the new id gives way to the local row, and other
/// records are untouched.
fn a_rekey_moves_the_row_and_every_queued_op_of_the_record(f: &Fixture) {
    prepare(&f.store);
    let mut t = todo("local-1", "first", 1);
    save(&f.store, &t);
    let create = ops(f, "local-1")[0].seq;
    f.store.mark_inflight(&[create]).unwrap();
    t.title = "edited".into();
    save(&f.store, &t);
    save(&f.store, &todo("other", "x", 2));
    // The remote's copy arrived by a pull before the create's answer.
    let pulled = todo("srv-9", "first", 1);
    f.store
        .apply_remote(
            Todo::SCHEMA,
            None,
            &[remote("srv-9", 1, Some(&pulled))],
            None,
        )
        .unwrap();
    let before: Vec<(OpKind, OpState)> =
        ops(f, "local-1").iter().map(|o| (o.op, o.state)).collect();
    assert_eq!(
        before,
        [
            (OpKind::Create, OpState::Inflight),
            (OpKind::Update, OpState::Pending)
        ]
    );

    assert!(f
        .store
        .rekey_record(Todo::SCHEMA, "local-1", "srv-9")
        .unwrap());
    assert!(f.store.get(Todo::SCHEMA, "local-1").unwrap().is_none());
    assert!(ops(f, "local-1").is_empty());
    let row = f.store.get(Todo::SCHEMA, "srv-9").unwrap().unwrap();
    assert_eq!(row.id, "srv-9");
    assert_eq!(row.data["id"], "srv-9", "the id field moved with the row");
    assert_eq!(
        row.data["title"], "edited",
        "the local row, not the pulled copy"
    );
    let after: Vec<(OpKind, OpState)> = ops(f, "srv-9").iter().map(|o| (o.op, o.state)).collect();
    assert_eq!(after, before);
    assert_eq!(ops(f, "other").len(), 1);
    assert_eq!(
        f.store.get(Todo::SCHEMA, "other").unwrap().unwrap().data["title"],
        "x"
    );

    // The create is acknowledged under the new id; the update behind it is what is left.
    f.store.ack_op(Todo::SCHEMA, create, 1, None).unwrap();
    let left = ops(f, "srv-9");
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].op, left[0].base_version), (OpKind::Update, 1));
    // No row: nothing to move, and nothing else changes.
    assert!(!f
        .store
        .rekey_record(Todo::SCHEMA, "nope", "srv-10")
        .unwrap());
    assert!(f.store.get(Todo::SCHEMA, "srv-10").unwrap().is_none());
}
