//! The push planner: applies a batch of ops in memory on top of the rows loaded under the
//! version lock and decides each op's result (applied, conflict, rejected) and what the batch
//! writes. Pure logic, no I/O: `write.rs` loads the rows and writes the [`Plan`]. The rules are
//! those of ARCHITECTURE.md ("Storage and versions", "Outbox states") and sync-server's README.
//!
//! Over 600 lines only because its table tests (the last ~200) sit beside the rules they pin.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::rows::{IdemRow, RawResult, RecordRow, WriteOp};
use crate::error::{Error, Result};
use crate::events::RawEvent;
use crate::protocol::{Checksum, EventKind, OpKind, OpStatus};

/// How a batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteSettings {
    /// Bytes of records one answer may carry (`Limits::max_push_answer_bytes`).
    pub(crate) answer_budget: usize,
    /// Bytes of record data the user may store (`Limits::max_user_bytes`); `None`: no quota.
    pub(crate) quota: Option<u64>,
}

fn corrupt_data(row: &RecordRow, err: &serde_json::Error) -> Error {
    Error::Corrupt(format!(
        "record {}/{} has invalid data: {err}",
        row.collection, row.id
    ))
}

/// A stored idempotency key whose result must now be stored in full, because the record row
/// it was rebuilt from is about to change.
#[derive(Debug)]
pub(super) struct Materialized {
    /// The key's row with its full result.
    pub(crate) row: IdemRow,
    /// The version the result was rebuilt from.
    pub(crate) version: i64,
    /// The key lived on the record row only (the row names its op): its row is inserted.
    /// Otherwise it was stored before keys moved onto records, and its lazy row, which names
    /// `version`, is updated.
    pub(crate) held: bool,
}

/// What a planned batch writes.
pub(super) struct Plan {
    /// Rows to upsert.
    pub(super) rows: Vec<RecordRow>,
    /// Keys to insert.
    pub(super) new_keys: Vec<IdemRow>,
    /// Stored keys whose full result to store.
    pub(super) materialized: Vec<Materialized>,
    pub(super) events: Vec<RawEvent>,
    /// The last version used.
    pub(super) last_version: i64,
    /// What the batch changes in `sync_usage`, per collection.
    pub(super) usage: Vec<UsageDelta>,
}

/// A change of one collection's row in `sync_usage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UsageDelta {
    pub(super) collection: String,
    /// Change in live records.
    pub(super) records: i64,
    /// Change in bytes of record data.
    pub(super) bytes: i64,
    /// Change in records, tombstones included.
    pub(super) total: i64,
    /// Change of the collection checksum (see `sync_protocol::metadata`).
    pub(super) checksum: Checksum,
}

/// What the ops planned so far change in one collection's `sync_usage` row.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    records: i64,
    bytes: i64,
    total: i64,
    checksum: Checksum,
}

/// An idempotency key known to the planner.
struct KeyEntry {
    row: IdemRow,
    /// Made by this batch rather than loaded.
    new: bool,
}

/// Applies ops in memory on top of the rows loaded inside the writing transaction.
///
/// Validation happens here, before anything is written, so a rejected or conflicting op
/// leaves no trace and the ops around it are unaffected.
pub(super) struct Planner {
    owner: String,
    version: i64,
    now: String,
    records: HashMap<(String, String), RecordRow>,
    dirty: Vec<(String, String)>,
    dirty_set: HashSet<(String, String)>,
    keys: HashMap<String, KeyEntry>,
    new_keys: Vec<String>,
    materialized: Vec<Materialized>,
    /// Events of the applied ops, in version order; `None` where a later op of the same batch
    /// on the same record superseded it.
    events: Vec<Option<RawEvent>>,
    /// Index in `events` of each record's latest event.
    event_of: HashMap<(String, String), usize>,
    /// Bytes of records the answer may still carry (see [`WriteSettings`]).
    answer_budget: usize,
    /// Whether the answer carries a record yet.
    answered_a_record: bool,
    /// Bytes of record data the user may store, if limited.
    quota: Option<u64>,
    /// Bytes of record data the user stores, with the ops planned so far (meaningful only
    /// with a quota: the stored total is read only then).
    used_bytes: i64,
    /// Changes to `sync_usage` so far, per collection.
    usage: HashMap<String, Usage>,
}

fn rejected(code: &str, message: String) -> RawResult {
    RawResult::rejected(code, message)
}

impl Planner {
    /// A planner over the rows `loaded` and the stored `keys` of `owner`, numbering from
    /// `version`; `now` is the `updated_at` of every row it writes.
    pub(super) fn new(
        owner: &str,
        version: i64,
        now: String,
        loaded: Vec<RecordRow>,
        keys: Vec<IdemRow>,
        settings: WriteSettings,
    ) -> Self {
        Self {
            owner: owner.to_owned(),
            version,
            now,
            records: loaded
                .into_iter()
                .map(|row| ((row.collection.clone(), row.id.clone()), row))
                .collect(),
            dirty: Vec::new(),
            dirty_set: HashSet::new(),
            keys: keys
                .into_iter()
                .map(|row| (row.idem_key.clone(), KeyEntry { row, new: false }))
                .collect(),
            new_keys: Vec::new(),
            materialized: Vec::new(),
            events: Vec::new(),
            event_of: HashMap::new(),
            answer_budget: settings.answer_budget,
            answered_a_record: false,
            quota: settings.quota,
            used_bytes: 0,
            usage: HashMap::new(),
        }
    }

    /// Sets the bytes of record data the user stores before this batch (read under the
    /// version lock); ops are refused with `quota_exceeded` when they would take it past
    /// [`WriteSettings::quota`].
    pub(super) fn with_used_bytes(mut self, bytes: i64) -> Self {
        self.used_bytes = bytes;
        self
    }

    /// Plans one op and returns its result; a database-independent error (corrupt stored
    /// data) fails the whole batch.
    pub(super) fn apply(&mut self, op: &WriteOp) -> Result<RawResult> {
        let mut result = self.plan_op(op)?;
        // The answer's records stay within the budget: past it a result carries its version and
        // `record_omitted` (the first record always goes, so one large record still arrives).
        if let Some(record) = &result.record {
            if self.answered_a_record && record.len() > self.answer_budget {
                result.record = None;
                result.record_omitted = true;
            } else {
                self.answer_budget = self.answer_budget.saturating_sub(record.len());
                self.answered_a_record = true;
            }
        }
        Ok(result)
    }

    fn plan_op(&mut self, op: &WriteOp) -> Result<RawResult> {
        if let Some(key) = &op.key {
            if let Some(KeyEntry { row: stored, .. }) = self.keys.get(key) {
                let same = stored.collection == op.collection
                    && stored.op == op.kind.as_str()
                    && (op.id_generated || stored.record_id == op.id);
                if !same {
                    return Ok(rejected(
                        "idempotency_key_reused",
                        format!(
                            "idempotency key {key:?} was already used for a different operation \
                             ({} {} {}); use a new key for a new operation",
                            stored.op, stored.collection, stored.record_id
                        ),
                    ));
                }
                return stored_result(stored, &self.records);
            }
        }

        let slot = (op.collection.clone(), op.id.clone());
        let current = self.records.get(&slot);
        let (data_text, deleted, event) = match op.kind {
            OpKind::Create | OpKind::Replace => {
                if op.kind == OpKind::Create {
                    // A create over a tombstone re-creates the record (a new version replaces
                    // the tombstone), whatever version the client last saw.
                    if let Some(cur) = current.filter(|cur| !cur.deleted) {
                        return conflict(
                            cur,
                            format!("record {:?} already exists in {:?}", op.id, op.collection),
                        );
                    }
                } else {
                    let Some(cur) = current else {
                        return Ok(not_found(op));
                    };
                    if let Some(base) = op.base_version {
                        if base != cur.version {
                            return conflict(cur, version_message(base, cur.version));
                        }
                    }
                    if cur.deleted {
                        return Ok(not_found(op));
                    }
                }
                let text = match &op.data_text {
                    Some(text) => text.clone(),
                    None => serde_json::to_string(&op.data)
                        .map_err(|err| Error::Corrupt(err.to_string()))?,
                };
                let kind = if op.kind == OpKind::Create {
                    EventKind::Created
                } else {
                    EventKind::Updated
                };
                (text, false, kind)
            }
            OpKind::Update | OpKind::Delete => {
                let Some(cur) = current else {
                    if op.kind == OpKind::Delete {
                        // Nothing to delete: the delete has reached its goal.
                        return Ok(already_gone(None));
                    }
                    return Ok(not_found(op));
                };
                if cur.deleted && op.kind == OpKind::Delete {
                    return Ok(already_gone(Some(cur)));
                }
                if let Some(base) = op.base_version {
                    if base != cur.version {
                        return conflict(cur, version_message(base, cur.version));
                    }
                }
                if cur.deleted {
                    return Ok(not_found(op));
                }
                if op.kind == OpKind::Update {
                    let mut merged: Map<String, Value> =
                        serde_json::from_str(&cur.data).map_err(|err| corrupt_data(cur, &err))?;
                    for (k, v) in &op.data {
                        merged.insert(k.clone(), v.clone());
                    }
                    let text = serde_json::to_string(&merged)
                        .map_err(|err| Error::Corrupt(err.to_string()))?;
                    (text, false, EventKind::Updated)
                } else {
                    // A tombstone keeps its last data so that filtered pulls and
                    // subscriptions still match it.
                    (cur.data.clone(), true, EventKind::Deleted)
                }
            }
        };
        // What the op changes in the user's stored bytes and live records. An op that grows
        // the stored bytes past the quota is refused before anything is planned; one that
        // keeps or shrinks them (a delete, a smaller update) always goes, so a user at the
        // quota can still tidy up.
        let old_bytes = current.map_or(0, |cur| byte_len(&cur.data));
        let bytes_delta = byte_len(&data_text).saturating_sub(old_bytes);
        if let (Some(quota), true) = (self.quota, bytes_delta > 0) {
            let after = self.used_bytes.saturating_add(bytes_delta);
            if u64::try_from(after).is_ok_and(|after| after > quota) {
                return Ok(rejected(
                    "quota_exceeded",
                    format!(
                        "storing this would take the user's records to {after} bytes, over the \
                         server's quota of {quota} bytes; delete or shrink records first"
                    ),
                ));
            }
        }
        let records_delta =
            i64::from(!deleted) - i64::from(current.is_some_and(|cur| !cur.deleted));
        self.used_bytes = self.used_bytes.saturating_add(bytes_delta);
        // The checksum swaps the record's old (id, version, deleted) for its new one.
        let next_version = self.version.saturating_add(1);
        let mut checksum = Checksum::of_record(&op.id, next_version, deleted, 1);
        if let Some(cur) = current {
            checksum = checksum.plus(Checksum::of_record(&cur.id, cur.version, cur.deleted, -1));
        }
        let entry = self.usage.entry(op.collection.clone()).or_default();
        entry.records = entry.records.saturating_add(records_delta);
        entry.bytes = entry.bytes.saturating_add(bytes_delta);
        entry.total = entry.total.saturating_add(i64::from(current.is_none()));
        entry.checksum = entry.checksum.plus(checksum);

        // The row is about to change: a key whose result is rebuilt from it needs that result
        // stored first.
        let superseded = match current {
            Some(
                cur @ RecordRow {
                    idem_key: Some(_), ..
                },
            ) => Some((cur.clone(), RawResult::applied(cur)?.to_json_string()?)),
            _ => None,
        };
        if let Some((cur, result)) = superseded {
            self.materialize(&cur, result);
        }

        self.version += 1;
        let row = RecordRow {
            owner: self.owner.clone(),
            collection: op.collection.clone(),
            id: op.id.clone(),
            data: data_text,
            version: self.version,
            updated_at: self.now.clone(),
            deleted,
            idem_key: op.key.clone(),
            idem_op: op.key.as_ref().map(|_| op.kind.as_str().to_owned()),
        };
        let result = RawResult::applied(&row)?;
        // One event per record and batch: the batch commits at once, so nobody can see
        // the versions between, and a run of ops on one large record would otherwise hold
        // a copy of it per op. A record created in this batch stays `created`.
        let mut kind = event;
        if let Some(earlier) = self.event_of.get(&slot).copied() {
            if let Some(Some(superseded)) = self.events.get_mut(earlier).map(Option::take) {
                if superseded.kind == EventKind::Created && kind == EventKind::Updated {
                    kind = EventKind::Created;
                }
            }
        }
        self.event_of.insert(slot.clone(), self.events.len());
        self.events.push(Some(RawEvent {
            owner: self.owner.clone(),
            kind,
            collection: op.collection.clone(),
            id: op.id.clone(),
            version: self.version,
            record: result.record.clone().unwrap_or_default(),
        }));
        if self.dirty_set.insert(slot.clone()) {
            self.dirty.push(slot.clone());
        }
        self.records.insert(slot, row);
        if let Some(key) = &op.key {
            let stored = IdemRow {
                owner: self.owner.clone(),
                idem_key: key.clone(),
                collection: op.collection.clone(),
                op: op.kind.as_str().to_owned(),
                record_id: op.id.clone(),
                result: String::new(),
                created_at: self.now.clone(),
                record_version: Some(self.version),
            };
            self.keys.insert(
                key.clone(),
                KeyEntry {
                    row: stored,
                    new: true,
                },
            );
            self.new_keys.push(key.clone());
        }
        Ok(result)
    }

    /// Stores `result` as the full result of the key `cur` holds, which was rebuilt from
    /// `cur` until now.
    fn materialize(&mut self, cur: &RecordRow, result: String) {
        let Some(key) = cur.idem_key.clone() else {
            return;
        };
        let row = match self.keys.get_mut(&key) {
            Some(entry) => {
                if entry.row.record_version != Some(cur.version) {
                    return;
                }
                entry.row.record_version = None;
                entry.row.result = result;
                if entry.new {
                    // Inserted with the batch's keys, now with its full result.
                    return;
                }
                entry.row.clone()
            }
            // A key of an earlier batch that this one does not mention.
            None => IdemRow {
                owner: cur.owner.clone(),
                idem_key: key,
                collection: cur.collection.clone(),
                // Rows from before keys moved onto records name no op; their keys have a
                // lazy `sync_idempotency` row, which is updated and keeps its own op.
                op: cur.idem_op.clone().unwrap_or_default(),
                record_id: cur.id.clone(),
                result,
                created_at: cur.updated_at.clone(),
                record_version: None,
            },
        };
        self.materialized.push(Materialized {
            row,
            version: cur.version,
            held: cur.idem_op.is_some(),
        });
    }

    /// What the planned batch writes.
    pub(super) fn finish(mut self) -> Plan {
        let rows = self
            .dirty
            .iter()
            .filter_map(|slot| self.records.remove(slot))
            .collect();
        // A new key whose record row still holds it needs no row of its own; one whose row
        // this batch changed again is stored with its full result.
        let new_keys = self
            .new_keys
            .iter()
            .filter_map(|key| self.keys.remove(key).map(|entry| entry.row))
            .filter(|row| row.record_version.is_none())
            .collect();
        let mut usage: Vec<UsageDelta> = self
            .usage
            .into_iter()
            .map(|(collection, u)| UsageDelta {
                collection,
                records: u.records,
                bytes: u.bytes,
                total: u.total,
                checksum: u.checksum,
            })
            .collect();
        usage.sort_by(|a, b| a.collection.cmp(&b.collection));
        Plan {
            rows,
            new_keys,
            materialized: self.materialized,
            events: self.events.into_iter().flatten().collect(),
            last_version: self.version,
            usage,
        }
    }
}

/// The length of a record's data in bytes, as `sync_usage` counts it.
fn byte_len(text: &str) -> i64 {
    i64::try_from(text.len()).unwrap_or(i64::MAX)
}

/// The result a stored key returns: its full stored result, or the applied result rebuilt from
/// its record, which is still at the version the key's op wrote.
fn stored_result(
    stored: &IdemRow,
    records: &HashMap<(String, String), RecordRow>,
) -> Result<RawResult> {
    let Some(version) = stored.record_version else {
        return RawResult::parse_stored(&stored.result).map_err(|err| {
            Error::Corrupt(format!(
                "stored result of idempotency key {:?}: {err}",
                stored.idem_key
            ))
        });
    };
    let slot = (stored.collection.clone(), stored.record_id.clone());
    match records.get(&slot) {
        Some(row) if row.version == version => RawResult::applied(row),
        _ => Err(Error::Corrupt(format!(
            "idempotency key {:?} refers to version {version} of record {}/{}, which is gone",
            stored.idem_key, stored.collection, stored.record_id
        ))),
    }
}

fn version_message(base: i64, current: i64) -> String {
    format!(
        "version conflict: the change is based on version {base} but the record is at version \
         {current}; merge with the current record and retry with If-Match/base_version {current}"
    )
}

fn conflict(current: &RecordRow, message: String) -> Result<RawResult> {
    Ok(RawResult {
        status: OpStatus::Conflict,
        version: Some(current.version),
        record: Some(current.to_json_string()?),
        error: Some(message),
        code: Some("conflict".into()),
        record_omitted: false,
    })
}

/// A delete of a record that is absent or already a tombstone: applied, changing nothing (the
/// tombstone's version, or 0 when there never was a record).
fn already_gone(tombstone: Option<&RecordRow>) -> RawResult {
    RawResult {
        status: OpStatus::Applied,
        version: Some(tombstone.map_or(0, |t| t.version)),
        record: None,
        error: None,
        code: None,
        record_omitted: false,
    }
}

fn not_found(op: &WriteOp) -> RawResult {
    rejected(
        "not_found",
        format!("no record {:?} in {:?}", op.id, op.collection),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2024-01-01T00:00:00.000Z";

    fn row(id: &str, version: i64, deleted: bool, key: Option<(&str, &str)>) -> RecordRow {
        RecordRow {
            owner: "alice".into(),
            collection: "todos".into(),
            id: id.into(),
            data: r#"{"title":"old","n":1}"#.into(),
            version,
            updated_at: NOW.into(),
            deleted,
            idem_key: key.map(|(k, _)| k.into()),
            idem_op: key.map(|(_, op)| op.into()),
        }
    }

    fn op(kind: OpKind, id: &str, base: Option<i64>, key: Option<&str>) -> WriteOp {
        let data: Map<String, Value> =
            serde_json::from_str(r#"{"title":"new"}"#).expect("an object");
        WriteOp {
            key: key.map(Into::into),
            collection: "todos".into(),
            kind,
            id: id.into(),
            id_generated: false,
            base_version: base,
            data_text: matches!(kind, OpKind::Create | OpKind::Replace)
                .then(|| r#"{"title":"new"}"#.to_owned()),
            data: if kind == OpKind::Update {
                data
            } else {
                Map::new()
            },
        }
    }

    fn planner(loaded: Vec<RecordRow>) -> Planner {
        let keys = loaded.iter().filter_map(RecordRow::held_key).collect();
        let settings = WriteSettings {
            answer_budget: usize::MAX,
            quota: None,
        };
        Planner::new("alice", 10, NOW.into(), loaded, keys, settings)
    }

    /// (case, rows loaded, op, status, version, code)
    type Case = (
        &'static str,
        Vec<RecordRow>,
        WriteOp,
        OpStatus,
        Option<i64>,
        Option<&'static str>,
    );

    #[test]
    fn each_op_gets_the_result_of_the_rows_it_meets() {
        let live = || vec![row("a", 7, false, None)];
        let gone = || vec![row("a", 7, true, None)];
        let keyed = || vec![row("a", 7, false, Some(("k1", "create")))];
        let cases: Vec<Case> = vec![
            (
                "create new",
                vec![],
                op(OpKind::Create, "a", None, None),
                OpStatus::Applied,
                Some(11),
                None,
            ),
            (
                "create over live",
                live(),
                op(OpKind::Create, "a", None, None),
                OpStatus::Conflict,
                Some(7),
                Some("conflict"),
            ),
            (
                "create over tombstone",
                gone(),
                op(OpKind::Create, "a", None, None),
                OpStatus::Applied,
                Some(11),
                None,
            ),
            (
                "update, base matches",
                live(),
                op(OpKind::Update, "a", Some(7), None),
                OpStatus::Applied,
                Some(11),
                None,
            ),
            (
                "update, no base",
                live(),
                op(OpKind::Update, "a", None, None),
                OpStatus::Applied,
                Some(11),
                None,
            ),
            (
                "update, stale base",
                live(),
                op(OpKind::Update, "a", Some(6), None),
                OpStatus::Conflict,
                Some(7),
                Some("conflict"),
            ),
            (
                "update of absent",
                vec![],
                op(OpKind::Update, "a", None, None),
                OpStatus::Rejected,
                None,
                Some("not_found"),
            ),
            (
                "update of tombstone",
                gone(),
                op(OpKind::Update, "a", Some(7), None),
                OpStatus::Rejected,
                None,
                Some("not_found"),
            ),
            (
                "replace, stale base",
                live(),
                op(OpKind::Replace, "a", Some(1), None),
                OpStatus::Conflict,
                Some(7),
                Some("conflict"),
            ),
            (
                "replace of absent",
                vec![],
                op(OpKind::Replace, "a", None, None),
                OpStatus::Rejected,
                None,
                Some("not_found"),
            ),
            (
                "delete of absent",
                vec![],
                op(OpKind::Delete, "a", None, None),
                OpStatus::Applied,
                Some(0),
                None,
            ),
            (
                "delete of tombstone",
                gone(),
                op(OpKind::Delete, "a", Some(3), None),
                OpStatus::Applied,
                Some(7),
                None,
            ),
            (
                "delete, stale base",
                live(),
                op(OpKind::Delete, "a", Some(3), None),
                OpStatus::Conflict,
                Some(7),
                Some("conflict"),
            ),
            (
                "delete",
                live(),
                op(OpKind::Delete, "a", Some(7), None),
                OpStatus::Applied,
                Some(11),
                None,
            ),
            (
                "replayed key",
                keyed(),
                op(OpKind::Create, "a", None, Some("k1")),
                OpStatus::Applied,
                Some(7),
                None,
            ),
            (
                "key reused",
                keyed(),
                op(OpKind::Update, "a", None, Some("k1")),
                OpStatus::Rejected,
                None,
                Some("idempotency_key_reused"),
            ),
        ];
        for (case, loaded, op, status, version, code) in cases {
            let result = planner(loaded).apply(&op).expect(case);
            assert_eq!(result.status, status, "{case}");
            assert_eq!(result.version, version, "{case}");
            assert_eq!(result.code.as_deref(), code, "{case}");
        }
    }

    #[test]
    fn an_update_merges_its_keys_into_the_stored_data() {
        let mut planner = planner(vec![row("a", 7, false, None)]);
        let result = planner
            .apply(&op(OpKind::Update, "a", None, None))
            .expect("applied");
        let record: Value =
            serde_json::from_str(result.record.as_deref().expect("a record")).expect("JSON");
        assert_eq!(record["title"], "new");
        assert_eq!(record["n"], 1);
        assert_eq!(record["version"], 11);
        let plan = planner.finish();
        assert_eq!(plan.rows.len(), 1);
        assert_eq!(plan.last_version, 11);
        assert_eq!(plan.events.len(), 1);
    }

    #[test]
    fn a_key_is_stored_in_full_only_when_its_row_changes() {
        // A fresh key lives on the row it wrote: no row of its own.
        let mut fresh = planner(vec![]);
        fresh
            .apply(&op(OpKind::Create, "a", None, Some("k1")))
            .expect("applied");
        let plan = fresh.finish();
        assert!(plan.new_keys.is_empty());
        assert_eq!(plan.rows[0].idem_key.as_deref(), Some("k1"));

        // Changing a row that holds a key stores that key's first result.
        let mut later = planner(vec![row("a", 7, false, Some(("k1", "create")))]);
        later
            .apply(&op(OpKind::Update, "a", None, None))
            .expect("applied");
        let plan = later.finish();
        assert_eq!(plan.materialized.len(), 1);
        let stored = &plan.materialized[0];
        assert!(stored.held);
        assert_eq!(stored.version, 7);
        let first = RawResult::parse_stored(&stored.row.result).expect("a stored result");
        assert_eq!(first.version, Some(7));
        assert_eq!(first.status, OpStatus::Applied);
    }

    #[test]
    fn records_past_the_answer_budget_are_omitted_but_the_first_always_goes() {
        let settings = WriteSettings {
            answer_budget: 10,
            quota: None,
        };
        let loaded = vec![row("a", 7, false, None)];
        let mut planner = Planner::new("alice", 10, NOW.into(), loaded, Vec::new(), settings);
        let stale = op(OpKind::Update, "a", Some(1), None);
        let first = planner.apply(&stale).expect("planned");
        assert!(first.record.is_some() && !first.record_omitted);
        let second = planner.apply(&stale).expect("planned");
        assert_eq!((second.record, second.record_omitted), (None, true));
        assert_eq!(second.version, Some(7));
        let mut out = Vec::new();
        let mut omitted = first.clone();
        omitted.record = None;
        omitted.record_omitted = true;
        omitted.write_json(&mut out).expect("writes");
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(
            text.contains(r#""version":7,"record_omitted":true,"error""#),
            "{text}"
        );
    }

    #[test]
    fn the_quota_refuses_growth_only_and_the_usage_change_adds_up() {
        let settings = WriteSettings {
            answer_budget: usize::MAX,
            quota: Some(30),
        };
        // `a` stores 21 bytes; new data is 15.
        let loaded = vec![row("a", 7, false, None)];
        let mut planner =
            Planner::new("alice", 10, NOW.into(), loaded, Vec::new(), settings).with_used_bytes(21);
        let cases: &[(OpKind, &str, OpStatus, Option<&str>)] = &[
            (
                OpKind::Create,
                "b",
                OpStatus::Rejected,
                Some("quota_exceeded"),
            ), // 36 > 30
            (OpKind::Replace, "a", OpStatus::Applied, None), // 15
            (OpKind::Create, "b", OpStatus::Applied, None),  // 30, at the quota
            (OpKind::Update, "a", OpStatus::Applied, None),  // same size
            (OpKind::Delete, "a", OpStatus::Applied, None),  // the tombstone keeps its data
            (
                OpKind::Create,
                "c",
                OpStatus::Rejected,
                Some("quota_exceeded"),
            ), // 45 > 30
        ];
        for (kind, id, status, code) in cases {
            let result = planner.apply(&op(*kind, id, None, None)).expect("planned");
            assert_eq!(result.status, *status, "{kind:?} {id}");
            assert_eq!(result.code.as_deref(), *code, "{kind:?} {id}");
        }
        let plan = planner.finish();
        // `b` is a new live record and `a` is gone: 0 records; 15 - 21 + 15 bytes; one more
        // record with tombstones; the checksum swaps a@7 for the tombstone a@14 and adds b@12
        // (versions 11..14: replace a, create b, update a, delete a).
        let checksum = Checksum::of_record("b", 12, false, 1)
            .plus(Checksum::of_record("a", 14, true, 1))
            .plus(Checksum::of_record("a", 7, false, -1));
        assert_eq!(
            plan.usage,
            vec![UsageDelta {
                collection: "todos".into(),
                records: 0,
                bytes: 9,
                total: 1,
                checksum,
            }]
        );
    }
}
