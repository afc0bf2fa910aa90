//! Sync metadata and checksums: `GET /sync/metadata`, `GET /sync/digest/{collection}`, and the
//! record hash both sides sum.
//!
//! # The collection checksum
//!
//! For each user and collection, the checksum is the sum, modulo 2^64, of
//! [`record_hash`]`(id, version, deleted)` over every record of the collection, tombstones
//! included. The sum does not depend on the order of the records, so it can be kept up to date
//! write by write: a write of a record adds the hash of its new `(id, version, deleted)` and
//! subtracts the hash of the old one. Two stores that know the same versions of the same records
//! have the same checksum; any record missing, extra, or at another version or deletion state
//! changes it (but for a chance of 2^-64).
//!
//! `record_hash` is the first 8 bytes, read as a big-endian unsigned integer, of the SHA-256 of
//! the UTF-8 bytes of `id`, a zero byte, the version in decimal ASCII, a zero byte, and `1` for
//! a tombstone or `0` for a live record. Example: `record_hash("t1", 3, false)` is the first 8
//! bytes of `SHA-256("t1\0" "3\0" "0")`. On the wire the checksum is 16 lowercase hex digits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The header naming the device a request comes from (also on the WebSocket upgrade): letters,
/// digits, `-`, `_` and `.`, at most [`MAX_DEVICE_ID_LEN`] of them.
pub const DEVICE_ID_HEADER: &str = "x-sync-device";

/// Most collections a metadata answer lists (by name); past it the answer says it is cut.
pub const MAX_COLLECTIONS_LISTED: usize = 1_000;

/// Longest device id a server accepts.
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// True for a device id a server records.
pub fn is_valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DEVICE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The hash of one record's `(id, version, deleted)`; see the module docs.
pub fn record_hash(id: &str, version: i64, deleted: bool) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(id.as_bytes());
    hasher.update([0u8]);
    hasher.update(version.to_string().as_bytes());
    hasher.update([0u8]);
    hasher.update(if deleted { b"1" } else { b"0" });
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A collection checksum kept as two sums that cannot overflow a signed 64-bit database
/// column: the low and the high 32 bits of each record hash, added up separately (each sum
/// stays below 2^63 for fewer than 2^31 records). [`Checksum::value`] folds them into the sum
/// modulo 2^64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checksum {
    /// Sum of the low 32 bits of the hashes.
    pub lo: i64,
    /// Sum of the high 32 bits of the hashes.
    pub hi: i64,
}

impl Checksum {
    /// The change of adding a record with this hash (`sign` 1) or removing it (`sign` -1).
    pub fn of_hash(hash: u64, sign: i64) -> Checksum {
        let lo = i64::from(u32::try_from(hash & 0xffff_ffff).unwrap_or(u32::MAX));
        let hi = i64::from(u32::try_from(hash >> 32).unwrap_or(u32::MAX));
        Checksum {
            lo: lo.wrapping_mul(sign),
            hi: hi.wrapping_mul(sign),
        }
    }

    /// The change of adding (`sign` 1) or removing (`sign` -1) the record `(id, version, deleted)`.
    pub fn of_record(id: &str, version: i64, deleted: bool, sign: i64) -> Checksum {
        Checksum::of_hash(record_hash(id, version, deleted), sign)
    }

    /// Both sums added.
    #[must_use]
    pub fn plus(self, other: Checksum) -> Checksum {
        Checksum {
            lo: self.lo.wrapping_add(other.lo),
            hi: self.hi.wrapping_add(other.hi),
        }
    }

    /// The checksum: the sum of the hashes modulo 2^64.
    pub fn value(self) -> u64 {
        // Two's-complement reinterpretation is exactly "modulo 2^64".
        let lo = u64::from_ne_bytes(self.lo.to_ne_bytes());
        let hi = u64::from_ne_bytes(self.hi.to_ne_bytes());
        lo.wrapping_add(hi.wrapping_shl(32))
    }

    /// [`value`](Self::value) as 16 lowercase hex digits, as on the wire.
    pub fn hex(self) -> String {
        format!("{:016x}", self.value())
    }
}

/// One device of a user, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// The device id (the [`DEVICE_ID_HEADER`] it sends).
    pub id: String,
    /// When the server first saw it (RFC 3339).
    pub first_seen: String,
    /// When it last sent a request (RFC 3339; recorded at most every few seconds).
    pub last_seen: String,
    /// When it last finished a sync: its last pull page with nothing more to pull, or its
    /// last metadata check (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_sync: Option<String>,
}

/// One collection of a user, as the server holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionSummary {
    /// Live records.
    pub records: u64,
    /// Records with tombstones: what the checksum covers.
    pub total: u64,
    /// The collection checksum, 16 hex digits (see the module docs).
    pub checksum: String,
}

/// The answer of `GET /sync/metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMetadataResponse {
    /// The authenticated user.
    pub user: String,
    /// Every device of the user, most recently seen first.
    pub devices: Vec<DeviceInfo>,
    /// The collections the user has records in, by name: all of them, or the first
    /// [`MAX_COLLECTIONS_LISTED`] when `collections_truncated`.
    pub collections: BTreeMap<String, CollectionSummary>,
    /// More collections exist than were listed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub collections_truncated: bool,
    /// The latest `last_successful_sync` of any device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_sync: Option<String>,
}

/// One record in a digest listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// Record id.
    pub id: String,
    /// Its version.
    pub version: i64,
    /// A tombstone.
    pub deleted: bool,
}

/// The answer of `GET /sync/digest/{collection}?after=<id>&limit=<n>`: records in id order
/// after `after`, read from the records themselves (not from the maintained checksum), for a
/// client that compares its copy record by record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestPage {
    /// Records, by id.
    pub items: Vec<DigestEntry>,
    /// The id to ask after for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_the_sum_of_the_hashes_modulo_2_64_in_any_order() {
        let records = [("a", 1, false), ("b", 7, true), ("c", 3, false)];
        let expected = records.iter().fold(0u64, |acc, (id, v, d)| {
            acc.wrapping_add(record_hash(id, *v, *d))
        });
        let forward = records.iter().fold(Checksum::default(), |acc, (id, v, d)| {
            acc.plus(Checksum::of_record(id, *v, *d, 1))
        });
        let backward = records
            .iter()
            .rev()
            .fold(Checksum::default(), |acc, (id, v, d)| {
                acc.plus(Checksum::of_record(id, *v, *d, 1))
            });
        assert_eq!(forward.value(), expected);
        assert_eq!(backward, forward);
        // Removing a record takes its hash out again.
        let without_b = forward.plus(Checksum::of_record("b", 7, true, -1));
        let direct =
            Checksum::of_record("a", 1, false, 1).plus(Checksum::of_record("c", 3, false, 1));
        assert_eq!(without_b, direct);
        assert_eq!(Checksum::default().hex(), "0000000000000000");
    }

    #[test]
    fn the_record_hash_is_the_documented_sha_256_prefix() {
        // SHA-256("t1\0" "3\0" "0"), first 8 bytes, computed independently of `record_hash`.
        let digest = Sha256::digest(b"t1\x003\x000");
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
        assert_eq!(record_hash("t1", 3, false), expected);
        assert_ne!(record_hash("t1", 3, false), record_hash("t1", 3, true));
        assert_ne!(record_hash("t1", 3, false), record_hash("t1", 4, false));
    }

    #[test]
    fn device_ids_are_short_and_plain() {
        assert!(is_valid_device_id("dev-1.a_B"));
        assert!(!is_valid_device_id(""));
        assert!(!is_valid_device_id("a b"));
        assert!(!is_valid_device_id(&"x".repeat(MAX_DEVICE_ID_LEN + 1)));
    }
}
