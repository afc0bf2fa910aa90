use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

// Each mistake in `pull(...)` and `backend(...)` is reported at its own tokens, all at once.
#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(pull(since(field = "updatedAt", param = "where", template = "{}", format = "iso"), limit = "10"))]
#[sync(backend(
    version = "none",
    conflict_statuses(200),
    server_fields("createdAt"),
    idempotency_header = "Bad Header",
    server_ids(id_at = "objectId", local_id_field = "localId", lookup_param = "where", lookup_template = "{}")
))]
struct Note {
    #[sync(id)]
    id: String,
    modified: String,
}

// A paging scheme needs its signal, and a keyset needs `since`.
#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(pull(paging(offset(offset = "skip", limit = "limit"))))]
struct NoSignal {
    #[sync(id)]
    id: String,
}

#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(pull(paging(keyset(limit = "limit", skip = "skip")), next_page(body_cursor = "next")))]
struct KeysetWithoutSince {
    #[sync(id)]
    id: String,
}

#[derive(SyncModel, Serialize, Deserialize, Clone)]
#[sync(pull = "everything")]
struct UnknownMode {
    #[sync(id)]
    id: String,
}

fn main() {}
