//! A property test of the local outbox alone: one device, the only writer, pushes to a
//! simulated server through random faults, and in the end the server holds exactly what the
//! device saved last.
//!
//! The device is a [`DieselStore`] driven the way the engine's push drives it (`ready_ops`,
//! `claim_ops`, a request built from what was claimed, then `ack_ops`, `reschedule_op` or
//! `release_inflight`); the server is an in-memory model with the version checks and the
//! idempotency keys of sync-server. Random sequences of local saves and deletes over four ids,
//! pushes (with an edit by the app between `ready_ops` and `claim_ops`), answers that arrive,
//! get lost after the server applied the op (the op rescheduled, or left in flight until a
//! crash), or never reach the server (rescheduled or released), and crashes (the store dropped
//! and reopened on the same database). Then the faults stop and the queue is drained.
//!
//! Checked after every step: no op is claimed while an older op of its record is in the outbox,
//! only claimed ops are in flight, an op that may have been sent keeps its kind, fields, key and
//! base version and stays queued until an answer settles it, an unsent pending op is its
//! record's last, no op fails, and the local row shows the last local write. Checked at every
//! push: the server never answers a conflict (nor a refusal) to this device, since that would
//! mean the device lost its own write. Checked at the end: the outbox is empty, the server
//! holds the last value saved for each id (no live record after a delete), and the local rows
//! equal the server's records, versions included.
//!
//! SQLite runs 128 cases unless `PROPTEST_CASES` says otherwise; Postgres (when
//! `SYNC_TEST_POSTGRES_URL` is set) a quarter of that.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::{json, Todo};
use sync_core::store::{
    Ack, ClaimedOp, JsonObject, LocalStore, LocalWrite, OpKind, OpState, StoreQuery,
};
use sync_core::SyncModel;
use sync_diesel::DieselStore;
use sync_testkit::{PgSchema, POSTGRES_URL_ENV};

const IDS: [&str; 4] = ["r0", "r1", "r2", "r3"];
const TITLES: [&str; 3] = ["a", "b", "c"];
/// Cases of the SQLite run when `PROPTEST_CASES` is not set.
const SQLITE_CASES: u32 = 128;

// ---------------------------------------------------------------------------------------------
// Actions

/// A local change by the application.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Change {
    /// Saves record `IDS[id]` with these values (a save that changes nothing queues nothing).
    Save {
        id: usize,
        title: usize,
        done: bool,
        priority: i32,
    },
    /// Deletes record `IDS[id]` (nothing happens if it does not exist locally).
    Delete { id: usize },
}

/// What becomes of a delivered batch of in-flight ops.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    /// The server applies them and the answer arrives: `ack_ops`.
    Acked,
    /// The server applies them, the answer is lost: `reschedule_op` (a transient failure).
    LostAnswerRetry,
    /// The server applies them, the answer is lost and the push never reports back: the ops
    /// stay in flight until a crash brings them back.
    LostAnswerInFlight,
    /// The connection is cut before the server sees them: `reschedule_op`.
    CutRetry,
    /// They were marked but never sent: `release_inflight`.
    CutRelease,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Local(Change),
    /// A push chooses its ops with `ready_ops`, the app perhaps edits meanwhile, then the push
    /// claims the ready ops whose bit in `pick` is set (bits 0..8; all of them when none is).
    Push {
        pick: u8,
        meanwhile: Option<Change>,
    },
    /// The answer to up to `count` held in-flight ops, from the `at`-th (modulo) in claim order.
    Deliver {
        at: usize,
        count: usize,
        fate: Fate,
    },
    /// The process dies; the store is reopened on the same database.
    Crash,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (0..IDS.len(), 0..TITLES.len(), any::<bool>(), 0..2i32).prop_map(
            |(id, title, done, priority)| Change::Save {
                id,
                title,
                done,
                priority
            }
        ),
        1 => (0..IDS.len()).prop_map(|id| Change::Delete { id }),
    ]
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        3 => Just(Fate::Acked),
        1 => Just(Fate::LostAnswerRetry),
        1 => Just(Fate::LostAnswerInFlight),
        1 => Just(Fate::CutRetry),
        1 => Just(Fate::CutRelease),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => change().prop_map(Action::Local),
        4 => (any::<u8>(), proptest::option::weighted(0.25, change()))
            .prop_map(|(pick, meanwhile)| Action::Push { pick, meanwhile }),
        5 => (0..4usize, 1..=3usize, fate())
            .prop_map(|(at, count, fate)| Action::Deliver { at, count, fate }),
        1 => Just(Action::Crash),
    ]
}

fn actions() -> impl Strategy<Value = Vec<Action>> {
    proptest::collection::vec(action(), 1..60)
}

fn todo_of(id: usize, title: usize, done: bool, priority: i32) -> Todo {
    Todo {
        id: IDS[id].into(),
        title: TITLES[title].into(),
        description: String::new(),
        is_completed: done,
        priority,
        tags: vec!["home".into()],
        due: None,
    }
}

// ---------------------------------------------------------------------------------------------
// The simulated server

#[derive(Debug, Clone, PartialEq)]
struct ServerRecord {
    version: i64,
    /// `None`: a tombstone.
    data: Option<JsonObject>,
}

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Applied {
        version: i64,
        /// The record after the op (`None` for a delete).
        data: Option<JsonObject>,
    },
    Conflict(String),
    Rejected(String),
}

/// One item of a push request, built from a claimed op as the engine builds it.
#[derive(Debug, Clone)]
struct PushItem {
    kind: OpKind,
    id: String,
    base_version: i64,
    /// Create: the whole record; update: the changed fields (delta sync); delete: none.
    data: Option<JsonObject>,
    key: String,
}

/// An in-memory server with sync-server's rules: one version clock, base-version checks on
/// updates and deletes, creates over tombstones applied, deletes of absent or deleted records
/// applied (changing nothing), and idempotency keys that replay their first result.
#[derive(Debug, Default)]
struct Server {
    clock: i64,
    records: BTreeMap<String, ServerRecord>,
    /// Key -> (record id, op kind, first result).
    keys: HashMap<String, (String, OpKind, Answer)>,
}

impl Server {
    fn apply(&mut self, item: &PushItem) -> Answer {
        if let Some((id, kind, answer)) = self.keys.get(&item.key) {
            if *id == item.id && *kind == item.kind {
                return answer.clone();
            }
            return Answer::Rejected(format!(
                "idempotency key {} reused: first for {kind:?} {id}, now for {:?} {}",
                item.key, item.kind, item.id
            ));
        }
        let current = self.records.get(&item.id).cloned();
        let data = match item.kind {
            OpKind::Create => {
                if let Some(ServerRecord {
                    version,
                    data: Some(_),
                }) = current
                {
                    return Answer::Conflict(format!(
                        "create of {} over the live record at version {version}",
                        item.id
                    ));
                }
                Some(item.data.clone().unwrap_or_default())
            }
            OpKind::Update => {
                let Some(cur) = current else {
                    return Answer::Rejected(format!("update of absent record {}", item.id));
                };
                if cur.version != item.base_version {
                    return Answer::Conflict(format!(
                        "update of {} based on version {}, the record is at {}",
                        item.id, item.base_version, cur.version
                    ));
                }
                let Some(mut data) = cur.data else {
                    return Answer::Rejected(format!("update of deleted record {}", item.id));
                };
                for (k, v) in item.data.clone().unwrap_or_default() {
                    data.insert(k, v);
                }
                Some(data)
            }
            OpKind::Delete => match current {
                // Nothing to delete: applied, changing nothing (and no key is stored).
                None => {
                    return Answer::Applied {
                        version: 0,
                        data: None,
                    }
                }
                Some(ServerRecord {
                    version,
                    data: None,
                }) => {
                    return Answer::Applied {
                        version,
                        data: None,
                    }
                }
                Some(cur) if cur.version != item.base_version => {
                    return Answer::Conflict(format!(
                        "delete of {} based on version {}, the record is at {}",
                        item.id, item.base_version, cur.version
                    ));
                }
                Some(_) => None,
            },
        };
        self.clock += 1;
        self.records.insert(
            item.id.clone(),
            ServerRecord {
                version: self.clock,
                data: data.clone(),
            },
        );
        let answer = Answer::Applied {
            version: self.clock,
            data,
        };
        self.keys.insert(
            item.key.clone(),
            (item.id.clone(), item.kind, answer.clone()),
        );
        answer
    }
}

// ---------------------------------------------------------------------------------------------
// The device

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug)]
enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

/// What an op that may have reached the server must keep until an answer settles it.
#[derive(Debug, Clone, PartialEq)]
struct Frozen {
    kind: OpKind,
    changed_fields: Vec<String>,
    base_version: i64,
    key: String,
}

impl Frozen {
    fn of(c: &ClaimedOp) -> Frozen {
        Frozen {
            kind: c.op.op,
            changed_fields: c.op.changed_fields.clone(),
            base_version: c.op.base_version,
            key: c.op.idempotency_key.clone(),
        }
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, TestCaseError> {
    Err(TestCaseError::fail(message.into()))
}

trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, TestCaseError>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, TestCaseError> {
        self.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
    }
}

/// Far enough ahead that no backoff holds an op back.
fn far() -> DateTime<Utc> {
    Utc::now() + TimeDelta::days(3650)
}

struct Harness {
    store: Option<DieselStore>,
    location: Location,
    server: Server,
    /// Per id: the last value saved, `None` after a delete (or never saved).
    expected: BTreeMap<&'static str, Option<JsonObject>>,
    /// Claimed ops whose answer the push still waits for, in claim order.
    inflight: Vec<ClaimedOp>,
    /// Ops left in flight by a push that never reported back.
    orphans: Vec<ClaimedOp>,
    /// Ops that may have reached the server and have not been acknowledged.
    frozen: HashMap<i64, Frozen>,
    /// Dropped after the store: a Postgres run's schema, or a SQLite run's directory.
    _pg: Option<PgSchema>,
    _dir: Option<tempfile::TempDir>,
}

fn open(location: &Location) -> Result<DieselStore, TestCaseError> {
    let store = match location {
        Location::Sqlite(path) => DieselStore::open_sqlite_blocking(path),
        Location::Postgres(url) => DieselStore::open_postgres_blocking(url.clone()),
    }
    .ctx("open the store")?;
    store
        .prepare_model(Todo::SCHEMA, true)
        .ctx("prepare the model")?;
    Ok(store)
}

impl Harness {
    fn new(backend: Backend) -> Result<Harness, TestCaseError> {
        let (location, pg, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().ctx("temp dir")?;
                let path = dir.path().join("store.db");
                (Location::Sqlite(path), None, Some(dir))
            }
            Backend::Postgres => {
                let Some(schema) = PgSchema::create("outbox_model") else {
                    return fail(format!("{POSTGRES_URL_ENV} is not set"));
                };
                (
                    Location::Postgres(schema.url().to_owned()),
                    Some(schema),
                    None,
                )
            }
        };
        let store = open(&location)?;
        Ok(Harness {
            store: Some(store),
            location,
            server: Server::default(),
            expected: IDS.iter().map(|id| (*id, None)).collect(),
            inflight: Vec::new(),
            orphans: Vec::new(),
            frozen: HashMap::new(),
            _pg: pg,
            _dir: dir,
        })
    }

    fn store(&self) -> &DieselStore {
        // Only `crash` takes the store out, and it puts a new one back before returning.
        self.store.as_ref().expect("the store is open")
    }

    fn step(&mut self, action: Action) -> Result<(), TestCaseError> {
        match action {
            Action::Local(change) => self.change(change),
            Action::Push { pick, meanwhile } => self.push(pick, meanwhile),
            Action::Deliver { at, count, fate } => self.deliver(at, count, fate),
            Action::Crash => self.crash(),
        }
    }

    fn change(&mut self, change: Change) -> Result<(), TestCaseError> {
        match change {
            Change::Save {
                id,
                title,
                done,
                priority,
            } => {
                let data = json(&todo_of(id, title, done, priority));
                self.store()
                    .save(&LocalWrite {
                        schema: Todo::SCHEMA,
                        id: IDS[id],
                        data: &data,
                        user_id: None,
                        priority: 0,
                        enqueue: true,
                        version: None,
                    })
                    .ctx("save")?;
                self.expected.insert(IDS[id], Some(data));
            }
            Change::Delete { id } => {
                self.store()
                    .delete(Todo::SCHEMA, IDS[id], None, 0, true)
                    .ctx("delete")?;
                self.expected.insert(IDS[id], None);
            }
        }
        Ok(())
    }

    /// `ready_ops`, perhaps an edit, `claim_ops`: the engine's `prepare_chunk`.
    fn push(&mut self, pick: u8, meanwhile: Option<Change>) -> Result<(), TestCaseError> {
        let ready = self.store().ready_ops(far(), 64).ctx("ready_ops")?;
        let mut chosen: Vec<i64> = ready
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 8 && pick & (1 << i) != 0)
            .map(|(_, op)| op.seq)
            .collect();
        if chosen.is_empty() {
            chosen = ready.iter().map(|op| op.seq).collect();
        }
        if let Some(change) = meanwhile {
            self.change(change)?;
        }
        let claimed = self
            .store()
            .claim_ops(Todo::SCHEMA, &chosen)
            .ctx("claim_ops")?;
        for c in claimed {
            if c.op.state != OpState::Inflight {
                return fail(format!(
                    "claim_ops returned op {} as {:?}",
                    c.op.seq, c.op.state
                ));
            }
            let id = c.op.record_id.clone();
            let state = self
                .store()
                .record_state(Todo::SCHEMA, &id)
                .ctx("record_state")?;
            if let Some(older) = state.ops.iter().find(|o| o.seq < c.op.seq) {
                return fail(format!(
                    "op {} of {id} was claimed while older op {} ({:?}, {:?}) is unsettled",
                    c.op.seq, older.seq, older.op, older.state
                ));
            }
            if let Some(other) = self
                .inflight
                .iter()
                .chain(&self.orphans)
                .find(|o| o.op.record_id == id)
            {
                return fail(format!(
                    "op {} of {id} was claimed while op {} of it is still in flight",
                    c.op.seq, other.op.seq
                ));
            }
            if let Some(frozen) = self.frozen.get(&c.op.seq) {
                let now = Frozen::of(&c);
                if *frozen != now {
                    return fail(format!(
                        "op {} of {id} may have been sent as {frozen:?} but is sent again as \
                         {now:?}",
                        c.op.seq
                    ));
                }
            }
            self.inflight.push(c);
        }
        Ok(())
    }

    /// The engine's request item for a claimed op.
    fn item(c: &ClaimedOp) -> Result<PushItem, TestCaseError> {
        let row = || {
            c.record.as_ref().map(|r| &r.data).ok_or_else(|| {
                TestCaseError::fail(format!(
                    "op {} ({:?} {}) was claimed without its local record: the engine fails it",
                    c.op.seq, c.op.op, c.op.record_id
                ))
            })
        };
        let data = match c.op.op {
            OpKind::Delete => None,
            OpKind::Create => Some(row()?.clone()),
            OpKind::Update => {
                let row = row()?;
                Some(
                    c.op.changed_fields
                        .iter()
                        .filter_map(|f| row.get(f).map(|v| (f.clone(), v.clone())))
                        .collect(),
                )
            }
        };
        Ok(PushItem {
            kind: c.op.op,
            id: c.op.record_id.clone(),
            base_version: c.op.base_version,
            data,
            key: c.op.idempotency_key.clone(),
        })
    }

    /// The server applies a claimed op; it must accept it.
    fn send(&mut self, c: &ClaimedOp) -> Result<(i64, Option<JsonObject>), TestCaseError> {
        let item = Self::item(c)?;
        match self.server.apply(&item) {
            Answer::Applied { version, data } => Ok((version, data)),
            other => fail(format!(
                "the server answered {other:?} to op {} ({:?} {} base {} key {}) of the only \
                 writer: the device lost its own write",
                c.op.seq, item.kind, item.id, item.base_version, item.key
            )),
        }
    }

    fn freeze(&mut self, c: &ClaimedOp) -> Result<(), TestCaseError> {
        let now = Frozen::of(c);
        if let Some(before) = self.frozen.insert(c.op.seq, now.clone()) {
            if before != now {
                return fail(format!(
                    "op {} may have been sent as {before:?}, then as {now:?}",
                    c.op.seq
                ));
            }
        }
        Ok(())
    }

    fn deliver(&mut self, at: usize, count: usize, fate: Fate) -> Result<(), TestCaseError> {
        if self.inflight.is_empty() {
            return Ok(());
        }
        let start = at % self.inflight.len();
        let end = start.saturating_add(count).min(self.inflight.len());
        let batch: Vec<ClaimedOp> = self.inflight.drain(start..end).collect();
        let seqs: Vec<i64> = batch.iter().map(|c| c.op.seq).collect();
        let retry_at = Utc::now() + TimeDelta::seconds(1);
        match fate {
            Fate::Acked => {
                let mut acks = Vec::with_capacity(batch.len());
                for c in &batch {
                    let (version, data) = self.send(c)?;
                    // The engine writes the server's copy back only where it differs.
                    let data = data.filter(|d| c.record.as_ref().is_none_or(|r| r.data != *d));
                    acks.push(Ack {
                        seq: c.op.seq,
                        version,
                        data,
                    });
                }
                self.store().ack_ops(Todo::SCHEMA, &acks).ctx("ack_ops")?;
                for seq in seqs {
                    self.frozen.remove(&seq);
                }
            }
            Fate::LostAnswerRetry | Fate::CutRetry => {
                for c in &batch {
                    if fate == Fate::LostAnswerRetry {
                        self.send(c)?;
                    }
                    self.freeze(c)?;
                    self.store()
                        .reschedule_op(c.op.seq, retry_at, "no answer")
                        .ctx("reschedule_op")?;
                }
            }
            Fate::LostAnswerInFlight => {
                for c in batch {
                    self.send(&c)?;
                    self.freeze(&c)?;
                    self.orphans.push(c);
                }
            }
            Fate::CutRelease => {
                self.store()
                    .release_inflight(&seqs)
                    .ctx("release_inflight")?;
            }
        }
        Ok(())
    }

    fn crash(&mut self) -> Result<(), TestCaseError> {
        drop(self.store.take());
        // Whatever was in flight may have reached the server.
        let lost: Vec<ClaimedOp> = self
            .inflight
            .drain(..)
            .chain(self.orphans.drain(..))
            .collect();
        for c in &lost {
            self.freeze(c)?;
        }
        self.store = Some(open(&self.location)?);
        Ok(())
    }

    /// The invariants that hold between any two steps.
    fn check(&self, after: &str) -> Result<(), TestCaseError> {
        let held: HashSet<i64> = self
            .inflight
            .iter()
            .chain(&self.orphans)
            .map(|c| c.op.seq)
            .collect();
        let mut seen_inflight = HashSet::new();
        let mut seen_frozen = HashSet::new();
        let mut queued = 0u64;
        for id in IDS {
            let state = self
                .store()
                .record_state(Todo::SCHEMA, id)
                .ctx("record_state")?;
            queued += state.ops.len() as u64;
            let last = state.ops.len().saturating_sub(1);
            for (i, op) in state.ops.iter().enumerate() {
                match op.state {
                    OpState::Failed => {
                        return fail(format!(
                            "after {after}: op {} of {id} failed: {:?}",
                            op.seq, op.last_error
                        ))
                    }
                    OpState::Inflight => {
                        seen_inflight.insert(op.seq);
                        if i != 0 {
                            return fail(format!(
                                "after {after}: op {} of {id} is in flight behind op {}",
                                op.seq, state.ops[0].seq
                            ));
                        }
                        if !held.contains(&op.seq) {
                            return fail(format!(
                                "after {after}: op {} of {id} is in flight, no push holds it",
                                op.seq
                            ));
                        }
                    }
                    OpState::Pending if !op.sent && i != last => {
                        return fail(format!(
                            "after {after}: unsent pending op {} of {id} is not its last op",
                            op.seq
                        ));
                    }
                    OpState::Pending => {}
                }
                if let Some(frozen) = self.frozen.get(&op.seq) {
                    seen_frozen.insert(op.seq);
                    let now = Frozen {
                        kind: op.op,
                        changed_fields: op.changed_fields.clone(),
                        base_version: op.base_version,
                        key: op.idempotency_key.clone(),
                    };
                    // In flight, nothing changes it; it counts as sent from the moment the
                    // push reports back on it or a crash leaves it in flight.
                    let sent = op.sent || op.state == OpState::Inflight;
                    if !sent || *frozen != now {
                        return fail(format!(
                            "after {after}: op {} of {id} may have been sent as {frozen:?}; the \
                             store now has it as {now:?}, sent = {}",
                            op.seq, op.sent
                        ));
                    }
                }
            }
            let local = self
                .store()
                .get(Todo::SCHEMA, id)
                .ctx("get")?
                .map(|r| r.data);
            if local.as_ref() != self.expected[id].as_ref() {
                return fail(format!(
                    "after {after}: the local row of {id} is {local:?}, the last local write \
                     was {:?}",
                    self.expected[id]
                ));
            }
        }
        // The counts the store keeps (a row its triggers update) equal the ops there are; no
        // op fails here and nothing is quarantined.
        let counts = self.store().counts().ctx("counts")?;
        if (counts.pending, counts.failed, counts.quarantined) != (queued, 0, 0) {
            return fail(format!(
                "after {after}: the store counts {counts:?}, the outbox holds {queued} ops"
            ));
        }
        if let Some(seq) = held.difference(&seen_inflight).next() {
            return fail(format!(
                "after {after}: op {seq} is held by a push but not in flight in the store"
            ));
        }
        let mut vanished: Vec<&i64> = self
            .frozen
            .keys()
            .filter(|s| !seen_frozen.contains(s))
            .collect();
        vanished.sort();
        if !vanished.is_empty() {
            return fail(format!(
                "after {after}: ops {vanished:?} may have been sent, and left the outbox with no \
                 answer"
            ));
        }
        Ok(())
    }

    /// Faults off: every answer arrives, a restart brings back what was left in flight, and
    /// pushes run until nothing is ready.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        self.deliver(0, usize::MAX, Fate::Acked)?;
        if !self.orphans.is_empty() {
            self.crash()?;
        }
        self.check("the last answers")?;
        for _ in 0..50 {
            if self
                .store()
                .ready_ops(far(), 64)
                .ctx("ready_ops")?
                .is_empty()
            {
                return Ok(());
            }
            self.push(0, None)?;
            self.deliver(0, usize::MAX, Fate::Acked)?;
            self.check("a push of the drain")?;
        }
        fail("the queue did not drain in 50 pushes")
    }

    fn final_checks(&self) -> Result<(), TestCaseError> {
        let counts = self.store().counts().ctx("counts")?;
        if counts.pending != 0 || counts.failed != 0 {
            return fail(format!("after the drain the outbox holds {counts:?}"));
        }
        for id in IDS {
            let server = self.server.records.get(id).and_then(|r| r.data.as_ref());
            if server != self.expected[id].as_ref() {
                return fail(format!(
                    "the server holds {server:?} for {id}; the last local action wants {:?}",
                    self.expected[id]
                ));
            }
        }
        let rows = self
            .store()
            .query(
                Todo::SCHEMA,
                &StoreQuery {
                    include_deleted: true,
                    ..StoreQuery::default()
                },
            )
            .ctx("query")?;
        let mut local_ids = HashSet::new();
        for row in &rows {
            local_ids.insert(row.id.as_str());
            let server = self.server.records.get(&row.id);
            let matches = server.is_some_and(|s| {
                s.version == row.meta.version && s.data.as_ref() == Some(&row.data)
            });
            if !matches || row.meta.deleted || !row.meta.synced {
                return fail(format!(
                    "local row {} (version {}, deleted {}, synced {}, {:?}) differs from the \
                     server's {server:?}",
                    row.id, row.meta.version, row.meta.deleted, row.meta.synced, row.data
                ));
            }
        }
        for (id, record) in &self.server.records {
            if record.data.is_some() && !local_ids.contains(id.as_str()) {
                return fail(format!("the server has {id}, the device has no row for it"));
            }
        }
        Ok(())
    }
}

/// Runs one sequence and the drain, checking the invariants after every step.
fn run(backend: Backend, actions: &[Action]) -> Result<(), TestCaseError> {
    let mut h = Harness::new(backend)?;
    for (n, action) in actions.iter().enumerate() {
        h.step(*action)?;
        h.check(&format!("step {n} {action:?}"))?;
    }
    h.drain()?;
    h.final_checks()
}

/// `with_cases` would override `PROPTEST_CASES`, which `Config::default()` reads: the
/// default number of cases applies only when the variable is not set.
fn config(backend: Backend) -> Config {
    let mut config = if std::env::var_os("PROPTEST_CASES").is_some() {
        Config::default()
    } else {
        Config::with_cases(SQLITE_CASES)
    };
    if let Backend::Postgres = backend {
        config.cases = (config.cases / 4).max(1);
    }
    // A failure prints its shrunk sequence; keep it as a plain #[test] below.
    config.failure_persistence = None;
    config
}

fn check_property(backend: Backend) {
    let config = config(backend);
    let cases = config.cases;
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(config);
    if let Err(err) = runner.run(&actions(), |actions| run(backend, &actions)) {
        panic!("{backend:?}: {err}");
    }
    println!(
        "{backend:?}: {cases} cases in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_single_writer_never_meets_a_conflict_and_converges_on_sqlite() {
    check_property(Backend::Sqlite);
}

#[test]
fn a_single_writer_never_meets_a_conflict_and_converges_on_postgres() {
    if std::env::var_os(POSTGRES_URL_ENV).is_none() {
        println!("SKIP postgres run of the outbox model: {POSTGRES_URL_ENV} is not set");
        return;
    }
    check_property(Backend::Postgres);
}

// ---------------------------------------------------------------------------------------------
// Fixed sequences: scenarios of the property spelled out. A failure of the property prints its
// shrunk sequence in this notation; keep it here as a plain test.

use {Action::*, Change::*, Fate::*};

fn replay(actions: &[Action]) {
    if let Err(err) = run(Backend::Sqlite, actions) {
        panic!("{err}");
    }
}

/// Issue scenario 2: an update applied by the server whose answer was lost, then a newer edit.
#[test]
fn a_lost_answer_then_an_edit_is_replayed_not_a_conflict() {
    replay(&[
        Local(Save {
            id: 0,
            title: 0,
            done: false,
            priority: 0,
        }),
        Push {
            pick: 0,
            meanwhile: None,
        },
        Deliver {
            at: 0,
            count: 1,
            fate: Acked,
        },
        Local(Save {
            id: 0,
            title: 1,
            done: false,
            priority: 0,
        }),
        Push {
            pick: 0,
            meanwhile: None,
        },
        Deliver {
            at: 0,
            count: 1,
            fate: LostAnswerRetry,
        },
        Local(Save {
            id: 0,
            title: 1,
            done: true,
            priority: 0,
        }),
    ]);
}

/// A create left in flight by a push that died after the server applied it, a delete and a
/// re-create meanwhile, then a crash.
#[test]
fn an_orphaned_create_then_delete_and_recreate_across_a_crash() {
    replay(&[
        Local(Save {
            id: 1,
            title: 0,
            done: false,
            priority: 0,
        }),
        Push {
            pick: 0,
            meanwhile: None,
        },
        Deliver {
            at: 0,
            count: 1,
            fate: LostAnswerInFlight,
        },
        Local(Delete { id: 1 }),
        Local(Save {
            id: 1,
            title: 2,
            done: false,
            priority: 1,
        }),
        Crash,
    ]);
}

/// A create marked, a delete queued meanwhile, then the create released unsent: both vanish.
#[test]
fn a_released_create_folds_with_a_delete_queued_meanwhile() {
    replay(&[
        Local(Save {
            id: 2,
            title: 0,
            done: false,
            priority: 0,
        }),
        Push {
            pick: 0,
            meanwhile: Some(Delete { id: 2 }),
        },
        Deliver {
            at: 0,
            count: 1,
            fate: CutRelease,
        },
    ]);
}
