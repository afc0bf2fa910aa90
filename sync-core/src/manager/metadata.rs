//! Sync metadata, local and remote, and checksums: [`SyncManager::sync_metadata`],
//! [`SyncManager::remote_sync_metadata`], their comparison, the clearing of either, and
//! [`SyncManager::verify`], which compares this store's copy of a collection with the
//! remote's record by record and repairs a difference by pulling the collection again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::SyncManager;
use crate::engine::stats::{CUSTOM_PREFIX, DEVICES_KEY, STATS_KEY};
use crate::engine::{blocking, RunSpec};
use crate::error::{Error, Result};
use crate::events::SyncState;
use crate::model::SyncModel;
use crate::options::SyncDirection;
use crate::protocol::{Checksum, DeviceInfo, SyncMetadataResponse};
use crate::remote::ModelRoute;
use crate::store::StoreQuery;

/// The remote's sync metadata for the signed-in user: devices, and per collection the record
/// counts and checksum (sync-server's `GET /sync/metadata`).
pub type RemoteSyncMetadata = SyncMetadataResponse;

/// What this device knows about its sync, kept up to date by the engine.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SyncMetadata {
    /// The user the store belongs to (`None`: an anonymous manager).
    pub user_id: Option<String>,
    /// This device's id: made once per store, sent as `X-Sync-Device`.
    pub device_id: String,
    /// End of the last run that was not skipped.
    pub last_sync_time: Option<DateTime<Utc>>,
    /// End of the last run in which every op was accepted and everything pulled.
    pub last_successful_sync_time: Option<DateTime<Utc>>,
    /// Checksum over every model's checksum (see [`EntityMetadata::checksum`]): equal on two
    /// devices that know the same versions of the same records.
    pub data_hash: String,
    /// The user's devices as the remote listed them at the last
    /// [`remote_sync_metadata`](SyncManager::remote_sync_metadata).
    pub devices: Vec<DeviceInfo>,
    /// The application's own values ([`set_custom_metadata`](SyncManager::set_custom_metadata)).
    pub custom: BTreeMap<String, String>,
    /// Per registered model (by model type).
    pub entities: BTreeMap<String, EntityMetadata>,
    /// The status now.
    pub status: SyncState,
    /// Conflicts met, all runs together (since the last `clear_sync_metadata`).
    pub conflict_count: u64,
    /// Error of the last run, if it failed.
    pub last_error: Option<String>,
    /// Ops put back for a retry by the last run.
    pub retry_count: u64,
    /// How long the last run took.
    pub last_sync_duration: Option<Duration>,
}

/// What this device knows about one model.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntityMetadata {
    /// The wire collection (endpoint).
    pub collection: String,
    /// Live local records.
    pub count: u64,
    /// Local changes not yet accepted by the remote.
    pub pending: u64,
    /// Local changes the remote refused.
    pub failed: u64,
    /// The pull cursor: where the next incremental pull starts (`None`: a full pull).
    pub last_pulled_cursor: Option<String>,
    /// When a pull of this model last completed.
    pub last_pulled_at: Option<DateTime<Utc>>,
    /// Records the remote versioned that this store knows (tombstones included).
    pub known: u64,
    /// Checksum of the known `(id, version, deleted)` (sync-protocol's `metadata` module):
    /// equal to the remote's collection checksum when this store has every record at the
    /// remote's version.
    pub checksum: String,
}

/// How this device's data stands against the remote's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataComparison {
    /// Same records at the same versions, nothing pending.
    InSync,
    /// The remote has changes this device has not pulled; nothing pending here.
    RemoteNewer,
    /// This device has changes to push; the remote has nothing new.
    LocalNewer,
    /// Both sides have changes.
    Diverged,
}

impl SyncMetadata {
    /// No run has succeeded yet (or the metadata was cleared since).
    pub fn is_never_synced(&self) -> bool {
        self.last_successful_sync_time.is_none()
    }

    /// Conflicts were met.
    pub fn has_conflicts(&self) -> bool {
        self.conflict_count > 0
    }

    /// Compares with the remote's metadata, collection by collection over this device's
    /// models: checksums equal or not, changes pending here or not.
    pub fn compare(&self, remote: &RemoteSyncMetadata) -> MetadataComparison {
        let zero = Checksum::default().hex();
        let same = self.entities.values().all(|entity| {
            match remote.collections.get(&entity.collection) {
                Some(theirs) => theirs.checksum == entity.checksum,
                // A cut listing says nothing of the collections it left out.
                None if remote.collections_truncated => true,
                None => entity.checksum == zero,
            }
        });
        let pending = self
            .entities
            .values()
            .any(|e| e.pending > 0 || e.failed > 0);
        match (same, pending) {
            (true, false) => MetadataComparison::InSync,
            (true, true) => MetadataComparison::LocalNewer,
            (false, false) => MetadataComparison::RemoteNewer,
            (false, true) => MetadataComparison::Diverged,
        }
    }
}

/// What [`SyncManager::verify`] found and did for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The model type.
    pub model: &'static str,
    /// Records the remote listed (tombstones included).
    pub remote_records: u64,
    /// Ids with local changes not yet pushed: not compared (their local state is ahead).
    pub skipped_pending: u64,
    /// Ids whose version or deletion differs, or that one side lacks, sorted.
    pub differing: Vec<String>,
    /// A difference was found and a repair ran (the collection pulled again, records the
    /// remote does not have removed); `differing` is what was found before it.
    pub repaired: bool,
    /// Ids still differing after the repair (e.g. a local version newer than the remote's,
    /// which a pull does not overwrite); empty when the repair worked.
    pub remaining: Vec<String>,
}

impl VerifyReport {
    /// No difference was found, or the repair removed every one.
    pub fn in_sync(&self) -> bool {
        self.remaining.is_empty()
    }
}

/// Digest entries per request of `verify`.
const DIGEST_PAGE: usize = 1_000;

impl SyncManager {
    /// This device's id (made once per store; sent as `X-Sync-Device`).
    pub fn device_id(&self) -> &str {
        &self.inner.device_id
    }

    /// What this device knows about its sync (see [`SyncMetadata`]).
    pub async fn sync_metadata(&self) -> Result<SyncMetadata> {
        self.check_open()?;
        let inner = &self.inner;
        let stats = inner.load_stats().await?;
        let user = inner.user_id.clone();
        let mut routes: Vec<_> = inner.models.values().cloned().collect();
        routes.sort_by_key(|r| r.schema.model_type);
        let schemas: Vec<_> = routes.iter().map(|r| r.schema).collect();
        let (entities_raw, ops, devices, custom) = blocking(&inner.store, move |s| {
            let mut per_model = Vec::new();
            for schema in schemas {
                let count = s.count(schema, &StoreQuery::default())?;
                let known = s.known_checksum(schema)?;
                let cursor = s.cursor(schema, user.as_deref())?;
                per_model.push((schema.model_type, count, known, cursor));
            }
            let ops = s.op_counts_by_model()?;
            let devices = s.metadata(user.as_deref(), DEVICES_KEY)?;
            let custom = s.metadata(user.as_deref(), &format!("{CUSTOM_PREFIX}*"))?;
            Ok((per_model, ops, devices, custom))
        })
        .await?;
        let ops: HashMap<String, (u64, u64)> = ops
            .into_iter()
            .map(|(model, pending, failed)| (model, (pending, failed)))
            .collect();
        let mut entities = BTreeMap::new();
        let mut all = Checksum::default();
        for (route, (model, count, (known, checksum), cursor)) in routes.iter().zip(entities_raw) {
            // The data hash sums the collections' checksums, each salted by its name so that
            // the same records in two collections do not cancel out.
            all = all.plus(Checksum::of_hash(
                crate::protocol::record_hash(&route.endpoint, 0, false) ^ checksum.value(),
                1,
            ));
            let (pending, failed) = ops.get(model).copied().unwrap_or((0, 0));
            entities.insert(
                model.to_owned(),
                EntityMetadata {
                    collection: route.endpoint.clone(),
                    count,
                    pending,
                    failed,
                    last_pulled_cursor: cursor,
                    last_pulled_at: stats.pulled_at.get(model).copied(),
                    known,
                    checksum: checksum.hex(),
                },
            );
        }
        Ok(SyncMetadata {
            user_id: inner.user_id.clone(),
            device_id: inner.device_id.clone(),
            last_sync_time: stats.last_sync_time,
            last_successful_sync_time: stats.last_successful_sync_time,
            data_hash: all.hex(),
            devices: devices
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default(),
            custom: custom
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default(),
            entities,
            status: inner.status.borrow().state,
            conflict_count: stats.conflict_count,
            last_error: stats.last_error,
            retry_count: stats.retry_count,
            last_sync_duration: stats.last_sync_duration_ms.map(Duration::from_millis),
        })
    }

    /// Sets one of the application's own metadata values (kept per user in the store; not
    /// cleared by [`clear_sync_metadata`](Self::clear_sync_metadata)).
    pub async fn set_custom_metadata(
        &self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<()> {
        self.check_open()?;
        let (key, value) = (key.into(), value.into());
        let user = self.inner.user_id.clone();
        let all_key = format!("{CUSTOM_PREFIX}*");
        blocking(&self.inner.store, move |s| {
            let mut custom: BTreeMap<String, String> = s
                .metadata(user.as_deref(), &all_key)?
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default();
            custom.insert(key, value);
            let text = serde_json::to_string(&custom).unwrap_or_else(|_| "{}".to_owned());
            s.set_metadata(user.as_deref(), &all_key, &text)
        })
        .await
    }

    /// Forgets what this device knows about its sync: every pull cursor (the next sync of
    /// each model is a full pull) and the run statistics. Records, queued changes and custom
    /// values stay. For a fresh start after a re-login, follow with
    /// `synchronize(SyncRun::new(SyncDirection::PullThenPush).force_full())`.
    pub async fn clear_sync_metadata(&self) -> Result<()> {
        self.check_open()?;
        // Not while a run moves the cursors.
        let _run = self.inner.run_lock.lock().await;
        let user = self.inner.user_id.clone();
        let schemas: Vec<_> = self.inner.models.values().map(|r| r.schema).collect();
        blocking(&self.inner.store, move |s| {
            for schema in schemas {
                s.reset_cursor(schema, user.as_deref())?;
            }
            s.set_metadata(user.as_deref(), STATS_KEY, "{}")?;
            s.set_metadata(user.as_deref(), DEVICES_KEY, "[]")
        })
        .await
    }

    /// The remote's sync metadata for this user (one request); the devices it lists are kept
    /// in [`SyncMetadata::devices`].
    pub async fn remote_sync_metadata(&self) -> Result<RemoteSyncMetadata> {
        self.check_open()?;
        let remote = self.inner.remote.sync_metadata().await?;
        let text = serde_json::to_string(&remote.devices).unwrap_or_else(|_| "[]".to_owned());
        let user = self.inner.user_id.clone();
        blocking(&self.inner.store, move |s| {
            s.set_metadata(user.as_deref(), DEVICES_KEY, &text)
        })
        .await?;
        Ok(remote)
    }

    /// Asks the remote to forget this device (its last-seen and last-sync record); `false` if
    /// it had none. The device appears again with its next request.
    pub async fn clear_remote_sync_metadata(&self) -> Result<bool> {
        self.check_open()?;
        Ok(self
            .inner
            .remote
            .forget_device(&self.inner.device_id)
            .await?)
    }

    /// Compares this store's copy of `T`'s collection with the remote's, record by record
    /// (the remote lists `(id, version, deleted)` of every record, read from the records), and
    /// repairs a difference: the collection is pulled again in full, and records the remote
    /// does not have (and that have no local change queued) are removed locally. Records with
    /// queued local changes are not compared. The report says which ids differed.
    pub async fn verify<T: SyncModel>(&self) -> Result<VerifyReport> {
        let route = self.route::<T>()?;
        self.verify_route(&route).await
    }

    /// [`verify`](Self::verify) for every registered model, in model type order.
    pub async fn verify_all(&self) -> Result<Vec<VerifyReport>> {
        let mut routes: Vec<_> = self.inner.models.values().cloned().collect();
        routes.sort_by_key(|r| r.schema.model_type);
        let mut reports = Vec::with_capacity(routes.len());
        for route in routes {
            reports.push(self.verify_route(&route).await?);
        }
        Ok(reports)
    }

    async fn verify_route(&self, route: &std::sync::Arc<ModelRoute>) -> Result<VerifyReport> {
        self.check_open()?;
        let differing = self.differences(route).await?;
        let mut report = VerifyReport {
            model: route.schema.model_type,
            remote_records: differing.remote_records,
            skipped_pending: differing.skipped,
            differing: differing.ids,
            repaired: false,
            remaining: Vec::new(),
        };
        if report.differing.is_empty() {
            return Ok(report);
        }
        if self.inner.paused.load(std::sync::atomic::Ordering::SeqCst) || !self.inner.is_online() {
            // No repair that cannot finish: nothing is changed, the report says what differs.
            report.remaining = report.differing.clone();
            return Ok(report);
        }
        tracing::warn!(
            model = route.schema.model_type,
            differing = report.differing.len(),
            "this store's copy differs from the remote's; pulling the collection again"
        );
        // The differing records are forgotten here (without an op; those with queued changes
        // were not compared), so the full pull below takes the remote's copy of each whatever
        // its version, and records the remote does not have stay gone.
        let schema = route.schema;
        let ids = report.differing.clone();
        blocking(&self.inner.store, move |s| s.forget_records(schema, &ids)).await?;
        let outcome = self
            .inner
            .run(RunSpec {
                direction: SyncDirection::PullOnly,
                force_full: true,
                batch_size: None,
                models: Some(vec![std::sync::Arc::clone(route)]),
            })
            .await?;
        if outcome.skipped {
            return Err(Error::Config(
                "the repair pull was skipped (offline or paused); verify again when online".into(),
            ));
        }
        self.inner.refresh_counts().await?;
        report.repaired = true;
        report.remaining = self.differences(route).await?.ids;
        Ok(report)
    }

    async fn differences(&self, route: &ModelRoute) -> Result<Differences> {
        let mut remote: HashMap<String, (i64, bool)> = HashMap::new();
        let mut after = String::new();
        loop {
            let page = self
                .inner
                .remote
                .digest_page(route, &after, DIGEST_PAGE)
                .await?;
            let before = remote.len();
            for entry in page.items {
                remote.insert(entry.id, (entry.version, entry.deleted));
            }
            match page.next_after {
                // Each page must bring records not seen yet, or a broken remote would keep
                // the loop going forever.
                Some(next) if remote.len() > before && next != after => after = next,
                Some(_) => {
                    return Err(Error::Remote(crate::remote::RemoteError::bad_response(
                        "the digest listing did not move past its cursor",
                    )))
                }
                None => break,
            }
        }
        let schema = route.schema;
        let known = blocking(&self.inner.store, move |s| s.known_versions(schema)).await?;
        let with_ops: HashSet<&str> = known.with_ops.iter().map(String::as_str).collect();
        let mut ids = Vec::new();
        let mut seen = HashSet::new();
        for (id, version, deleted) in &known.known {
            if with_ops.contains(id.as_str()) {
                continue;
            }
            seen.insert(id.as_str());
            match remote.get(id) {
                Some(theirs) if *theirs == (*version, *deleted) => {}
                Some(_) | None => ids.push(id.clone()),
            }
        }
        for id in remote.keys() {
            if !seen.contains(id.as_str()) && !with_ops.contains(id.as_str()) {
                ids.push(id.clone());
            }
        }
        ids.sort();
        ids.dedup();
        Ok(Differences {
            remote_records: u64::try_from(remote.len()).unwrap_or(u64::MAX),
            skipped: u64::try_from(with_ops.len()).unwrap_or(u64::MAX),
            ids,
        })
    }
}

struct Differences {
    remote_records: u64,
    skipped: u64,
    ids: Vec<String>,
}
