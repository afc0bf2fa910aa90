//! Postgres backend: writers lock the sequence row (`FOR UPDATE`) for their whole transaction,
//! and committed events reach other instances through `NOTIFY`.

use diesel::connection::SimpleConnection;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::r2d2::ConnectionManager;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text};
use diesel::PgConnection;
use diesel_migrations::MigrationHarness;
use std::sync::atomic::Ordering;

use super::{pool_builder, PgPool, MIGRATIONS};
use crate::error::{Error, Result};
use crate::events::{EventRef, NotifyPayload, RawEvent};

type Conn = PgConnection;
type Db = diesel::pg::Pg;

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
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(|conn| {
            // The sizes first, so a page never loads more than its byte budget (and one row).
            let sizes: Vec<i64> = pull_query(owner, collection, page)
                .limit(limit.saturating_add(1))
                .offset(page.offset)
                .select(sql::<BigInt>(
                    "octet_length(data)::bigint + octet_length(id)::bigint",
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

impl WriteConn for PgConnection {
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

/// Arbitrary key of the advisory lock that serialises migrations of instances starting together.
const MIGRATION_LOCK: i64 = 0x5359_4e43_0001;

#[derive(QueryableByName)]
struct SchemaName {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Connects, migrates, and returns the pool and the NOTIFY channel of the current schema.
pub(super) fn open(url: &str, pool_size: u32) -> Result<(PgPool, String)> {
    let mut conn = PgConnection::establish(url).map_err(Error::Connect)?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).execute(&mut conn)?;
    let migrated = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|_| ())
        .map_err(|err| Error::Migration(err.to_string()))
        // Under the same lock: one instance counts the checksums a migration left to count.
        .and_then(|()| super::meta::postgres::count_checksums(&mut conn).map(|_| ()));
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(&mut conn)?;
    migrated?;
    let schema: SchemaName =
        diesel::sql_query("SELECT current_schema()::text AS name").get_result(&mut conn)?;
    let channel = channel_name(&schema.name);
    drop(conn);
    let pool = pool_builder(pool_size)
        .build(ConnectionManager::<PgConnection>::new(url))
        .map_err(Error::Pool)?;
    Ok((pool, channel))
}

/// NOTIFY channels are database-wide; naming the channel after the schema keeps deployments
/// (and tests) in separate schemas of one database apart.
pub(crate) fn channel_name(schema: &str) -> String {
    let mut name = String::from("sync_events_");
    name.extend(schema.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        }
    }));
    name.truncate(63);
    name
}

/// Runs `f` in a transaction that first locks the sequence row. Concurrent writers queue on
/// that lock until the holder commits, so versions become visible in the order they were
/// assigned and a puller can never see version N+1 while N is still uncommitted.
fn write_transaction<T>(conn: &mut Conn, f: impl FnOnce(&mut Conn, i64) -> Result<T>) -> Result<T> {
    conn.transaction(|conn| {
        let current: i64 = seq::table
            .filter(seq::id.eq(1))
            .select(seq::head_version)
            .for_update()
            .first(conn)?;
        f(conn, current)
    })
}

/// `data->>'field'` equals `value`.
fn field_equals(filter: &Filter) -> Box<dyn BoxableExpression<rec::table, Db, SqlType = Bool>> {
    Box::new(
        sql::<Bool>("((data::jsonb) ->> ")
            .bind::<Text, _>(filter.field.clone())
            .sql(") = ")
            .bind::<Text, _>(filter.value.clone()),
    )
}

/// The rows of `ids` in one collection: one primary-key probe per id. (With `id IN (...)` or a
/// plain join the planner may hash the user's whole collection, so writes slowed down as it
/// grew; a `LIMIT 1` lateral subquery cannot be flattened into such a plan.)
fn load_records(
    conn: &mut Conn,
    owner: &str,
    collection: &str,
    ids: &[&str],
) -> Result<Vec<RecordRow>> {
    Ok(diesel::sql_query(
        "SELECT r.owner, r.collection, r.id, r.data, r.version, r.updated_at, r.deleted, \
                r.idem_key, r.idem_op \
         FROM unnest($3::text[]) AS k(id) CROSS JOIN LATERAL ( \
             SELECT * FROM sync_records s \
             WHERE s.owner = $1 AND s.collection = $2 AND s.id = k.id LIMIT 1) r",
    )
    .bind::<Text, _>(owner)
    .bind::<Text, _>(collection)
    .bind::<Array<Text>, _>(ids)
    .load(conn)?)
}

/// The stored idempotency keys among `keys` (one primary-key probe each, as above).
fn load_keys(conn: &mut Conn, owner: &str, keys: &[&str]) -> Result<Vec<IdemRow>> {
    Ok(diesel::sql_query(
        "SELECT i.owner, i.idem_key, i.collection, i.op, i.record_id, i.result, i.created_at, \
                i.record_version \
         FROM unnest($2::text[]) AS k(idem_key) CROSS JOIN LATERAL ( \
             SELECT * FROM sync_idempotency s \
             WHERE s.owner = $1 AND s.idem_key = k.idem_key LIMIT 1) i",
    )
    .bind::<Text, _>(owner)
    .bind::<Array<Text>, _>(keys)
    .load(conn)?)
}

/// The record rows of `owner` that hold one of `keys` (one probe of the key index each).
fn load_held_keys(conn: &mut Conn, owner: &str, keys: &[&str]) -> Result<Vec<RecordRow>> {
    Ok(diesel::sql_query(
        "SELECT r.owner, r.collection, r.id, r.data, r.version, r.updated_at, r.deleted, \
                r.idem_key, r.idem_op \
         FROM unnest($2::text[]) AS k(idem_key) CROSS JOIN LATERAL ( \
             SELECT * FROM sync_records s \
             WHERE s.owner = $1 AND s.idem_key = k.idem_key LIMIT 1) r",
    )
    .bind::<Text, _>(owner)
    .bind::<Array<Text>, _>(keys)
    .load(conn)?)
}

/// Inserts `rows` with one statement that unnests a column array per column: a multi-row
/// VALUES list would carry a bind parameter per value, which Postgres parses and plans anew for
/// every batch.
fn insert_records(conn: &mut Conn, rows: Vec<RecordRow>) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&RecordRow) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    diesel::sql_query(
        "INSERT INTO sync_records \
             (owner, collection, id, data, version, updated_at, deleted, idem_key, idem_op) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
             $6::text[], $7::boolean[], $8::text[], $9::text[])",
    )
    .bind::<Array<Text>, _>(column(|r| &r.owner))
    .bind::<Array<Text>, _>(column(|r| &r.collection))
    .bind::<Array<Text>, _>(column(|r| &r.id))
    .bind::<Array<Text>, _>(column(|r| &r.data))
    .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.version).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(column(|r| &r.updated_at))
    .bind::<Array<Bool>, _>(rows.iter().map(|r| r.deleted).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(
        rows.iter()
            .map(|r| r.idem_key.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Text>>, _>(
        rows.iter()
            .map(|r| r.idem_op.as_deref())
            .collect::<Vec<_>>(),
    )
    .execute(conn)?;
    Ok(())
}

/// Inserts idempotency rows like [`insert_records`].
fn insert_keys(conn: &mut Conn, rows: Vec<IdemRow>) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&IdemRow) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    diesel::sql_query(
        "INSERT INTO sync_idempotency \
             (owner, idem_key, collection, op, record_id, result, created_at, record_version) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::bigint[])",
    )
    .bind::<Array<Text>, _>(column(|r| &r.owner))
    .bind::<Array<Text>, _>(column(|r| &r.idem_key))
    .bind::<Array<Text>, _>(column(|r| &r.collection))
    .bind::<Array<Text>, _>(column(|r| &r.op))
    .bind::<Array<Text>, _>(column(|r| &r.record_id))
    .bind::<Array<Text>, _>(column(|r| &r.result))
    .bind::<Array<Text>, _>(column(|r| &r.created_at))
    .bind::<Array<Nullable<BigInt>>, _>(rows.iter().map(|r| r.record_version).collect::<Vec<_>>())
    .execute(conn)?;
    Ok(())
}

/// Queues the events as NOTIFY payloads of this transaction; Postgres delivers them only if
/// and when it commits, in commit order.
///
/// Nothing is sent while no other instance listens on the channel (a single instance, the
/// common deployment, has nobody to tell). The check runs under the version lock, and a
/// listening session takes that lock once after its `LISTEN` ([`fence_writers`]), so a writer
/// that saw no listener has committed before the newcomer's fence returns: the newcomer
/// covers such writes by its baseline version (at start) or its catch-up (after a reconnect).
fn before_commit(
    conn: &mut Conn,
    events: &[RawEvent],
    notify: Option<&NotifyTarget>,
) -> Result<()> {
    let Some(target) = notify else {
        return Ok(());
    };
    if events.is_empty() || !other_listeners(conn, target)? {
        return Ok(());
    }
    let payloads = NotifyPayload::pack(&target.instance, events);
    if payloads.is_empty() {
        return Ok(());
    }
    // One round trip for all payloads; `WITH ORDINALITY` keeps them in order.
    diesel::sql_query(
        "SELECT pg_notify($1, p.payload) FROM unnest($2::text[]) WITH ORDINALITY AS p(payload, n) ORDER BY p.n",
    )
    .bind::<Text, _>(&target.channel)
    .bind::<Array<Text>, _>(payloads)
    .execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct Listening {
    #[diesel(sql_type = Bool)]
    others: bool,
}

/// Whether a listening session of another instance of this channel exists.
fn other_listeners(conn: &mut Conn, target: &NotifyTarget) -> Result<bool> {
    let own = target.listener_pid.load(Ordering::Acquire);
    let found: Listening = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                        WHERE application_name = $1 AND pid <> $2) AS others",
    )
    .bind::<Text, _>(listener_app_name(&target.channel))
    .bind::<Integer, _>(own)
    .get_result(conn)?;
    Ok(found.others)
}

/// Prefix of the `application_name` of listening sessions; the channel follows.
pub(crate) const LISTENER_APP_PREFIX: &str = "sync-listener-";

/// The `application_name` of the listening sessions of `channel` (every instance of one
/// schema uses the same; Postgres keeps 63 bytes of it).
fn listener_app_name(channel: &str) -> String {
    let mut app = format!("{LISTENER_APP_PREFIX}{channel}");
    app.truncate(63);
    app
}

#[derive(QueryableByName)]
struct BackendPid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// Opens the dedicated listening connection and records its backend pid in `target`.
pub(crate) fn listen(url: &str, target: &NotifyTarget) -> Result<PgConnection> {
    let mut conn = PgConnection::establish(url).map_err(Error::Connect)?;
    // Named so that writers (and operators) can find listening sessions in pg_stat_activity.
    conn.batch_execute(&format!(
        "SET application_name = '{}'; LISTEN \"{}\"",
        listener_app_name(&target.channel),
        target.channel
    ))?;
    let own: BackendPid =
        diesel::sql_query("SELECT pg_backend_pid() AS pid").get_result(&mut conn)?;
    target.listener_pid.store(own.pid, Ordering::Release);
    Ok(conn)
}

/// Waits for the writers that hold or queue for the version lock and returns the version
/// after them. Called by a listening session after its `LISTEN`: every writer that commits
/// later checked for listeners after this session was visible, so it sends its NOTIFY.
pub(crate) fn fence_writers(conn: &mut PgConnection) -> Result<i64> {
    conn.transaction(|conn| {
        Ok(seq::table
            .filter(seq::id.eq(1))
            .select(seq::head_version)
            .for_update()
            .first(conn)?)
    })
}

/// The current value of the version sequence.
pub(crate) fn current_version(conn: &mut PgConnection) -> Result<i64> {
    Ok(seq::table
        .filter(seq::id.eq(1))
        .select(seq::head_version)
        .first(conn)?)
}

/// Records of every owner changed after `since`, in version order (catch-up after the
/// listening connection was lost).
pub(crate) fn changed_since(
    conn: &mut PgConnection,
    since: i64,
    limit: i64,
) -> Result<Vec<RecordRow>> {
    Ok(rec::table
        .filter(rec::version.gt(since))
        .order(rec::version.asc())
        .limit(limit)
        .select(RecordRow::as_select())
        .load(conn)?)
}

/// The record an oversized event refers to, if it is still at that version.
pub(crate) fn resolve_ref(conn: &mut PgConnection, r: &EventRef) -> Result<Option<RecordRow>> {
    Ok(get(conn, &r.owner, &r.collection, &r.id)?.filter(|row| row.version == r.version))
}
