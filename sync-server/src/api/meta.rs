//! Sync metadata: `GET /sync/metadata` (the user's devices, and per collection the record
//! counts and checksum), `DELETE /sync/metadata/devices/{device}` (forget a device) and
//! `GET /sync/digest/{collection}` (the records' ids, versions and tombstone flags, by id, read
//! from the records themselves), plus the device bookkeeping of every authenticated request
//! (the `X-Sync-Device` header: last seen, and last finished sync).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::records::ApiPath;
use super::validate::check_collection;
use super::{ApiError, AppState, AuthUser};
use crate::protocol::{
    is_valid_device_id, DigestPage, ErrorCode, SyncMetadataResponse, DEVICE_ID_HEADER,
    MAX_COLLECTIONS_LISTED,
};

/// How often a device's `last_seen` is written at most (a finished sync is always written).
const SEEN_EVERY: Duration = Duration::from_secs(10);

/// Devices remembered by [`DeviceSeen`]; past this the memory is cleared (the cost is one
/// early write per device).
const SEEN_CAPACITY: usize = 65_536;

/// Digest entries per page: default and most.
const DIGEST_PAGE: i64 = 1_000;
const DIGEST_PAGE_MAX: i64 = 10_000;

/// When each device's `last_seen` was last written, so that a busy device costs one write per
/// [`SEEN_EVERY`], not one per request.
#[derive(Debug, Default)]
pub(crate) struct DeviceSeen {
    /// By user, then device: looked up by `&str` on every request, allocating only when a
    /// write is due.
    written: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    by_user: HashMap<String, HashMap<String, Instant>>,
    entries: usize,
}

impl DeviceSeen {
    /// True if a write is due for `device` of `user` now (and counts it as written).
    fn due(&self, user: &str, device: &str, synced: bool) -> bool {
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let recent = written
            .by_user
            .get(user)
            .and_then(|devices| devices.get(device))
            .is_some_and(|at| now.saturating_duration_since(*at) < SEEN_EVERY);
        if recent && !synced {
            return false;
        }
        if written.entries >= SEEN_CAPACITY {
            *written = Seen::default();
        }
        let new = written
            .by_user
            .entry(user.to_owned())
            .or_default()
            .insert(device.to_owned(), now)
            .is_none();
        if new {
            written.entries = written.entries.saturating_add(1);
        }
        true
    }
}

/// The device id of a request: `Ok(None)` without the header, an error for a malformed one.
pub(crate) fn device_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(DEVICE_ID_HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(id) if is_valid_device_id(id) => Ok(Some(id.to_owned())),
        _ => Err(ApiError::bad_request(
            ErrorCode::InvalidDeviceId,
            format!("{DEVICE_ID_HEADER} must be 1 to 64 letters, digits, '-', '_' or '.'"),
        )),
    }
}

/// Records that `device` of `user` was seen (and finished a sync if `synced`). A failure is
/// logged, never the request's failure.
pub(crate) async fn note_device(state: &AppState, user: &str, device: &str, synced: bool) {
    if !state.devices.due(user, device, synced) {
        return;
    }
    if let Err(err) = state.store.touch_device(user, device, synced).await {
        tracing::warn!(error = %err, user, device, "recording a device failed");
    }
}

pub(super) async fn metadata(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Response, ApiError> {
    let (devices, mut collections) = state.store.sync_metadata(&user).await?;
    // A user with very many collections gets the first ones and a flag, not an answer that
    // grows without bound.
    let collections_truncated = collections.len() > MAX_COLLECTIONS_LISTED;
    collections.truncate(MAX_COLLECTIONS_LISTED);
    let last_successful_sync = devices
        .iter()
        .filter_map(|d| d.last_successful_sync.clone())
        .max();
    Ok(Json(SyncMetadataResponse {
        user,
        devices,
        collections: collections.into_iter().collect(),
        collections_truncated,
        last_successful_sync,
    })
    .into_response())
}

pub(super) async fn forget_device(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(device): ApiPath<String>,
) -> Result<Response, ApiError> {
    if state.store.forget_device(&user, &device).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no device {device:?} of this user"),
        ))
    }
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct DigestQuery {
    #[serde(default)]
    after: String,
    limit: Option<i64>,
}

pub(super) async fn digest(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(collection): ApiPath<String>,
    query: Result<Query<DigestQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|err| ApiError::bad_request(ErrorCode::InvalidQuery, err.body_text()))?;
    check_collection(&collection, &state.limits)?;
    let limit = match query.limit {
        None => DIGEST_PAGE,
        Some(n) if (1..=DIGEST_PAGE_MAX).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidLimit,
                format!("limit {n} is not within 1..={DIGEST_PAGE_MAX}"),
            ))
        }
    };
    let items = state
        .store
        .digest_page(&user, &collection, &query.after, limit)
        .await?;
    let full = i64::try_from(items.len()).is_ok_and(|n| n == limit);
    let next_after = full.then(|| items.last().map(|e| e.id.clone())).flatten();
    Ok(Json(DigestPage { items, next_after }).into_response())
}
