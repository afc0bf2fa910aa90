//! The kept checksum of what a store knows of the remote (`LocalStore::known_checksum`, the
//! `_sync_checksums` row changed by every write) equals a recount by scan
//! (`known_versions().checksum()`) after every kind of write, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{json, prepare, save, todo, Fixture, Todo};
use sync_core::store::{LocalStore, LocalWrite, RemoteRecord, Resolution};
use sync_core::SyncModel;

sync_testkit::backend_matrix!(
    sync:
    the_kept_checksum_equals_a_recount_after_every_kind_of_write,
    a_record_re_created_over_its_tombstone_is_known_once,
);

/// A store opened without kept checksums scans instead, and one that keeps them again after
/// writes made without counts afresh (no stale sums).
#[test]
fn a_store_without_checksums_scans_and_a_later_one_counts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = sync_diesel::DieselStore::open_sqlite_blocking(&path).unwrap();
    prepare(&store);
    store
        .apply_remote(
            Todo::SCHEMA,
            None,
            &[remote("a", 1, Some(&todo("a", "a", 1)))],
            None,
        )
        .unwrap();
    let kept = store.known_checksum(Todo::SCHEMA).unwrap();
    assert_eq!(kept.0, 1);
    drop(store);
    let store = sync_diesel::DieselStore::open_sqlite_blocking(&path)
        .unwrap()
        .without_checksums()
        .unwrap();
    prepare(&store);
    store
        .apply_remote(
            Todo::SCHEMA,
            None,
            &[remote("b", 2, Some(&todo("b", "b", 1)))],
            None,
        )
        .unwrap();
    let scanned = store.known_checksum(Todo::SCHEMA).unwrap();
    assert_eq!(scanned.0, 2, "scanned, with b");
    drop(store);
    let store = sync_diesel::DieselStore::open_sqlite_blocking(&path).unwrap();
    prepare(&store);
    assert_eq!(
        store.known_checksum(Todo::SCHEMA).unwrap(),
        scanned,
        "counted afresh"
    );
    store
        .apply_remote(Todo::SCHEMA, None, &[remote("c", 3, None)], None)
        .unwrap();
    let known = store.known_versions(Todo::SCHEMA).unwrap();
    assert_eq!(
        store.known_checksum(Todo::SCHEMA).unwrap(),
        (3, known.checksum())
    );
}

/// Guards against: a record deleted (tombstone remembered), created again here and
/// acknowledged, known twice (the live row and the old tombstone), so the store's checksum
/// never equals the server's, which knows each record once (found by the convergence suite's
/// checksum comparison).
fn a_record_re_created_over_its_tombstone_is_known_once(f: &Fixture) {
    prepare(&f.store);
    save(&f.store, &todo("r", "first", 1));
    let seq = first_op(f, "r");
    f.store.mark_inflight(&[seq]).unwrap();
    f.store.ack_op(Todo::SCHEMA, seq, 1, None).unwrap();
    f.store.delete(Todo::SCHEMA, "r", None, 0, true).unwrap();
    let seq = first_op(f, "r");
    f.store.mark_inflight(&[seq]).unwrap();
    f.store.ack_op(Todo::SCHEMA, seq, 2, None).unwrap();
    assert_eq!(
        f.store.known_versions(Todo::SCHEMA).unwrap().known,
        vec![("r".to_owned(), 2, true)]
    );
    // Created again, acknowledged one by one and (for a second record) in a batch.
    save(&f.store, &todo("r", "again", 1));
    let seq = first_op(f, "r");
    f.store.mark_inflight(&[seq]).unwrap();
    f.store.ack_op(Todo::SCHEMA, seq, 3, None).unwrap();
    assert_eq!(
        f.store.known_versions(Todo::SCHEMA).unwrap().known,
        vec![("r".to_owned(), 3, false)]
    );
    f.store
        .apply_remote(Todo::SCHEMA, None, &[remote("q", 4, None)], None)
        .unwrap();
    save(&f.store, &todo("q", "over a pulled tombstone", 1));
    let seq = first_op(f, "q");
    f.store.mark_inflight(&[seq]).unwrap();
    f.store
        .ack_ops(
            Todo::SCHEMA,
            &[sync_core::store::Ack {
                seq,
                version: 5,
                data: None,
            }],
        )
        .unwrap();
    assert_eq!(
        f.store.known_versions(Todo::SCHEMA).unwrap().known,
        vec![("q".to_owned(), 5, false), ("r".to_owned(), 3, false)]
    );
    check(f, "re-creations");
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

#[track_caller]
fn check(f: &Fixture, after: &str) {
    let kept = f.store.known_checksum(Todo::SCHEMA).unwrap();
    let known = f.store.known_versions(Todo::SCHEMA).unwrap();
    let scanned = (known.known.len() as u64, known.checksum());
    assert_eq!(
        kept, scanned,
        "after {after}: kept != recount; known = {:?}",
        known.known
    );
}

fn first_op(f: &Fixture, id: &str) -> i64 {
    f.store.record_state(Todo::SCHEMA, id).unwrap().ops[0].seq
}

fn the_kept_checksum_equals_a_recount_after_every_kind_of_write(f: &Fixture) {
    prepare(&f.store);
    check(f, "nothing");
    // Local saves: nothing the remote versioned yet.
    save(&f.store, &todo("a", "a", 1));
    save(&f.store, &todo("b", "b", 1));
    check(f, "local saves");
    // Acknowledged creates: one by one, then a batch (its versions change in bulk).
    for (id, version) in [("a", 1), ("b", 2)] {
        let seq = first_op(f, id);
        f.store.mark_inflight(&[seq]).unwrap();
        f.store.ack_op(Todo::SCHEMA, seq, version, None).unwrap();
    }
    check(f, "single acks");
    for id in ["x1", "x2", "x3"] {
        save(&f.store, &todo(id, id, 1));
    }
    let seqs: Vec<i64> = ["x1", "x2", "x3"]
        .iter()
        .map(|id| first_op(f, id))
        .collect();
    f.store.mark_inflight(&seqs).unwrap();
    let acks: Vec<sync_core::store::Ack> = seqs
        .iter()
        .zip([20, 21, 22])
        .map(|(&seq, version)| sync_core::store::Ack {
            seq,
            version,
            data: None,
        })
        .collect();
    f.store.ack_ops(Todo::SCHEMA, &acks).unwrap();
    assert_ne!(f.store.known_checksum(Todo::SCHEMA).unwrap().0, 0);
    check(f, "acks");
    // A pulled page: new rows, an update, a tombstone of a held row and of an unknown one, a
    // stale copy.
    let page = [
        remote("c", 3, Some(&todo("c", "c", 1))),
        remote("d", 4, Some(&todo("d", "d", 1))),
        remote("a", 5, Some(&todo("a", "a2", 2))),
        remote("b", 6, None),
        remote("never-seen", 7, None),
        remote("c", 2, Some(&todo("c", "old", 1))),
    ];
    f.store
        .apply_remote(Todo::SCHEMA, None, &page, Some("7"))
        .unwrap();
    check(f, "a pulled page");
    // A newer tombstone over a remembered one, and a record re-created over a tombstone.
    f.store
        .apply_remote(
            Todo::SCHEMA,
            None,
            &[
                remote("never-seen", 9, None),
                remote("b", 10, Some(&todo("b", "back", 1))),
            ],
            Some("10"),
        )
        .unwrap();
    check(f, "tombstones replaced and a re-creation");
    // A local delete of a synced record, then its acknowledgement.
    f.store.delete(Todo::SCHEMA, "c", None, 0, true).unwrap();
    check(f, "a local delete");
    let seq = first_op(f, "c");
    f.store.mark_inflight(&[seq]).unwrap();
    f.store.ack_op(Todo::SCHEMA, seq, 11, None).unwrap();
    check(f, "an acknowledged delete");
    // An edit acknowledged with the server's data.
    let mut d = todo("d", "d", 1);
    d.title = "edited".into();
    save(&f.store, &d);
    let seq = first_op(f, "d");
    f.store.mark_inflight(&[seq]).unwrap();
    let mut server = json(&d);
    server.insert("title".into(), json!("normalised"));
    f.store
        .ack_op(Todo::SCHEMA, seq, 12, Some(&server))
        .unwrap();
    check(f, "an acknowledged edit");
    // Conflicts settled both ways.
    let mut mine = todo("a", "mine", 1);
    mine.priority = 3;
    save(&f.store, &mine);
    f.store
        .resolve_conflict(
            Todo::SCHEMA,
            &remote("a", 13, Some(&todo("a", "theirs", 1))),
            &Resolution::KeepLocal,
        )
        .unwrap();
    check(f, "a conflict kept local");
    f.store
        .resolve_conflict(
            Todo::SCHEMA,
            &remote("a", 14, Some(&todo("a", "theirs again", 1))),
            &Resolution::TakeRemote,
        )
        .unwrap();
    check(f, "a conflict taken remote");
    // Saves without an op (a remote-first write) at a version.
    let data = json(&todo("e", "remote first", 1));
    f.store
        .save(&LocalWrite {
            schema: Todo::SCHEMA,
            id: "e",
            data: &data,
            user_id: None,
            priority: 0,
            enqueue: false,
            version: Some(15),
        })
        .unwrap();
    check(f, "a save at a version");
    // A delete without an op, a re-key, and a repair that forgets records.
    f.store.delete(Todo::SCHEMA, "e", None, 0, false).unwrap();
    check(f, "a delete without an op");
    save(&f.store, &todo("local-1", "to re-key", 1));
    f.store
        .rekey_record(Todo::SCHEMA, "local-1", "server-1")
        .unwrap();
    let seq = first_op(f, "server-1");
    f.store.mark_inflight(&[seq]).unwrap();
    f.store.ack_op(Todo::SCHEMA, seq, 16, None).unwrap();
    f.store
        .rekey_record(Todo::SCHEMA, "server-1", "server-2")
        .unwrap();
    check(f, "re-keys");
    f.store
        .forget_records(
            Todo::SCHEMA,
            &["d".into(), "never-seen".into(), "absent".into()],
        )
        .unwrap();
    check(f, "forgotten records");
}
