//! Encrypted SQLite files (feature `encryption`): keys, opening with a key and
//! telling apart why a file does not open, and the crash-safe re-write behind
//! `enable_encryption`, `disable_encryption` and `rekey`.
//!
//! A re-write never changes the store's file in place. The live database is
//! copied with `sqlcipher_export` into `<file>.rewrite` under the new key,
//! that file is fsynced, renamed over the store (atomic), and the directory is
//! fsynced. A crash before the rename leaves the old file whole plus a
//! leftover that the next open deletes; a crash after it leaves the new file
//! whole. Before the copy the old connection leaves WAL mode (a checkpoint
//! that folds the WAL into the file and deletes it), so no WAL of the old file
//! is ever found next to the new one, where SQLite would replay it.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use diesel::connection::SimpleConnection;
use diesel::SqliteConnection;
use sync_core::store::StoreError;
use zeroize::Zeroize;

use super::{classify_sqlite, connect_sqlite, Conn, DieselStore, SqliteFile, SqliteOptions};
use crate::error::{Error, Result};
use crate::sql::{Db, Sql};

/// The key of an encrypted store: a passphrase (stretched by SQLCipher with
/// PBKDF2-HMAC-SHA512, 256,000 iterations, and a per-file salt) or a raw
/// 256-bit key (used as is; no stretching, so opening is fast).
///
/// Its `Debug` form never shows the key, and its memory is overwritten when
/// it is dropped.
///
/// ```
/// use sync_diesel::StoreKey;
/// let from_user = StoreKey::passphrase("correct horse battery staple");
/// let from_keychain = StoreKey::raw([7u8; 32]);
/// assert_eq!(format!("{from_keychain:?}"), "StoreKey(raw 256-bit key)");
/// # let _ = from_user;
/// ```
#[derive(Clone)]
pub struct StoreKey(Material);

#[derive(Clone)]
enum Material {
    Passphrase(String),
    Raw([u8; 32]),
}

impl StoreKey {
    /// A passphrase. It must not be empty (SQLCipher takes an empty key as
    /// "no encryption").
    pub fn passphrase(passphrase: impl Into<String>) -> StoreKey {
        StoreKey(Material::Passphrase(passphrase.into()))
    }

    /// A raw 256-bit key, e.g. from the platform keychain.
    pub fn raw(key: [u8; 32]) -> StoreKey {
        StoreKey(Material::Raw(key))
    }

    /// A raw key from a slice, which must be exactly 32 bytes long.
    pub fn raw_from_slice(key: &[u8]) -> Result<StoreKey> {
        let key: [u8; 32] = key.try_into().map_err(|_| Error::Encryption {
            path: String::new(),
            reason: format!("a raw store key is 32 bytes, this one has {}", key.len()),
        })?;
        Ok(StoreKey::raw(key))
    }

    pub(super) fn check(&self, path: &str) -> Result<()> {
        match &self.0 {
            Material::Passphrase(p) if p.is_empty() => Err(Error::Encryption {
                path: path.to_owned(),
                reason: "the passphrase is empty; SQLCipher would leave the file unencrypted"
                    .into(),
            }),
            Material::Passphrase(p) if p.contains('\0') => Err(Error::Encryption {
                path: path.to_owned(),
                reason: "the passphrase contains a NUL character".into(),
            }),
            _ => Ok(()),
        }
    }

    /// The key as an SQL string literal for `PRAGMA key` and `ATTACH ... KEY`:
    /// the passphrase quoted, or SQLCipher's `x'<hex>'` raw-key form quoted.
    fn literal(&self) -> Secret {
        let text = match &self.0 {
            Material::Passphrase(p) => p.replace('\'', "''"),
            Material::Raw(bytes) => {
                let mut hex = String::with_capacity(70);
                hex.push_str("x''");
                for b in bytes {
                    hex.push_str(&format!("{b:02X}"));
                }
                hex.push_str("''");
                hex
            }
        };
        Secret(format!("'{text}'"))
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Material::Passphrase(_) => f.write_str("StoreKey(passphrase)"),
            Material::Raw(_) => f.write_str("StoreKey(raw 256-bit key)"),
        }
    }
}

impl Drop for Material {
    fn drop(&mut self) {
        match self {
            Material::Passphrase(p) => p.zeroize(),
            Material::Raw(bytes) => bytes.zeroize(),
        }
    }
}

/// SQL text holding key material, wiped when dropped.
struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The SQLite magic at the start of every plaintext database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The file a re-write builds before renaming it over the store.
fn rewrite_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".rewrite");
    PathBuf::from(name)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Deletes what a re-write killed before its rename left behind.
pub(super) fn remove_rewrite_leftovers(path: &Path, shown: &str) -> Result<()> {
    let tmp = rewrite_path(path);
    for leftover in [
        tmp.clone(),
        with_suffix(&tmp, "-journal"),
        with_suffix(&tmp, "-wal"),
        with_suffix(&tmp, "-shm"),
    ] {
        match std::fs::remove_file(&leftover) {
            Ok(()) => tracing::warn!(
                file = %leftover.display(),
                "removed the leftover of an interrupted re-write; the store is the old file"
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Encryption {
                    path: shown.to_owned(),
                    reason: format!(
                        "cannot remove the leftover {} of an interrupted re-write: {source}",
                        leftover.display()
                    ),
                })
            }
        }
    }
    Ok(())
}

fn is_not_a_database(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("not a database") || lower.contains("file is encrypted")
}

/// What the first bytes and the size of the file say about it.
enum Looks {
    Missing,
    Plaintext,
    /// Not a plaintext SQLite file, and a whole number of pages: an encrypted store.
    Encrypted,
    /// Not a plaintext SQLite file and not whole pages: cut short, or not a database.
    Ragged(u64),
}

fn looks(path: &Path) -> Looks {
    use std::io::Read;
    let Ok(mut file) = File::open(path) else {
        return Looks::Missing;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        return Looks::Missing;
    }
    let mut head = [0u8; 16];
    if file.read_exact(&mut head).is_ok() && &head == SQLITE_MAGIC {
        return Looks::Plaintext;
    }
    // SQLCipher's pages are 4096 bytes by default; any SQLite page size is a multiple of 512.
    if len >= 512 && len % 512 == 0 {
        Looks::Encrypted
    } else {
        Looks::Ragged(len)
    }
}

/// Sets the key (if any) as the first statement on a fresh connection and
/// checks that the file opens with it: every wrong combination becomes its own
/// error naming the file, before anything is written.
pub(super) fn unlock(
    conn: &mut SqliteConnection,
    path: &Path,
    key: Option<&StoreKey>,
) -> Result<()> {
    let shown = path.display().to_string();
    // SQLCipher logs every failed page decryption to stderr; the errors below say it.
    let _ = conn.batch_execute("PRAGMA cipher_log_level = NONE;");
    if let Some(key) = key {
        key.check(&shown)?;
        let pragma = Secret(format!("PRAGMA key = {};", key.literal().0));
        conn.batch_execute(&pragma.0)
            .map_err(|e| Error::Store(classify_sqlite(&shown, e.to_string())))?;
    }
    if let Err(e) = conn.batch_execute("SELECT COUNT(*) FROM sqlite_master;") {
        let message = e.to_string();
        let lower = message.to_ascii_lowercase();
        if key.is_some() && (lower.contains("malformed") || lower.contains("corrupt")) {
            return Err(Error::Damaged {
                path: shown,
                reason: message,
            });
        }
        if !is_not_a_database(&message) {
            return Err(Error::Store(classify_sqlite(&shown, message)));
        }
        return Err(match (key.is_some(), looks(path)) {
            (true, Looks::Plaintext) => Error::NotEncrypted { path: shown },
            (true, Looks::Encrypted) => Error::WrongKey { path: shown },
            (true, Looks::Ragged(len)) => Error::Damaged {
                path: shown,
                reason: format!(
                    "it is {len} bytes long, not a whole number of pages: it was cut short, \
                     or it is not a database"
                ),
            },
            (false, Looks::Encrypted) => Error::KeyRequired { path: shown },
            _ => Error::Store(StoreError::NotADatabase { path: shown }),
        });
    }
    if key.is_some() {
        verify_pages(conn, &shown)?;
        // Temporary tables and indexes stay in memory, never in a plaintext temp file.
        conn.batch_execute("PRAGMA temp_store = MEMORY;")
            .map_err(|e| Error::Store(classify_sqlite(&shown, e.to_string())))?;
    }
    Ok(())
}

/// Checks every page of an encrypted file (its HMAC) and the b-trees, so a
/// file altered or cut short outside the store is refused at open instead of
/// failing on some later read.
fn verify_pages(conn: &mut SqliteConnection, shown: &str) -> Result<()> {
    let damaged = |reason: String| Error::Damaged {
        path: shown.to_owned(),
        reason,
    };
    let problems = conn
        .load(Sql::new("PRAGMA cipher_integrity_check").uncached())
        .map_err(|e| damaged(e.to_string()))?;
    if let Some(first) = problems
        .into_iter()
        .filter_map(|r| r.into_iter().next().and_then(|v| v.into_text()))
        .next()
    {
        return Err(damaged(first));
    }
    let check = conn
        .load(Sql::new("PRAGMA quick_check").uncached())
        .map_err(|e| damaged(e.to_string()))?;
    let lines: Vec<String> = check
        .into_iter()
        .filter_map(|r| r.into_iter().next().and_then(|v| v.into_text()))
        .collect();
    if lines != ["ok"] {
        return Err(damaged(lines.join("; ")));
    }
    Ok(())
}

/// Where a re-write may be stopped by a test, to prove the crash-safety
/// claim at each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Copied,
    Synced,
    Renamed,
}

impl DieselStore {
    fn sqlite_file(&self, what: &str) -> Result<&SqliteFile> {
        self.sqlite.as_ref().ok_or_else(|| Error::Encryption {
            path: self.location.clone(),
            reason: format!(
                "{what} needs a SQLite store; this one is {:?}",
                self.backend()
            ),
        })
    }

    /// Whether the store's file is encrypted (always `false` on Postgres).
    pub fn is_encryption_enabled(&self) -> bool {
        self.sqlite
            .as_ref()
            .is_some_and(|f| f.encrypted.load(Ordering::SeqCst))
    }

    /// Encrypts a plaintext store with `key`: the file is re-written (to a
    /// new file, fsynced, renamed over the old one), so a crash at any moment
    /// leaves either the whole old file or the whole new one. Every row, op,
    /// cursor and bookkeeping table is kept. The store stays usable; other
    /// processes must not have the file open meanwhile.
    pub fn enable_encryption(&self, key: StoreKey) -> Result<()> {
        let file = self.sqlite_file("enable_encryption")?;
        if file.encrypted.load(Ordering::SeqCst) {
            return Err(Error::Encryption {
                path: self.location.clone(),
                reason: "the store is already encrypted; use rekey to change its key".into(),
            });
        }
        self.rewrite(file, Some(key))
    }

    /// Decrypts an encrypted store (re-written like [`enable_encryption`](Self::enable_encryption)).
    pub fn disable_encryption(&self) -> Result<()> {
        let file = self.sqlite_file("disable_encryption")?;
        if !file.encrypted.load(Ordering::SeqCst) {
            return Err(Error::Encryption {
                path: self.location.clone(),
                reason: "the store is not encrypted".into(),
            });
        }
        self.rewrite(file, None)
    }

    /// Re-encrypts an encrypted store under `key` (re-written like
    /// [`enable_encryption`](Self::enable_encryption), so every page gets the new key).
    pub fn rekey(&self, key: StoreKey) -> Result<()> {
        let file = self.sqlite_file("rekey")?;
        if !file.encrypted.load(Ordering::SeqCst) {
            return Err(Error::Encryption {
                path: self.location.clone(),
                reason: "the store is not encrypted; use enable_encryption".into(),
            });
        }
        self.rewrite(file, Some(key))
    }

    fn rewrite(&self, file: &SqliteFile, key: Option<StoreKey>) -> Result<()> {
        let stop_at = std::env::var("SYNC_DIESEL_REWRITE_STOP_AT")
            .ok()
            .and_then(|s| match s.as_str() {
                "copied" => Some(Step::Copied),
                "synced" => Some(Step::Synced),
                "renamed" => Some(Step::Renamed),
                _ => None,
            });
        let shown = self.location.clone();
        if let Some(key) = &key {
            key.check(&shown)?;
        }
        // Without the `postgres` feature SQLite is the only kind of connection.
        let mutex = match &self.conn {
            Conn::Sqlite(mutex) => mutex,
            #[cfg(feature = "postgres")]
            Conn::Postgres(_) => {
                return Err(Error::Encryption {
                    path: shown,
                    reason: "a re-write needs a SQLite store".into(),
                })
            }
        };
        let mut conn = mutex.lock().unwrap_or_else(PoisonError::into_inner);
        let path = file.options.path.clone();
        let tmp = rewrite_path(&path);
        let fail = |step: &str, e: &dyn fmt::Display| Error::Encryption {
            path: shown.clone(),
            reason: format!(
                "re-writing the store failed while {step}: {e}; the store is unchanged"
            ),
        };
        remove_rewrite_leftovers(&path, &shown)?;
        // The checkpoint thread's connection would keep the file in WAL mode: closed for the
        // re-write, opened again on whichever file is the store afterwards.
        struct Resume<'a>(Option<&'a super::checkpoint::Checkpointer>, SqliteOptions);
        impl Drop for Resume<'_> {
            fn drop(&mut self) {
                if let Some(checkpointer) = self.0 {
                    checkpointer.resume(&self.1);
                }
            }
        }
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.pause();
        }
        let mut resume = Resume(self.checkpointer.as_ref(), file.options.clone());
        // Fold the WAL into the file and delete it, so no WAL of the old file
        // can sit beside the new one after the rename.
        conn.load(Sql::new("PRAGMA journal_mode = DELETE").uncached())
            .map_err(|e| fail("leaving WAL mode", &e))?;
        let copied = copy_to(&mut conn, &tmp, key.as_ref()).map_err(|e| fail("copying", &e));
        let synced = copied.and_then(|()| {
            if stop_at == Some(Step::Copied) {
                std::process::abort();
            }
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| fail("syncing the new file", &e))
        });
        if let Err(err) = synced {
            let _ = std::fs::remove_file(&tmp);
            let _ = conn.load(Sql::new("PRAGMA journal_mode = WAL").uncached());
            return Err(err);
        }
        if stop_at == Some(Step::Synced) {
            std::process::abort();
        }
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            let _ = conn.load(Sql::new("PRAGMA journal_mode = WAL").uncached());
            return Err(fail("renaming the new file over the store", &e));
        }
        if stop_at == Some(Step::Renamed) {
            std::process::abort();
        }
        // From here the new file is the store.
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
            tracing::warn!(error = %e, dir = %dir.display(), "fsync of the directory after a re-write failed");
        }
        let options = SqliteOptions {
            key,
            ..file.options.clone()
        };
        let encrypted = options.key.is_some();
        let fresh = connect_sqlite(&options, false).map_err(|e| Error::Encryption {
            path: shown.clone(),
            reason: format!("the store was re-written but does not open again: {e}"),
        })?;
        // The old connection reads the replaced file (unlinked); closing it
        // touches no file of the new store (it is out of WAL mode).
        drop(std::mem::replace(&mut *conn, fresh));
        resume.1 = options.clone();
        file.encrypted.store(encrypted, Ordering::SeqCst);
        Ok(())
    }
}

/// Copies the whole database (schema, rows, sequences, `user_version`) into
/// a new file at `tmp`, encrypted with `key` or in plaintext.
fn copy_to(
    conn: &mut SqliteConnection,
    tmp: &Path,
    key: Option<&StoreKey>,
) -> std::result::Result<(), String> {
    let name = tmp
        .to_str()
        .ok_or_else(|| "the path is not valid UTF-8".to_owned())?
        .replace('\'', "''");
    let key_sql = match key {
        Some(k) => k.literal(),
        None => Secret("''".into()),
    };
    let attach = Secret(format!(
        "ATTACH DATABASE '{name}' AS rewrite KEY {};",
        key_sql.0
    ));
    conn.batch_execute(&attach.0).map_err(|e| e.to_string())?;
    let result = (|| {
        let version = conn
            .load(Sql::new("PRAGMA main.user_version").uncached())
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        conn.load(Sql::new("SELECT sqlcipher_export('rewrite')").uncached())
            .map_err(|e| e.to_string())?;
        conn.batch_execute(&format!("PRAGMA rewrite.user_version = {version};"))
            .map_err(|e| e.to_string())
    })();
    let detached = conn
        .batch_execute("DETACH DATABASE rewrite;")
        .map_err(|e| e.to_string());
    result.and(detached)
}
