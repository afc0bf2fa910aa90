//! [`SqliteAccountStores`]: one SQLite file per user in a directory, for `SyncAccounts`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use sync_core::store::{LocalStore, StoreError};
use sync_core::AccountStores;

#[cfg(feature = "encryption")]
use crate::StoreKey;
use crate::{DieselStore, Error};

#[cfg(feature = "encryption")]
type KeyFor = dyn Fn(&str) -> Option<StoreKey> + Send + Sync;

/// Each user's store is the SQLite file `user-<hash>.sqlite3` in one directory, where `<hash>`
/// is the first 128 bits of the SHA-256 of the user id in hex: any user id maps to a safe file
/// name, and no two users share a file (the store also records its owner and refuses anyone
/// else). Wiping a user deletes the file with its `-wal`, `-shm` and `-journal` companions.
#[derive(Clone)]
pub struct SqliteAccountStores {
    dir: PathBuf,
    #[cfg(feature = "encryption")]
    key: Option<Arc<KeyFor>>,
}

impl fmt::Debug for SqliteAccountStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteAccountStores")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SqliteAccountStores {
    /// Stores in `dir` (created on first use).
    pub fn new(dir: impl AsRef<Path>) -> SqliteAccountStores {
        SqliteAccountStores {
            dir: dir.as_ref().to_path_buf(),
            #[cfg(feature = "encryption")]
            key: None,
        }
    }

    /// Encrypts each user's file with the key `key_for(user)` gives (SQLCipher; `None`: that
    /// user's file is plain).
    #[cfg(feature = "encryption")]
    #[must_use]
    pub fn with_keys(
        mut self,
        key_for: impl Fn(&str) -> Option<StoreKey> + Send + Sync + 'static,
    ) -> SqliteAccountStores {
        self.key = Some(Arc::new(key_for));
        self
    }

    /// The file holding `user`'s store.
    pub fn path_for(&self, user: &str) -> PathBuf {
        let digest = Sha256::digest(user.as_bytes());
        let mut name = String::with_capacity(5 + 32 + 8);
        name.push_str("user-");
        for byte in digest.iter().take(16) {
            name.push_str(&format!("{byte:02x}"));
        }
        name.push_str(".sqlite3");
        self.dir.join(name)
    }

    fn companions(path: &Path) -> [PathBuf; 4] {
        let with = |suffix: &str| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        [
            path.to_path_buf(),
            with("-wal"),
            with("-shm"),
            with("-journal"),
        ]
    }
}

fn unavailable(path: &Path, reason: impl fmt::Display) -> StoreError {
    StoreError::Unavailable {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

async fn blocking_io<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

#[async_trait::async_trait]
impl AccountStores for SqliteAccountStores {
    async fn open(&self, user: &str) -> Result<Arc<dyn LocalStore>, StoreError> {
        let path = self.path_for(user);
        let dir = self.dir.clone();
        blocking_io(move || std::fs::create_dir_all(&dir))
            .await
            .map_err(|e| unavailable(&self.dir, e))?;
        #[allow(unused_mut)]
        let mut options = DieselStore::sqlite(&path);
        #[cfg(feature = "encryption")]
        if let Some(key) = self.key.as_ref().and_then(|key_for| key_for(user)) {
            options = options.key(key);
        }
        match options.open().await {
            Ok(store) => Ok(Arc::new(store)),
            Err(Error::Store(err)) => Err(err),
            Err(other) => Err(unavailable(&path, other)),
        }
    }

    async fn wipe(&self, user: &str) -> Result<(), StoreError> {
        let files = Self::companions(&self.path_for(user));
        tokio::task::spawn_blocking(move || {
            for file in files {
                match std::fs::remove_file(&file) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(unavailable(&file, err)),
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| unavailable(&self.dir, e))?
    }

    async fn exists(&self, user: &str) -> Result<bool, StoreError> {
        let path = self.path_for(user);
        let probe = path.clone();
        blocking_io(move || probe.try_exists())
            .await
            .map_err(|e| unavailable(&path, e))
    }
}
