//! Crash safety: a child process writes in a loop and is killed with SIGKILL
//! at random moments; after every kill the reopened store must hold, for every
//! unsynced row, exactly one pending op, and no op without its row.
//!
//! The child is this test binary re-run with `CRASH_CHILD_ENV` set.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{TimeDelta, Utc};
use support::{json, prepare, todo, Todo};
use sync_core::store::{JsonObject, LocalStore, LocalWrite, OpState, RemoteRecord, StoreQuery};
use sync_core::SyncModel;
use sync_diesel::DieselStore;

const CRASH_CHILD_ENV: &str = "SYNC_DIESEL_CRASH_CHILD_DB";
const READY: &str = "CRASH CHILD READY";

/// A small xorshift generator; the test needs unpredictability, not quality.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(nanos ^ (u64::from(std::process::id()) << 32) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn now_version() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(1)
}

/// The child: writes forever (until killed).
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CRASH_CHILD_ENV) else {
        return;
    };
    let store = DieselStore::open_sqlite_blocking(&path).unwrap();
    prepare(&store);
    println!("{READY}");
    std::io::stdout().flush().unwrap();
    let mut rng = Rng::seeded();
    let far = Utc::now() + TimeDelta::days(1);
    loop {
        let id = format!("r{}", rng.below(40));
        match rng.below(10) {
            0..=3 => {
                let t = todo(&id, &format!("title {}", rng.next()), rng.below(5) as i32);
                let data = json(&t);
                let _ = store.save(&LocalWrite {
                    schema: Todo::SCHEMA,
                    id: &id,
                    data: &data,
                    user_id: None,
                    priority: 0,
                    enqueue: true,
                    version: None,
                });
            }
            4 => {
                let batch: Vec<(String, JsonObject)> = (0..5)
                    .map(|_| {
                        let id = format!("r{}", rng.below(40));
                        let data = json(&todo(&id, &format!("batch {}", rng.next()), 1));
                        (id, data)
                    })
                    .collect();
                let writes: Vec<LocalWrite<'_>> = batch
                    .iter()
                    .map(|(id, data)| LocalWrite {
                        schema: Todo::SCHEMA,
                        id,
                        data,
                        user_id: None,
                        priority: 1,
                        enqueue: true,
                        version: None,
                    })
                    .collect();
                let _ = store.save_batch(&writes);
            }
            5 => {
                let _ = store.delete(Todo::SCHEMA, &id, None, 0, true);
            }
            6 => {
                let ready = store.ready_ops(far, 3).unwrap();
                let seqs: Vec<i64> = ready.iter().map(|o| o.seq).collect();
                store.mark_inflight(&seqs).unwrap();
            }
            7 | 8 => {
                let state = store.record_state(Todo::SCHEMA, &id).unwrap();
                if let Some(op) = state.ops.iter().find(|o| o.state == OpState::Inflight) {
                    if rng.below(2) == 0 {
                        store
                            .ack_op(Todo::SCHEMA, op.seq, now_version(), None)
                            .unwrap();
                    } else {
                        store.reschedule_op(op.seq, Utc::now(), "timeout").unwrap();
                    }
                }
            }
            _ => {
                let remote = RemoteRecord {
                    id: id.clone(),
                    version: now_version(),
                    deleted: rng.below(4) == 0,
                    data: json(&todo(&id, "from remote", 2)),
                    updated_at: None,
                };
                let cursor = remote.version.to_string();
                store
                    .apply_remote(Todo::SCHEMA, None, &[remote], Some(&cursor))
                    .unwrap();
            }
        }
    }
}

/// Checks the invariants on a reopened store; returns (rows, ops).
fn check(store: &DieselStore, round: usize) -> (usize, u64) {
    let rows = store
        .query(
            Todo::SCHEMA,
            &StoreQuery {
                include_deleted: true,
                ..StoreQuery::default()
            },
        )
        .unwrap();
    let mut ops_with_rows = 0_u64;
    for row in &rows {
        let state = store.record_state(Todo::SCHEMA, &row.id).unwrap();
        ops_with_rows += state.ops.len() as u64;
        if row.meta.synced {
            assert!(
                state.ops.is_empty(),
                "round {round}: synced row {} has ops {:?}",
                row.id,
                state.ops
            );
            assert!(
                !row.meta.deleted,
                "round {round}: synced tombstone {}",
                row.id
            );
        } else {
            // The record's queue: only its oldest op may have been sent (and is then frozen),
            // nothing is in flight after a restart, and at most one op is pending and never
            // sent, the last one, which is the op edits go into.
            let ops = &state.ops;
            assert!(
                !ops.is_empty(),
                "round {round}: unsynced row {} has no op",
                row.id
            );
            assert!(
                ops.iter().all(|o| o.state != OpState::Inflight),
                "round {round}: {} has an op in flight after a restart: {ops:?}",
                row.id
            );
            assert!(
                ops.iter().skip(1).all(|o| !o.sent),
                "round {round}: {} has a sent op behind another: {ops:?}",
                row.id
            );
            let unsent: Vec<usize> = ops
                .iter()
                .enumerate()
                .filter(|(_, o)| o.state == OpState::Pending && !o.sent)
                .map(|(i, _)| i)
                .collect();
            assert!(
                unsent.is_empty() || unsent == [ops.len() - 1],
                "round {round}: {} must have at most one never-sent pending op, last: {ops:?}",
                row.id
            );
            assert!(
                ops.iter().any(|o| o.state == OpState::Pending),
                "round {round}: unsynced row {} has nothing pending: {ops:?}",
                row.id
            );
        }
    }
    let counts = store.counts().unwrap();
    assert_eq!(
        counts.pending + counts.failed,
        ops_with_rows,
        "round {round}: an op exists without its row"
    );
    (rows.len(), ops_with_rows)
}

#[test]
fn a_killed_writer_leaves_every_row_with_its_op_and_no_op_without_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::seeded();
    let mut max_ops = 0;
    const ROUNDS: usize = 25;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let started = Instant::now();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains(READY) => break,
                Some(Ok(_)) => {}
                _ => panic!("round {round}: the child exited before it was ready"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "child never got ready"
            );
        }
        std::thread::sleep(Duration::from_millis(5 + rng.below(150)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: the child was not killed");

        let store = DieselStore::open_sqlite_blocking(&path).unwrap();
        prepare(&store);
        let (_, ops) = check(&store, round);
        max_ops = max_ops.max(ops);
    }
    assert!(
        max_ops > 0,
        "the child never queued anything: the test proves nothing"
    );
    println!("{ROUNDS} kills survived; up to {max_ops} queued ops checked");
}
