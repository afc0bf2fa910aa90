//! The status counts (`LocalStore::counts`) are kept in a row that triggers update with every
//! change to the outbox and the quarantine (bookkeeping migration 5). These tests take every
//! kind of outbox transition the store has and compare the kept counts, after each one, with
//! a recount through another path: every op of every record the test touched
//! (`record_state`) and every quarantined record (`quarantined`).

#![allow(clippy::unwrap_used)]

mod support;

use chrono::{TimeDelta, Utc};
use serde_json::json;
use support::{json, prepare, save, todo, Fixture, Gadget, Todo};
use sync_core::store::{
    Ack, LocalStore, LocalWrite, OpState, OutboxCounts, QuarantinedRecord, RemoteRecord, Resolution,
};
use sync_core::SyncModel;

use diesel::connection::SimpleConnection;
use diesel::Connection;

sync_testkit::backend_matrix!(
    sync:
    kept_counts_equal_a_recount_after_every_outbox_transition,
    kept_counts_equal_a_recount_after_batches_and_reopening,
    the_migration_counts_what_a_store_of_an_earlier_build_holds,
);

/// Record ids the tests use (the recount looks at these).
const IDS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

fn recount(f: &Fixture) -> OutboxCounts {
    let mut out = OutboxCounts::default();
    // Only `Todo` records get ops here (`Gadget` is used for the quarantine).
    for id in IDS {
        for op in f.store.record_state(Todo::SCHEMA, id).unwrap().ops {
            match op.state {
                OpState::Failed => out.failed += 1,
                OpState::Pending | OpState::Inflight => out.pending += 1,
            }
        }
    }
    out.quarantined = [Todo::SCHEMA, Gadget::SCHEMA]
        .into_iter()
        .map(|s| f.store.quarantined(s).unwrap().len() as u64)
        .sum();
    out
}

/// Checks the kept counts against the recount and returns them.
#[track_caller]
fn check(f: &Fixture, after: &str) -> OutboxCounts {
    let kept = f.store.counts().unwrap();
    assert_eq!(kept, recount(f), "{}: counts after {after}", f.backend);
    kept
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

fn seqs(f: &Fixture, id: &str) -> Vec<i64> {
    f.store
        .record_state(Todo::SCHEMA, id)
        .unwrap()
        .ops
        .iter()
        .map(|o| o.seq)
        .collect()
}

fn kernel(f: &Fixture) {
    prepare(&f.store);
    check(f, "open");

    // Save (create), then an edit folded into it (coalesce), then another record.
    let mut a = todo("a", "one", 1);
    save(&f.store, &a);
    a.title = "two".into();
    save(&f.store, &a);
    assert_eq!(check(f, "save + coalesce").pending, 1);
    save(&f.store, &todo("b", "b", 1));
    save(&f.store, &todo("c", "c", 1));
    save(&f.store, &todo("d", "d", 1));
    assert_eq!(check(f, "saves").pending, 4);

    // Claim (pending -> in flight), then ack: the op leaves.
    let claimed = f.store.claim_ops(Todo::SCHEMA, &seqs(f, "a")).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(check(f, "claim").pending, 4);
    f.store
        .ack_ops(
            Todo::SCHEMA,
            &[Ack {
                seq: claimed[0].op.seq,
                version: 1,
                data: None,
            }],
        )
        .unwrap();
    assert_eq!(check(f, "ack").pending, 3);

    // Fail (in flight -> failed), retry one, fail again, retry all, fail and discard.
    let b = seqs(f, "b")[0];
    f.store.mark_inflight(&[b]).unwrap();
    f.store.fail_op(b, "422").unwrap();
    assert_eq!(check(f, "fail").failed, 1);
    assert_eq!(f.store.retry_failed(Some(b)).unwrap(), 1);
    assert_eq!(check(f, "retry_failed(seq)").failed, 0);
    f.store.mark_inflight(&[b]).unwrap();
    f.store.fail_op(b, "422 again").unwrap();
    check(f, "fail again");
    assert_eq!(f.store.retry_failed(None).unwrap(), 1);
    check(f, "retry_failed(all)");
    f.store.mark_inflight(&[b]).unwrap();
    f.store.fail_op(b, "422 for good").unwrap();
    f.store.discard_op(b).unwrap();
    assert_eq!(check(f, "discard").failed, 0);

    // Reschedule (in flight -> pending, later), release, requeue after a "crash".
    let c = seqs(f, "c")[0];
    f.store.mark_inflight(&[c]).unwrap();
    f.store
        .reschedule_op(c, Utc::now() + TimeDelta::seconds(60), "503")
        .unwrap();
    check(f, "reschedule");
    let d = seqs(f, "d")[0];
    f.store.mark_inflight(&[d]).unwrap();
    let mut d_edit = todo("d", "d2", 1);
    d_edit.description = "meanwhile".into();
    save(&f.store, &d_edit);
    assert_eq!(check(f, "save behind an in-flight op").pending, 3);
    f.store.release_inflight(&[d]).unwrap();
    assert_eq!(check(f, "release_inflight (folds)").pending, 2);
    f.store.mark_inflight(&seqs(f, "d")).unwrap();
    assert_eq!(f.store.requeue_inflight().unwrap(), 1);
    check(f, "requeue_inflight");

    // Delete: of an unsent create (both vanish), of a synced record (queues a delete).
    save(&f.store, &todo("e", "e", 1));
    check(f, "save e");
    f.store.delete(Todo::SCHEMA, "e", None, 0, true).unwrap();
    check(f, "delete of an unsent create");
    f.store.delete(Todo::SCHEMA, "a", None, 0, true).unwrap();
    assert_eq!(check(f, "delete of a synced record").pending, 3);
    // A failed delete, discarded through the failed list.
    let a_del = seqs(f, "a")[0];
    f.store.mark_inflight(&[a_del]).unwrap();
    f.store.fail_op(a_del, "403").unwrap();
    let failed = f.store.failed_ops().unwrap();
    assert_eq!(failed.len(), 1);
    check(f, "failed delete");
    f.store.discard_op(failed[0].seq).unwrap();
    check(f, "discarded delete");

    // Conflict resolution: each kind, on a record with a local edit.
    let base = todo("f", "base", 1);
    let mut theirs = base.clone();
    theirs.priority = 9;
    let mut version = 1;
    for resolution in [
        Resolution::TakeRemote,
        Resolution::KeepLocal,
        Resolution::Merged(json(&todo("f", "merged", 5))),
    ] {
        f.store
            .apply_remote(
                Todo::SCHEMA,
                None,
                &[remote("f", version, Some(&base))],
                None,
            )
            .unwrap();
        let mut local = base.clone();
        local.title = "mine".into();
        save(&f.store, &local);
        check(f, "a local edit before a conflict");
        version += 1;
        f.store
            .resolve_conflict(
                Todo::SCHEMA,
                &remote("f", version, Some(&theirs)),
                &resolution,
            )
            .unwrap();
        check(f, &format!("resolve_conflict {resolution:?}"));
        // Settle what the resolution queued, so the next round starts from a synced record.
        for seq in seqs(f, "f") {
            f.store.mark_inflight(&[seq]).unwrap();
            version += 1;
            f.store.ack_op(Todo::SCHEMA, seq, version, None).unwrap();
        }
        check(f, "ack after the resolution");
        version += 1;
    }

    // A save without an op (`enqueue: false`) changes no count.
    let before = check(f, "before a save without an op");
    let data = json(&todo("f", "quiet", 1));
    f.store
        .save(&LocalWrite {
            schema: Todo::SCHEMA,
            id: "f",
            data: &data,
            user_id: None,
            priority: 0,
            enqueue: false,
            version: None,
        })
        .unwrap();
    assert_eq!(check(f, "save without an op"), before);

    // Quarantine, the same record again (replaces), another model, release.
    let raw = json!({"id": "q1", "title": 5});
    f.store
        .quarantine(
            Todo::SCHEMA,
            &[
                QuarantinedRecord::new(Some("q1".into()), raw.clone(), "title"),
                QuarantinedRecord::new(None, json!([1]), "not an object"),
            ],
        )
        .unwrap();
    assert_eq!(check(f, "quarantine").quarantined, 2);
    f.store
        .quarantine(
            Todo::SCHEMA,
            &[QuarantinedRecord::new(Some("q1".into()), raw, "again")],
        )
        .unwrap();
    assert_eq!(check(f, "quarantine again (replaces)").quarantined, 2);
    f.store
        .quarantine(
            Gadget::SCHEMA,
            &[QuarantinedRecord::new(Some("q1".into()), json!({}), "g")],
        )
        .unwrap();
    assert_eq!(check(f, "quarantine of another model").quarantined, 3);
    assert_eq!(
        f.store
            .release_quarantined(Todo::SCHEMA, &["q1".into(), "absent".into()])
            .unwrap(),
        1
    );
    assert_eq!(check(f, "release_quarantined").quarantined, 2);
}

fn kept_counts_equal_a_recount_after_every_outbox_transition(f: &Fixture) {
    kernel(f);
}

/// Batched saves and acks (many rows per statement, which Postgres' statement-level
/// triggers see at once), and a store reopened on the same database.
fn kept_counts_equal_a_recount_after_batches_and_reopening(f: &Fixture) {
    prepare(&f.store);
    let models: Vec<Todo> = IDS.iter().map(|id| todo(id, "x", 1)).collect();
    let data: Vec<_> = models.iter().map(json).collect();
    let writes: Vec<LocalWrite<'_>> = models
        .iter()
        .zip(&data)
        .map(|(m, d)| LocalWrite {
            schema: Todo::SCHEMA,
            id: &m.id,
            data: d,
            user_id: None,
            priority: 0,
            enqueue: true,
            version: None,
        })
        .collect();
    f.store.save_batch(&writes).unwrap();
    assert_eq!(check(f, "save_batch").pending, 6);
    let all: Vec<i64> = IDS.iter().flat_map(|id| seqs(f, id)).collect();
    let claimed = f.store.claim_ops(Todo::SCHEMA, &all).unwrap();
    assert_eq!(claimed.len(), 6);
    check(f, "claim of a batch");
    let acks: Vec<Ack> = claimed
        .iter()
        .take(4)
        .map(|c| Ack {
            seq: c.op.seq,
            version: 1,
            data: None,
        })
        .collect();
    f.store.ack_ops(Todo::SCHEMA, &acks).unwrap();
    assert_eq!(check(f, "ack of part of a batch").pending, 2);
    for c in claimed.iter().skip(4) {
        f.store.fail_op(c.op.seq, "422").unwrap();
    }
    assert_eq!(check(f, "fails").failed, 2);

    // Reopening counts nothing again: the row is kept in the database.
    let reopened = support::reopen(f);
    let kept = reopened.counts().unwrap();
    assert_eq!(
        kept,
        OutboxCounts {
            pending: 0,
            failed: 2,
            quarantined: 0
        }
    );
    assert_eq!(reopened.retry_failed(None).unwrap(), 2);
    assert_eq!(reopened.counts().unwrap().pending, 2);
    drop(reopened);
    check(f, "changes through another handle");
}

/// Runs SQL on the fixture's database through a connection of its own.
fn raw_sql(f: &Fixture, sql: &str) {
    match f.backend {
        "sqlite" => diesel::SqliteConnection::establish(&f.location)
            .unwrap()
            .batch_execute(sql)
            .unwrap(),
        _ => diesel::PgConnection::establish(&f.location)
            .unwrap()
            .batch_execute(sql)
            .unwrap(),
    }
}

/// A store written by a build before migration 5 (no counts row, no triggers) is counted
/// once when a build with it opens the store.
fn the_migration_counts_what_a_store_of_an_earlier_build_holds(f: &Fixture) {
    prepare(&f.store);
    for id in ["a", "b", "c", "d"] {
        save(&f.store, &todo(id, "x", 1));
    }
    let b = seqs(f, "b")[0];
    f.store.mark_inflight(&[b]).unwrap();
    f.store.fail_op(b, "422").unwrap();
    f.store
        .quarantine(
            Todo::SCHEMA,
            &[QuarantinedRecord::new(Some("q".into()), json!({}), "bad")],
        )
        .unwrap();
    let expected = check(f, "the writes of the earlier build");
    assert_eq!((expected.pending, expected.failed), (3, 1));

    // Back to the bookkeeping of version 4 (migration 7 first: it keeps the largest seq in
    // the counts row), with a different outbox written meanwhile.
    let downs = match f.backend {
        "sqlite" => [
            include_str!("../bookkeeping/sqlite/00000000000007_sync_diesel_lean_outbox/down.sql"),
            include_str!("../bookkeeping/sqlite/00000000000005_sync_diesel_outbox_counts/down.sql"),
        ],
        _ => [
            include_str!("../bookkeeping/postgres/00000000000007_sync_diesel_lean_outbox/down.sql"),
            include_str!(
                "../bookkeeping/postgres/00000000000005_sync_diesel_outbox_counts/down.sql"
            ),
        ],
    };
    for down in downs {
        raw_sql(f, down);
    }
    raw_sql(
        f,
        "DELETE FROM __diesel_schema_migrations WHERE version IN ('00000000000005', '00000000000007'); \
         DELETE FROM _sync_outbox WHERE record_id = 'c'",
    );
    let reopened = support::reopen(f);
    assert_eq!(
        reopened.counts().unwrap(),
        OutboxCounts {
            pending: 2,
            failed: 1,
            quarantined: 1
        }
    );
    drop(reopened);
    check(f, "the migration");
}
