//! Sync metadata: the per-collection record counts and checksums (`sync_usage`, kept by every
//! write, see `planner.rs`), the devices of each user (`sync_devices`), and the digest listing
//! that reads the records themselves. The queries read the same on both backends, but Diesel's
//! query types are per backend, so the macro below writes them once for each connection type.

use crate::protocol::{Checksum, CollectionSummary};

/// Devices kept per user: a new device past this replaces the one seen longest ago, so a
/// client that makes up device ids cannot grow the table without bound.
pub(crate) const MAX_DEVICES_PER_USER: i64 = 64;

/// One `sync_usage` row as the metadata answer shows it.
pub(crate) fn summary(records: i64, total: i64, checksum: Checksum) -> CollectionSummary {
    CollectionSummary {
        records: u64::try_from(records).unwrap_or(0),
        total: u64::try_from(total).unwrap_or(0),
        checksum: checksum.hex(),
    }
}

macro_rules! meta_queries {
    ($module:ident, $conn:ty) => {
        pub(crate) mod $module {
            use diesel::prelude::*;

            use super::{summary, MAX_DEVICES_PER_USER};
            use crate::error::Result;
            use crate::protocol::{Checksum, CollectionSummary, DeviceInfo, DigestEntry};
            use crate::store::schema::{
                sync_devices as dev, sync_records as rec, sync_usage as usage,
            };

            type Conn = $conn;

            /// Counts the records and checksums of the `sync_usage` rows that have none yet
            /// (rows from before the checksum columns). Run when the database is opened, before
            /// any write. Returns the rows counted.
            pub(crate) fn count_checksums(conn: &mut Conn) -> Result<usize> {
                conn.transaction(|conn| {
                    let pending: Vec<(String, String)> = usage::table
                        .filter(
                            usage::checksum_lo
                                .is_null()
                                .or(usage::checksum_hi.is_null())
                                .or(usage::total.is_null()),
                        )
                        .select((usage::owner, usage::collection))
                        .load(conn)?;
                    for (owner, collection) in &pending {
                        let mut checksum = Checksum::default();
                        let mut total = 0i64;
                        let rows: Vec<(String, i64, bool)> = rec::table
                            .filter(rec::owner.eq(owner))
                            .filter(rec::collection.eq(collection))
                            .select((rec::id, rec::version, rec::deleted))
                            .load(conn)?;
                        for (id, version, deleted) in rows {
                            checksum = checksum.plus(Checksum::of_record(&id, version, deleted, 1));
                            total = total.saturating_add(1);
                        }
                        diesel::update(
                            usage::table
                                .filter(usage::owner.eq(owner))
                                .filter(usage::collection.eq(collection)),
                        )
                        .set((
                            usage::total.eq(Some(total)),
                            usage::checksum_lo.eq(Some(checksum.lo)),
                            usage::checksum_hi.eq(Some(checksum.hi)),
                        ))
                        .execute(conn)?;
                    }
                    Ok(pending.len())
                })
            }

            /// `owner`'s collections with their counts and checksums, by name, at most
            /// `MAX_COLLECTIONS_LISTED + 1` (one more says the list was cut).
            pub(crate) fn collections(
                conn: &mut Conn,
                owner: &str,
            ) -> Result<Vec<(String, CollectionSummary)>> {
                let rows: Vec<(String, i64, Option<i64>, Option<i64>, Option<i64>)> = usage::table
                    .filter(usage::owner.eq(owner))
                    .select((
                        usage::collection,
                        usage::records,
                        usage::total,
                        usage::checksum_lo,
                        usage::checksum_hi,
                    ))
                    .order(usage::collection)
                    .limit(
                        i64::try_from(crate::protocol::MAX_COLLECTIONS_LISTED)
                            .unwrap_or(i64::MAX)
                            .saturating_add(1),
                    )
                    .load(conn)?;
                Ok(rows
                    .into_iter()
                    .map(|(collection, records, total, lo, hi)| {
                        let checksum = Checksum {
                            lo: lo.unwrap_or(0),
                            hi: hi.unwrap_or(0),
                        };
                        (collection, summary(records, total.unwrap_or(0), checksum))
                    })
                    .collect())
            }

            /// Records that `device` of `owner` sent a request at `now` (and finished a sync,
            /// if `synced`). A new device past [`MAX_DEVICES_PER_USER`] replaces the one seen
            /// longest ago.
            pub(crate) fn touch_device(
                conn: &mut Conn,
                owner: &str,
                device: &str,
                now: &str,
                synced: bool,
            ) -> Result<()> {
                conn.transaction(|conn| {
                    let known = dev::table
                        .filter(dev::owner.eq(owner))
                        .filter(dev::device_id.eq(device))
                        .count()
                        .get_result::<i64>(conn)?
                        > 0;
                    if known {
                        let target = dev::table
                            .filter(dev::owner.eq(owner))
                            .filter(dev::device_id.eq(device));
                        if synced {
                            diesel::update(target)
                                .set((
                                    dev::last_seen.eq(now),
                                    dev::last_successful_sync.eq(Some(now)),
                                ))
                                .execute(conn)?;
                        } else {
                            diesel::update(target)
                                .set(dev::last_seen.eq(now))
                                .execute(conn)?;
                        }
                        return Ok(());
                    }
                    let count: i64 = dev::table
                        .filter(dev::owner.eq(owner))
                        .count()
                        .get_result(conn)?;
                    if count >= MAX_DEVICES_PER_USER {
                        let oldest: Vec<String> = dev::table
                            .filter(dev::owner.eq(owner))
                            .order((dev::last_seen.asc(), dev::device_id.asc()))
                            .select(dev::device_id)
                            .limit(count - MAX_DEVICES_PER_USER + 1)
                            .load(conn)?;
                        diesel::delete(
                            dev::table
                                .filter(dev::owner.eq(owner))
                                .filter(dev::device_id.eq_any(oldest)),
                        )
                        .execute(conn)?;
                    }
                    diesel::insert_into(dev::table)
                        .values((
                            dev::owner.eq(owner),
                            dev::device_id.eq(device),
                            dev::first_seen.eq(now),
                            dev::last_seen.eq(now),
                            dev::last_successful_sync.eq(synced.then_some(now)),
                        ))
                        .on_conflict_do_nothing()
                        .execute(conn)?;
                    Ok(())
                })
            }

            /// `owner`'s devices, most recently seen first.
            pub(crate) fn devices(conn: &mut Conn, owner: &str) -> Result<Vec<DeviceInfo>> {
                let rows: Vec<(String, String, String, Option<String>)> = dev::table
                    .filter(dev::owner.eq(owner))
                    .order((dev::last_seen.desc(), dev::device_id.asc()))
                    .select((
                        dev::device_id,
                        dev::first_seen,
                        dev::last_seen,
                        dev::last_successful_sync,
                    ))
                    .load(conn)?;
                Ok(rows
                    .into_iter()
                    .map(
                        |(id, first_seen, last_seen, last_successful_sync)| DeviceInfo {
                            id,
                            first_seen,
                            last_seen,
                            last_successful_sync,
                        },
                    )
                    .collect())
            }

            /// Forgets `device` of `owner`; true if it was known.
            pub(crate) fn forget_device(
                conn: &mut Conn,
                owner: &str,
                device: &str,
            ) -> Result<bool> {
                let n = diesel::delete(
                    dev::table
                        .filter(dev::owner.eq(owner))
                        .filter(dev::device_id.eq(device)),
                )
                .execute(conn)?;
                Ok(n > 0)
            }

            /// Up to `limit` of `owner`'s records of `collection` with an id after `after`, in
            /// id order, as (id, version, deleted).
            pub(crate) fn digest_page(
                conn: &mut Conn,
                owner: &str,
                collection: &str,
                after: &str,
                limit: i64,
            ) -> Result<Vec<DigestEntry>> {
                let rows: Vec<(String, i64, bool)> = rec::table
                    .filter(rec::owner.eq(owner))
                    .filter(rec::collection.eq(collection))
                    .filter(rec::id.gt(after))
                    .order(rec::id.asc())
                    .limit(limit)
                    .select((rec::id, rec::version, rec::deleted))
                    .load(conn)?;
                Ok(rows
                    .into_iter()
                    .map(|(id, version, deleted)| DigestEntry {
                        id,
                        version,
                        deleted,
                    })
                    .collect())
            }
        }
    };
}

meta_queries!(sqlite, diesel::SqliteConnection);
meta_queries!(postgres, diesel::PgConnection);
