//! Dynamic statements with bound parameters, and the small database
//! abstraction the store logic is written against once for both backends.

use std::collections::HashMap;

use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::Error as DieselError;
use diesel::sql_types::{
    BigInt, Binary, Bool, Double, Float, Integer, Nullable, SmallInt, Text, Untyped,
};
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel::{QueryResult, RunQueryDsl};
use diesel_dynamic_schema::dynamic_value::DynamicRow;
use sync_core::protocol::Checksum;
use sync_core::store::StoreError;

use crate::ddl::Backend;
use crate::value::{Param, Raw};

/// An SQL statement built at run time: text with bound parameters at marked offsets.
///
/// Statements are cached as prepared statements by their text unless
/// [`Sql::uncached`] is called (for ad-hoc query shapes).
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    text: String,
    /// Byte offsets in `text` where each parameter goes.
    marks: Vec<usize>,
    params: Vec<Param>,
    cacheable: bool,
}

impl Sql {
    pub(crate) fn new(text: impl Into<String>) -> Sql {
        Sql {
            text: text.into(),
            marks: Vec::new(),
            params: Vec::new(),
            cacheable: true,
        }
    }

    /// Appends SQL text.
    pub(crate) fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Appends a bound parameter.
    pub(crate) fn bind(&mut self, param: Param) -> &mut Sql {
        self.marks.push(self.text.len());
        self.params.push(param);
        self
    }

    /// Appends parameters separated by `", "`.
    pub(crate) fn bind_list(&mut self, params: impl IntoIterator<Item = Param>) -> &mut Sql {
        for (i, p) in params.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(p);
        }
        self
    }

    /// Appends another statement (its text and parameters).
    pub(crate) fn append(&mut self, other: Sql) -> &mut Sql {
        let offset = self.text.len();
        self.text.push_str(&other.text);
        self.marks
            .extend(other.marks.into_iter().map(|m| m + offset));
        self.params.extend(other.params);
        self.cacheable &= other.cacheable;
        self
    }

    /// Do not keep a prepared statement for this text.
    pub(crate) fn uncached(mut self) -> Sql {
        self.cacheable = false;
        self
    }

    /// The SQL text with `?` for each parameter (for messages and tests).
    #[cfg(test)]
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        let mut prev = 0;
        for &m in &self.marks {
            out.push_str(&self.text[prev..m]);
            out.push('?');
            prev = m;
        }
        out.push_str(&self.text[prev..]);
        out
    }

    /// The text pieces between parameters, each with the parameter after it.
    fn pieces(&self) -> impl Iterator<Item = (&str, Option<&Param>)> {
        let ends = self.marks.iter().copied().chain([self.text.len()]);
        let mut prev = 0;
        ends.enumerate().map(move |(i, end)| {
            let piece = &self.text[prev..end];
            prev = end;
            (piece, self.params.get(i))
        })
    }

    fn not_supported(param: &Param, backend: &str) -> DieselError {
        DieselError::QueryBuilderError(
            format!("internal error: parameter {param:?} cannot be bound on {backend}").into(),
        )
    }
}

impl QueryId for Sql {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Sql {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Sql {}

impl QueryFragment<Sqlite> for Sql {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        if !self.cacheable {
            out.unsafe_to_cache_prepared();
        }
        for (piece, param) in self.pieces() {
            out.push_sql(piece);
            let Some(param) = param else {
                continue;
            };
            match param {
                Param::Bool(v) => out.push_bind_param::<Nullable<Bool>, _>(v)?,
                Param::I16(v) => out.push_bind_param::<Nullable<SmallInt>, _>(v)?,
                Param::I32(v) => out.push_bind_param::<Nullable<Integer>, _>(v)?,
                Param::I64(v) => out.push_bind_param::<Nullable<BigInt>, _>(v)?,
                Param::F32(v) => out.push_bind_param::<Nullable<Float>, _>(v)?,
                Param::F64(v) => out.push_bind_param::<Nullable<Double>, _>(v)?,
                Param::Text(v) => out.push_bind_param::<Nullable<Text>, _>(v)?,
                Param::Blob(v) => out.push_bind_param::<Nullable<Binary>, _>(v)?,
                other => return Err(Sql::not_supported(other, "SQLite")),
            }
        }
        Ok(())
    }
}

#[cfg(feature = "postgres")]
impl QueryFragment<diesel::pg::Pg> for Sql {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, diesel::pg::Pg>) -> QueryResult<()> {
        use diesel::sql_types::{Timestamp, Timestamptz, Uuid};
        if !self.cacheable {
            out.unsafe_to_cache_prepared();
        }
        for (piece, param) in self.pieces() {
            out.push_sql(piece);
            let Some(param) = param else {
                continue;
            };
            match param {
                Param::Bool(v) => out.push_bind_param::<Nullable<Bool>, _>(v)?,
                Param::I16(v) => out.push_bind_param::<Nullable<SmallInt>, _>(v)?,
                Param::I32(v) => out.push_bind_param::<Nullable<Integer>, _>(v)?,
                Param::I64(v) => out.push_bind_param::<Nullable<BigInt>, _>(v)?,
                Param::F32(v) => out.push_bind_param::<Nullable<Float>, _>(v)?,
                Param::F64(v) => out.push_bind_param::<Nullable<Double>, _>(v)?,
                Param::Text(v) => out.push_bind_param::<Nullable<Text>, _>(v)?,
                Param::Blob(v) => out.push_bind_param::<Nullable<Binary>, _>(v)?,
                Param::Timestamptz(v) => out.push_bind_param::<Nullable<Timestamptz>, _>(v)?,
                Param::Timestamp(v) => out.push_bind_param::<Nullable<Timestamp>, _>(v)?,
                Param::Uuid(v) => out.push_bind_param::<Nullable<Uuid>, _>(v)?,
            }
        }
        Ok(())
    }
}

/// What the store logic needs from a connection.
pub(crate) trait Db {
    fn backend(&self) -> Backend;
    /// Runs a statement; returns the number of rows changed.
    fn execute(&mut self, sql: Sql) -> Result<usize, StoreError>;
    /// Runs a query; returns its rows, columns in select order.
    fn load(&mut self, sql: Sql) -> Result<Vec<Vec<Raw>>, StoreError>;
    /// The seq for a new outbox op, when the connection hands them out
    /// itself (a SQLite write transaction); `None`: let the database assign it.
    fn next_seq(&mut self) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }

    /// The checksum changes of a write transaction, added to `_sync_checksums` before it
    /// commits; `None` outside one (reads change nothing).
    fn checksums(&mut self) -> Option<&mut ChecksumDeltas> {
        None
    }
}

/// What a write transaction changes in each model's (records, checksum) of what the store
/// knows of the remote (rows the remote versioned, remembered tombstones).
#[derive(Debug, Default)]
pub(crate) struct ChecksumDeltas(pub(crate) HashMap<&'static str, (i64, Checksum)>);

impl ChecksumDeltas {
    pub(crate) fn add(&mut self, model: &'static str, records: i64, checksum: Checksum) {
        let entry = self.0.entry(model).or_default();
        entry.0 = entry.0.saturating_add(records);
        entry.1 = entry.1.plus(checksum);
    }
}

/// On SQLite, the largest outbox seq ever handed out, as an expression over
/// `_sync_outbox_counts` (bookkeeping migration 7): the largest seq present, or
/// `last_seq`, which deletes raise to the seqs of the ops they remove. Every
/// insert takes the seq after it (the insert trigger refuses any other).
pub(crate) const LARGEST_SEQ: &str =
    "MAX(last_seq, COALESCE((SELECT MAX(seq) FROM _sync_outbox), 0))";

/// A SQLite write transaction. It holds the database's write lock, so it can
/// hand out outbox seqs itself: one read of the largest seq handed out
/// ([`LARGEST_SEQ`]) per transaction instead of one extra statement per
/// inserted op.
pub(crate) struct SqliteWrite<'a> {
    pub(crate) conn: &'a mut SqliteConnection,
    pub(crate) next_seq: Option<i64>,
    /// `None` when the store keeps no checksums.
    pub(crate) checksums: Option<ChecksumDeltas>,
}

impl Db for SqliteWrite<'_> {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn execute(&mut self, sql: Sql) -> Result<usize, StoreError> {
        self.conn.execute(sql)
    }

    fn load(&mut self, sql: Sql) -> Result<Vec<Vec<Raw>>, StoreError> {
        self.conn.load(sql)
    }

    fn next_seq(&mut self) -> Result<Option<i64>, StoreError> {
        let next = match self.next_seq {
            Some(next) => next,
            None => {
                // Never a deleted op's seq: deletes keep the largest in `last_seq`.
                let last = self
                    .conn
                    .load(Sql::new(format!(
                        "SELECT {LARGEST_SEQ} FROM _sync_outbox_counts WHERE id = 1"
                    )))?
                    .into_iter()
                    .next()
                    .and_then(|r| r.into_iter().next())
                    .and_then(|r| r.as_i64())
                    .unwrap_or(0);
                last + 1
            }
        };
        self.next_seq = Some(next + 1);
        Ok(Some(next))
    }

    fn checksums(&mut self) -> Option<&mut ChecksumDeltas> {
        self.checksums.as_mut()
    }
}

/// A Postgres write transaction (see [`SqliteWrite`]).
#[cfg(feature = "postgres")]
pub(crate) struct PgWrite<'a> {
    pub(crate) conn: &'a mut diesel::pg::PgConnection,
    pub(crate) checksums: Option<ChecksumDeltas>,
}

#[cfg(feature = "postgres")]
impl Db for PgWrite<'_> {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn execute(&mut self, sql: Sql) -> Result<usize, StoreError> {
        Db::execute(&mut *self.conn, sql)
    }

    fn load(&mut self, sql: Sql) -> Result<Vec<Vec<Raw>>, StoreError> {
        Db::load(&mut *self.conn, sql)
    }

    fn checksums(&mut self) -> Option<&mut ChecksumDeltas> {
        self.checksums.as_mut()
    }
}

/// Maps a Diesel error to the store's error.
pub(crate) fn db_error(err: DieselError) -> StoreError {
    StoreError::Database(err.to_string())
}

impl Db for SqliteConnection {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn execute(&mut self, sql: Sql) -> Result<usize, StoreError> {
        RunQueryDsl::execute(sql, self).map_err(db_error)
    }

    fn load(&mut self, sql: Sql) -> Result<Vec<Vec<Raw>>, StoreError> {
        let rows: Vec<DynamicRow<Raw>> = RunQueryDsl::load(sql, self).map_err(db_error)?;
        Ok(rows.into_iter().map(|r| r.into_iter().collect()).collect())
    }
}

#[cfg(feature = "postgres")]
impl Db for diesel::pg::PgConnection {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn execute(&mut self, sql: Sql) -> Result<usize, StoreError> {
        RunQueryDsl::execute(sql, self).map_err(db_error)
    }

    fn load(&mut self, sql: Sql) -> Result<Vec<Vec<Raw>>, StoreError> {
        let rows: Vec<DynamicRow<Raw>> = RunQueryDsl::load(sql, self).map_err(db_error)?;
        Ok(rows.into_iter().map(|r| r.into_iter().collect()).collect())
    }
}

/// Carries a [`StoreError`] out of a Diesel transaction closure.
#[derive(Debug)]
pub(crate) struct TxError(pub(crate) StoreError);

impl From<DieselError> for TxError {
    fn from(err: DieselError) -> Self {
        TxError(db_error(err))
    }
}

impl From<StoreError> for TxError {
    fn from(err: StoreError) -> Self {
        TxError(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_and_params_interleave() {
        let mut sql = Sql::new("SELECT a FROM t WHERE b = ");
        sql.bind(Param::I32(Some(1))).push(" AND c IN (");
        sql.bind_list([Param::text("x"), Param::text("y")])
            .push(")");
        assert_eq!(sql.text(), "SELECT a FROM t WHERE b = ? AND c IN (?, ?)");
    }
}
