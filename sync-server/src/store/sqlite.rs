//! SQLite backend: one file, WAL mode, `BEGIN IMMEDIATE` writers.

use diesel::connection::SimpleConnection;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection};
use diesel::sql_types::{BigInt, Bool, Text};
use diesel::SqliteConnection;
use diesel_migrations::MigrationHarness;

use super::{pool_builder, sqlite_json_path, SqlitePool, MIGRATIONS};
use crate::error::{Error, Result};
use crate::events::RawEvent;

type Conn = SqliteConnection;
type Db = diesel::sqlite::Sqlite;

use super::planner::UsageDelta;
use super::rows::page_cut;
use super::schema::{
    sync_idempotency as idem, sync_records as rec, sync_sequence as seq, sync_usage as usage,
};
use super::write::WriteConn;
use super::{Filter, IdemRow, NotifyTarget, Page, PageQuery, RecordRow};

// `get` and `pull` read the same in both backends, but Diesel's query types are per backend,
// so each backend module has its own copy (as it has its own `WriteConn`).

pub(super) fn get(
    conn: &mut Conn,
    owner: &str,
    collection: &str,
    id: &str,
) -> Result<Option<RecordRow>> {
    Ok(rec::table
        .filter(rec::owner.eq(owner))
        .filter(rec::collection.eq(collection))
        .filter(rec::id.eq(id))
        .select(RecordRow::as_select())
        .first(conn)
        .optional()?)
}

pub(super) fn pull(
    conn: &mut Conn,
    owner: &str,
    collection: &str,
    page: &PageQuery,
) -> Result<Page> {
    let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
    conn.transaction(|conn| {
        // The sizes first, so a page never loads more than its byte budget (and one row).
        let sizes: Vec<i64> = pull_query(owner, collection, page)
            .limit(limit.saturating_add(1))
            .offset(page.offset)
            .select(sql::<BigInt>(
                "length(CAST(data AS BLOB)) + length(CAST(id AS BLOB))",
            ))
            .load(conn)?;
        let (take, has_more) = page_cut(&sizes, page.limit, page.max_bytes);
        let rows = if take == 0 {
            Vec::new()
        } else {
            pull_query(owner, collection, page)
                .limit(i64::try_from(take).unwrap_or(i64::MAX))
                .offset(page.offset)
                .select((
                    rec::id,
                    rec::data,
                    rec::version,
                    rec::updated_at,
                    rec::deleted,
                ))
                .load(conn)?
        };
        Ok(Page { rows, has_more })
    })
}

/// The rows of a page, in version order, before the page's cut.
fn pull_query<'a>(
    owner: &'a str,
    collection: &'a str,
    page: &'a PageQuery,
) -> rec::BoxedQuery<'a, Db> {
    // `owner || ''` is the expression of the pull index (see the migration).
    let mut query = rec::table
        .filter(sql::<Bool>("(owner || '') = ").bind::<Text, _>(owner))
        .filter(rec::collection.eq(collection))
        .filter(rec::version.gt(page.since))
        .order(rec::version.asc())
        .into_boxed::<Db>();
    for filter in &page.filters {
        query = query.filter(field_equals(filter));
    }
    query
}

impl WriteConn for SqliteConnection {
    fn write_transaction<T>(&mut self, f: impl FnOnce(&mut Self, i64) -> Result<T>) -> Result<T> {
        write_transaction(self, f)
    }

    fn savepoint<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        // A nested transaction is a savepoint.
        self.transaction(f)
    }

    fn load_records(
        &mut self,
        owner: &str,
        collection: &str,
        ids: &[&str],
    ) -> Result<Vec<RecordRow>> {
        load_records(self, owner, collection, ids)
    }

    fn load_keys(&mut self, owner: &str, keys: &[&str]) -> Result<Vec<IdemRow>> {
        load_keys(self, owner, keys)
    }

    fn load_held_keys(&mut self, owner: &str, keys: &[&str]) -> Result<Vec<RecordRow>> {
        load_held_keys(self, owner, keys)
    }

    fn delete_records(&mut self, owner: &str, collection: &str, ids: &[&str]) -> Result<()> {
        diesel::delete(
            rec::table
                .filter(rec::owner.eq(owner))
                .filter(rec::collection.eq(collection))
                .filter(rec::id.eq_any(ids)),
        )
        .execute(self)?;
        Ok(())
    }

    fn insert_records(&mut self, rows: Vec<RecordRow>) -> Result<()> {
        insert_records(self, rows)
    }

    fn insert_keys(&mut self, rows: Vec<IdemRow>) -> Result<()> {
        insert_keys(self, rows)
    }

    fn store_key_result(
        &mut self,
        owner: &str,
        key: &str,
        version: i64,
        result: &str,
    ) -> Result<usize> {
        Ok(diesel::update(
            idem::table
                .filter(idem::owner.eq(owner))
                .filter(idem::idem_key.eq(key))
                .filter(idem::record_version.eq(version)),
        )
        .set((
            idem::result.eq(result),
            idem::record_version.eq(None::<i64>),
        ))
        .execute(self)?)
    }

    fn set_head_version(&mut self, version: i64) -> Result<()> {
        diesel::update(seq::table.filter(seq::id.eq(1)))
            .set(seq::head_version.eq(version))
            .execute(self)?;
        Ok(())
    }

    fn used_bytes(&mut self, owner: &str) -> Result<i64> {
        // SUM of a BIGINT is NUMERIC on Postgres; the cast keeps it an integer on both.
        Ok(usage::table
            .filter(usage::owner.eq(owner))
            .select(sql::<BigInt>("CAST(COALESCE(SUM(bytes), 0) AS BIGINT)"))
            .first(self)?)
    }

    fn add_usage(&mut self, owner: &str, deltas: &[UsageDelta]) -> Result<()> {
        for delta in deltas {
            diesel::insert_into(usage::table)
                .values((
                    usage::owner.eq(owner),
                    usage::collection.eq(&delta.collection),
                    usage::records.eq(delta.records),
                    usage::bytes.eq(delta.bytes),
                    usage::total.eq(Some(delta.total)),
                    usage::checksum_lo.eq(Some(delta.checksum.lo)),
                    usage::checksum_hi.eq(Some(delta.checksum.hi)),
                ))
                .on_conflict((usage::owner, usage::collection))
                .do_update()
                .set((
                    usage::records.eq(usage::records + delta.records),
                    usage::bytes.eq(usage::bytes + delta.bytes),
                    // NULL (not counted yet) stays NULL until the count at open.
                    usage::total.eq(usage::total + delta.total),
                    usage::checksum_lo.eq(usage::checksum_lo + delta.checksum.lo),
                    usage::checksum_hi.eq(usage::checksum_hi + delta.checksum.hi),
                ))
                .execute(self)?;
        }
        Ok(())
    }

    fn before_commit(&mut self, events: &[RawEvent], notify: Option<&NotifyTarget>) -> Result<()> {
        before_commit(self, events, notify)
    }
}

#[derive(Debug, Clone, Copy)]
struct Pragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        // busy_timeout comes first: switching to WAL needs a lock that another process (or a
        // previous server on the same file still closing its connections) may hold, and
        // without a busy handler SQLite reports "database is locked" at once instead of waiting.
        // WAL lets pulls read while a write is in progress; NORMAL sync is durable across
        // process crashes (WAL), which is what a sync server needs between client retries.
        conn.batch_execute(
            "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

pub(super) fn open(path: &str, pool_size: u32) -> Result<SqlitePool> {
    // Create the file and run migrations on one connection first, so that concurrent pool
    // connections never race on the schema.
    let mut conn = SqliteConnection::establish(path).map_err(Error::Connect)?;
    Pragmas
        .on_acquire(&mut conn)
        .map_err(|err| Error::Migration(err.to_string()))?;
    conn.run_pending_migrations(MIGRATIONS)
        .map_err(|err| Error::Migration(err.to_string()))?;
    super::meta::sqlite::count_checksums(&mut conn)?;
    drop(conn);
    pool_builder(pool_size)
        .connection_customizer(Box::new(Pragmas))
        .build(ConnectionManager::<SqliteConnection>::new(path))
        .map_err(Error::Pool)
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction: it holds SQLite's write lock from the start, so
/// versions are read, assigned and committed by one writer at a time.
fn write_transaction<T>(conn: &mut Conn, f: impl FnOnce(&mut Conn, i64) -> Result<T>) -> Result<T> {
    conn.immediate_transaction(|conn| {
        let current: i64 = seq::table
            .filter(seq::id.eq(1))
            .select(seq::head_version)
            .first(conn)?;
        f(conn, current)
    })
}

/// `data.field` as text equals `value`: booleans compare as `true`/`false`, like Postgres'
/// `->>`, so a filter means the same on both backends.
fn field_equals(filter: &Filter) -> Box<dyn BoxableExpression<rec::table, Db, SqlType = Bool>> {
    let path = sqlite_json_path(&filter.field);
    Box::new(
        sql::<Bool>("(CASE json_type(data, ")
            .bind::<Text, _>(path.clone())
            .sql(
                ") WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE CAST(json_extract(data, ",
            )
            .bind::<Text, _>(path)
            .sql(") AS TEXT) END) = ")
            .bind::<Text, _>(filter.value.clone()),
    )
}

/// The rows of `ids` in one collection. The ids go in as one JSON array rather than as an
/// `IN (?, ?, ...)` list, which would be a new statement for SQLite to compile for every count.
fn load_records(
    conn: &mut Conn,
    owner: &str,
    collection: &str,
    ids: &[&str],
) -> Result<Vec<RecordRow>> {
    let ids = serde_json::to_string(ids).map_err(|err| Error::Corrupt(err.to_string()))?;
    Ok(diesel::sql_query(
        "SELECT owner, collection, id, data, version, updated_at, deleted, idem_key, idem_op \
         FROM sync_records WHERE owner = ? AND collection = ? \
         AND id IN (SELECT value FROM json_each(?))",
    )
    .bind::<Text, _>(owner)
    .bind::<Text, _>(collection)
    .bind::<Text, _>(ids)
    .load(conn)?)
}

/// The stored idempotency keys among `keys` (passed like the ids above).
fn load_keys(conn: &mut Conn, owner: &str, keys: &[&str]) -> Result<Vec<IdemRow>> {
    let keys = serde_json::to_string(keys).map_err(|err| Error::Corrupt(err.to_string()))?;
    Ok(diesel::sql_query(
        "SELECT owner, idem_key, collection, op, record_id, result, created_at, record_version \
         FROM sync_idempotency WHERE owner = ? \
         AND idem_key IN (SELECT value FROM json_each(?))",
    )
    .bind::<Text, _>(owner)
    .bind::<Text, _>(keys)
    .load(conn)?)
}

/// The record rows of `owner` that hold one of `keys` (passed like the ids above).
fn load_held_keys(conn: &mut Conn, owner: &str, keys: &[&str]) -> Result<Vec<RecordRow>> {
    let keys = serde_json::to_string(keys).map_err(|err| Error::Corrupt(err.to_string()))?;
    Ok(diesel::sql_query(
        "SELECT owner, collection, id, data, version, updated_at, deleted, idem_key, idem_op \
         FROM sync_records WHERE owner = ? \
         AND idem_key IN (SELECT value FROM json_each(?))",
    )
    .bind::<Text, _>(owner)
    .bind::<Text, _>(keys)
    .load(conn)?)
}

/// Rows per INSERT statement. Diesel caches the prepared statement of a fixed-size batch (an
/// array of owned values) but builds a `Vec` batch's SQL anew each time, and SQLite then
/// compiles it; so full chunks go through one cached statement and the rest through the cached
/// one-row statement.
const ROWS_PER_INSERT: usize = 50;

/// Inserts `values` (one tuple of column assignments per row) in chunks, as above.
macro_rules! insert_in_chunks {
    ($conn:expr, $table:expr, $values:expr) => {{
        let mut values = $values;
        let full = values.len() - values.len() % ROWS_PER_INSERT;
        let rest = values.split_off(full);
        let mut values = values.into_iter();
        while values.len() > 0 {
            let chunk: Vec<_> = values.by_ref().take(ROWS_PER_INSERT).collect();
            let chunk: [_; ROWS_PER_INSERT] = chunk
                .try_into()
                .map_err(|_| Error::Task("insert chunk has the wrong size".into()))?;
            diesel::insert_into($table).values(chunk).execute($conn)?;
        }
        for row in rest {
            diesel::insert_into($table).values(row).execute($conn)?;
        }
    }};
}

/// The column assignments of one record row.
#[allow(clippy::type_complexity)]
fn record_values(
    row: RecordRow,
) -> (
    diesel::dsl::Eq<rec::owner, String>,
    diesel::dsl::Eq<rec::collection, String>,
    diesel::dsl::Eq<rec::id, String>,
    diesel::dsl::Eq<rec::data, String>,
    diesel::dsl::Eq<rec::version, i64>,
    diesel::dsl::Eq<rec::updated_at, String>,
    diesel::dsl::Eq<rec::deleted, bool>,
    diesel::dsl::Eq<rec::idem_key, Option<String>>,
    diesel::dsl::Eq<rec::idem_op, Option<String>>,
) {
    (
        rec::owner.eq(row.owner),
        rec::collection.eq(row.collection),
        rec::id.eq(row.id),
        rec::data.eq(row.data),
        rec::version.eq(row.version),
        rec::updated_at.eq(row.updated_at),
        rec::deleted.eq(row.deleted),
        rec::idem_key.eq(row.idem_key),
        rec::idem_op.eq(row.idem_op),
    )
}

fn insert_records(conn: &mut Conn, rows: Vec<RecordRow>) -> Result<()> {
    let values: Vec<_> = rows.into_iter().map(record_values).collect();
    insert_in_chunks!(conn, rec::table, values);
    Ok(())
}

fn insert_keys(conn: &mut Conn, rows: Vec<IdemRow>) -> Result<()> {
    let values: Vec<_> = rows
        .into_iter()
        .map(|row| {
            (
                idem::owner.eq(row.owner),
                idem::idem_key.eq(row.idem_key),
                idem::collection.eq(row.collection),
                idem::op.eq(row.op),
                idem::record_id.eq(row.record_id),
                idem::result.eq(row.result),
                idem::created_at.eq(row.created_at),
                idem::record_version.eq(row.record_version),
            )
        })
        .collect();
    insert_in_chunks!(conn, idem::table, values);
    Ok(())
}

fn before_commit(
    _conn: &mut Conn,
    _events: &[RawEvent],
    _notify: Option<&NotifyTarget>,
) -> Result<()> {
    // One process serves a SQLite file; events go out through the in-process hub after commit.
    Ok(())
}
