//! The rows the store reads and writes, and how a row becomes wire JSON (records and op
//! results are written as JSON text without building trees: pulls and pushes are hot).

use diesel::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::schema;
use crate::error::{Error, Result};
use crate::protocol::{OpKind, OpStatus, Record, DELETED_KEY, ID_KEY, UPDATED_AT_KEY, VERSION_KEY};

/// One row of `sync_records`.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = schema::sync_records)]
pub(crate) struct RecordRow {
    pub(crate) owner: String,
    pub(crate) collection: String,
    pub(crate) id: String,
    /// The data object as JSON text, without the server-managed keys.
    pub(crate) data: String,
    pub(crate) version: i64,
    pub(crate) updated_at: String,
    pub(crate) deleted: bool,
    /// The idempotency key of the op that wrote this version, whose result is rebuilt from
    /// this row until it changes (see [`IdemRow::record_version`]).
    pub(crate) idem_key: Option<String>,
    /// The kind of that op ([`OpKind::as_str`]). Set when the key lives on this row only;
    /// `None` on rows written before keys moved onto records, whose keys have a
    /// `sync_idempotency` row of their own.
    pub(crate) idem_op: Option<String>,
}

impl RecordRow {
    /// The idempotency key this row holds (without a `sync_idempotency` row of its own), as
    /// such a row would read, with its result to be rebuilt from this row.
    pub(super) fn held_key(&self) -> Option<IdemRow> {
        Some(IdemRow {
            owner: self.owner.clone(),
            idem_key: self.idem_key.clone()?,
            collection: self.collection.clone(),
            op: self.idem_op.clone()?,
            record_id: self.id.clone(),
            result: String::new(),
            created_at: self.updated_at.clone(),
            record_version: Some(self.version),
        })
    }
}

impl RecordRow {
    /// The record as the wire shows it.
    pub(crate) fn to_record(&self) -> Result<Record> {
        let mut record: Record = serde_json::from_str(&self.data).map_err(|err| {
            Error::Corrupt(format!(
                "record {}/{} has invalid data: {err}",
                self.collection, self.id
            ))
        })?;
        add_managed_keys(
            &mut record,
            &self.id,
            self.version,
            &self.updated_at,
            self.deleted,
        );
        Ok(record)
    }

    /// The record as wire JSON text.
    pub(crate) fn to_json_text(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.data.len() + 96);
        write_record_json(
            &mut out,
            &self.id,
            &self.data,
            self.version,
            &self.updated_at,
            self.deleted,
        )?;
        Ok(out)
    }

    /// The record as wire JSON text, as a `String`.
    pub(crate) fn to_json_string(&self) -> Result<String> {
        String::from_utf8(self.to_json_text()?).map_err(|err| Error::Corrupt(err.to_string()))
    }
}

/// The columns a pull needs.
#[derive(Debug, Clone, PartialEq, Queryable)]
pub(crate) struct PulledRow {
    pub(crate) id: String,
    pub(crate) data: String,
    pub(crate) version: i64,
    pub(crate) updated_at: String,
    pub(crate) deleted: bool,
}

impl PulledRow {
    /// Appends the record as wire JSON to `out`.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) -> Result<()> {
        write_record_json(
            out,
            &self.id,
            &self.data,
            self.version,
            &self.updated_at,
            self.deleted,
        )
    }
}

/// Writes a record as wire JSON without parsing the stored data (pulls are hot): the managed
/// keys first, then the members of the stored object.
fn write_record_json(
    out: &mut Vec<u8>,
    id: &str,
    data: &str,
    version: i64,
    updated_at: &str,
    deleted: bool,
) -> Result<()> {
    use std::io::Write as _;
    let data = data.trim();
    let Some(inner) = data.strip_prefix('{').and_then(|d| d.strip_suffix('}')) else {
        return Err(Error::Corrupt(format!(
            "record {id:?} data is not a JSON object"
        )));
    };
    let corrupt = |e: &dyn std::fmt::Display| Error::Corrupt(e.to_string());
    out.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut *out, id).map_err(|e| corrupt(&e))?;
    write!(out, ",\"version\":{version},\"updated_at\":").map_err(|e| corrupt(&e))?;
    serde_json::to_writer(&mut *out, updated_at).map_err(|e| corrupt(&e))?;
    if deleted {
        out.extend_from_slice(b",\"deleted\":true");
    }
    if !inner.trim().is_empty() {
        out.push(b',');
        out.extend_from_slice(inner.as_bytes());
    }
    out.push(b'}');
    Ok(())
}

fn add_managed_keys(record: &mut Record, id: &str, version: i64, updated_at: &str, deleted: bool) {
    record.insert(ID_KEY.into(), Value::String(id.to_owned()));
    record.insert(VERSION_KEY.into(), Value::from(version));
    record.insert(UPDATED_AT_KEY.into(), Value::String(updated_at.to_owned()));
    if deleted {
        record.insert(DELETED_KEY.into(), Value::Bool(true));
    }
}

/// One row of `sync_idempotency`.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = schema::sync_idempotency)]
pub(crate) struct IdemRow {
    pub(crate) owner: String,
    pub(crate) idem_key: String,
    pub(crate) collection: String,
    pub(crate) op: String,
    pub(crate) record_id: String,
    /// The [`RawResult`] returned when the key was first applied, as JSON; empty while
    /// `record_version` is set.
    pub(crate) result: String,
    pub(crate) created_at: String,
    /// Set while the record is still at the version this key's op wrote: the result is then
    /// the applied result of that row, rebuilt from it rather than stored twice. The writer
    /// that next changes the row stores the full result and clears this.
    pub(crate) record_version: Option<i64>,
}

/// A validated write, ready for the database.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WriteOp {
    pub(crate) key: Option<String>,
    pub(crate) collection: String,
    pub(crate) kind: OpKind,
    pub(crate) id: String,
    /// The id was generated by the server (a create without id); a replay will carry none.
    pub(crate) id_generated: bool,
    pub(crate) base_version: Option<i64>,
    /// The keys an update merges into the record, without the server-managed keys (empty for
    /// the other kinds).
    pub(crate) data: Map<String, Value>,
    /// The data object as JSON text for creates and replaces, without the server-managed keys;
    /// built before the write lock is taken.
    pub(crate) data_text: Option<String>,
}

/// The result of one op with the record kept as JSON text, so results are stored, replayed and
/// sent without rebuilding JSON trees. [`RawResult::write_json`] writes it exactly like
/// [`OpResult`](crate::protocol::OpResult) serialises.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawResult {
    pub(crate) status: OpStatus,
    pub(crate) version: Option<i64>,
    /// The record as JSON text: written by this server, or taken verbatim from a stored result.
    pub(crate) record: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) code: Option<String>,
    /// The record was left out to keep the answer within its byte budget
    /// (`Limits::max_push_answer_bytes`): the client fetches it.
    pub(crate) record_omitted: bool,
}

/// The shape of a stored result, for reading it back.
#[derive(Deserialize)]
struct StoredResult<'a> {
    status: OpStatus,
    #[serde(default)]
    version: Option<i64>,
    #[serde(default, borrow)]
    record: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

impl RawResult {
    /// A rejection with a machine-readable `code` and a message for people.
    pub(crate) fn rejected(code: &str, message: String) -> Self {
        Self {
            status: OpStatus::Rejected,
            version: None,
            record: None,
            error: Some(message),
            code: Some(code.to_owned()),
            record_omitted: false,
        }
    }

    /// The result of an op that wrote `row`. A replay of its idempotency key rebuilds the same
    /// bytes from the same row, as long as the row is at that version.
    pub(super) fn applied(row: &RecordRow) -> Result<Self> {
        Ok(Self {
            status: OpStatus::Applied,
            version: Some(row.version),
            record: Some(row.to_json_string()?),
            error: None,
            code: None,
            record_omitted: false,
        })
    }

    /// Reads a result written by [`RawResult::write_json`] (or, before it, by serde).
    pub(super) fn parse_stored(text: &str) -> serde_json::Result<Self> {
        let stored: StoredResult<'_> = serde_json::from_str(text)?;
        Ok(Self {
            status: stored.status,
            version: stored.version,
            record: stored.record.map(|r| r.get().to_owned()),
            error: stored.error,
            code: stored.code,
            record_omitted: false,
        })
    }

    /// Appends the result as JSON: `{"status", "version"?, "record"?, "record_omitted"?,
    /// "error"?, "code"?}`, the order and omissions of `OpResult`'s serde derive (stored results
    /// never omit their record).
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) -> Result<()> {
        let corrupt = |e: serde_json::Error| Error::Corrupt(e.to_string());
        out.extend_from_slice(b"{\"status\":");
        serde_json::to_writer(&mut *out, &self.status).map_err(corrupt)?;
        if let Some(version) = self.version {
            out.extend_from_slice(b",\"version\":");
            out.extend_from_slice(version.to_string().as_bytes());
        }
        if let Some(record) = &self.record {
            out.extend_from_slice(b",\"record\":");
            out.extend_from_slice(record.as_bytes());
        }
        if self.record_omitted {
            out.extend_from_slice(b",\"record_omitted\":true");
        }
        if let Some(error) = &self.error {
            out.extend_from_slice(b",\"error\":");
            serde_json::to_writer(&mut *out, error).map_err(corrupt)?;
        }
        if let Some(code) = &self.code {
            out.extend_from_slice(b",\"code\":");
            serde_json::to_writer(&mut *out, code).map_err(corrupt)?;
        }
        out.push(b'}');
        Ok(())
    }

    pub(super) fn to_json_string(&self) -> Result<String> {
        let mut out = Vec::with_capacity(self.record.as_ref().map_or(0, String::len) + 64);
        self.write_json(&mut out)?;
        String::from_utf8(out).map_err(|err| Error::Corrupt(err.to_string()))
    }
}

/// What one page of a pull asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageQuery {
    /// Records with a version above this.
    pub(crate) since: i64,
    /// Most rows.
    pub(crate) limit: usize,
    /// Rows skipped after the cursor.
    pub(crate) offset: i64,
    /// Equality filters.
    pub(crate) filters: Vec<Filter>,
    /// Most bytes of records (`Limits::max_page_bytes`); the first row always goes.
    pub(crate) max_bytes: usize,
}

/// One page of a pull.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Page {
    pub(crate) rows: Vec<PulledRow>,
    /// More rows follow (past `limit` or past the byte budget).
    pub(crate) has_more: bool,
}

/// Bytes a pulled row adds to a page besides its data and id (the managed keys).
pub(crate) const ROW_OVERHEAD: usize = 96;

/// How many of the rows with these sizes (data + id bytes, in order; one more than `limit`
/// tells that more follow) fit a page of `limit` rows and `max_bytes`, and whether more
/// follow. The first row always fits, so a page is never empty while rows remain.
pub(crate) fn page_cut(sizes: &[i64], limit: usize, max_bytes: usize) -> (usize, bool) {
    let mut used = 0usize;
    let mut take = 0usize;
    for size in sizes.iter().take(limit) {
        let size = usize::try_from(*size)
            .unwrap_or(usize::MAX)
            .saturating_add(ROW_OVERHEAD);
        if take > 0 && used.saturating_add(size) > max_bytes {
            break;
        }
        used = used.saturating_add(size);
        take += 1;
    }
    (take, sizes.len() > take)
}

/// An equality filter of a pull: top-level `field` equals `value` (compared as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) field: String,
    pub(crate) value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (row sizes, limit, max_bytes, (rows taken, has_more))
    type Case = (&'static [i64], usize, usize, (usize, bool));

    #[test]
    fn a_page_is_cut_by_rows_or_bytes_whichever_comes_first() {
        const O: i64 = ROW_OVERHEAD as i64;
        // (sizes, limit, max_bytes) -> (take, has_more)
        let cases: [Case; 7] = [
            (&[], 10, 1000, (0, false)),
            (&[10, 10], 10, 1000, (2, false)),
            (&[10, 10, 10], 2, 1000, (2, true)),
            (&[500 - O, 500 - O, 1], 10, 1000, (2, true)),
            (&[500 - O, 501 - O], 10, 1000, (1, true)),
            (&[5000], 10, 1000, (1, false)),
            (&[i64::MAX, i64::MAX], 10, 1000, (1, true)),
        ];
        for (sizes, limit, max_bytes, want) in cases {
            assert_eq!(
                page_cut(sizes, limit, max_bytes),
                want,
                "{sizes:?} {limit} {max_bytes}"
            );
        }
    }
}
