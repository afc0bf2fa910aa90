//! `#[derive(SyncModel)]` for offline-sync-kit.
//!
//! Use it through the `offline-sync-kit` facade, which re-exports it next to
//! the `SyncModel` trait. The expansion is written against the facade's hidden
//! `__private` module; `#[sync(crate = "...")]` re-points it.

#![warn(missing_docs)]

mod expand;
mod gen;
mod internals;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Implements `SyncModel` for a struct with named fields.
///
/// Container attributes, `#[sync(...)]` on the struct:
///
/// - `model_type = "..."`: the name stored with queued ops (default: the struct's name in
///   snake case); `endpoint = "..."`: the wire collection (default: `model_type` + `s`);
///   `table = "..."`: the local table (default: the endpoint).
/// - `priority = N` (an `i32`, may be negative; default 0): the queue priority of the model's
///   changes, `SyncModel::PRIORITY`. A push sends the ready changes of all models highest
///   priority first, then in the order they were made. `ModelConfig::priority` replaces it
///   for one manager, `WriteOptions::priority` for one write.
/// - `crate = "..."`: the path of the runtime (default `offline_sync_kit`).
/// - `diesel_table`: also emit a Diesel `table!` for the local table.
/// - `rest(get(..), post(..), put(..), patch(..), delete(..))`: per-method request options,
///   `SyncModel::rest_requests()`. `post` is used for creates, `patch` for delta updates,
///   `put` for full updates, `delete` for deletes, `get` for pulls, fetches and remote
///   queries. Each takes `url = "..."`, `url_parameters(name = "value", ..)`,
///   `header = "Name: value"` (repeatable), `top_level_key = "..."`,
///   `supplemental = r#"{..}"#` (a JSON object), `response_data_key = "a.b"`,
///   `response_transformer = "path::to::fn"`, `timeout_ms = N`, `retry_count = N`.
///
/// Where each `rest` option takes effect with the default HTTP remote:
///
/// | option | `get` | writes with `rest_only()` | writes through the batch endpoint (default) |
/// | --- | --- | --- | --- |
/// | `url`, `url_parameters` | request URL | request URL | not used |
/// | `header` | sent | sent | not sent |
/// | `top_level_key` | not used | wraps the body | not used |
/// | `supplemental` | query parameters (string, number or boolean values only, checked here) | merged into the body | not used |
/// | `response_data_key`, `response_transformer` | applied | applied | not used |
/// | `timeout_ms` | per request | per request | per batch request of this method's ops |
/// | `retry_count` | in-request retries | in-request retries | in-request retries of that batch request |
///
/// On the batch path, ops whose methods differ in `timeout_ms` or `retry_count` go in
/// separate batch requests, so each is sent as its method says.
///
/// A REST backend that is not sync-server (see `RestPull` and `RestBackend` in `sync_core`;
/// every key below is the typed option of the same name there, checked here at compile time;
/// `ModelConfig::pull` / `ModelConfig::backend` replace the derive's value whole):
///
/// - `pull = "cursor"` (sync-server's protocol, the default) or `pull = "full_paged"`, or
///   `pull(...)` for a REST API's list: `since(field = "..", param = "..", template = "..{since}..",
///   format = "as_received" | "iso8601" | "epoch_millis" | "epoch_seconds", initial = "..")`,
///   `sort(param = "..", value = "..")`, `paging = "none"` or `paging(page_number(page = "..",
///   size = "..", first = 1) | offset(offset = "..", limit = "..") | cursor(param = "..",
///   limit = "..") | next_url(limit = "..") | keyset(limit = "..", skip = ".."))`,
///   `next_page = "never" | "link_header" | "full_page"` or `next_page(header = ".." |
///   body_url = "a.b" | body_cursor = "a.b" | total_count_header = ".." |
///   total_count_body = "a.b")`, `parameter(name = "..", value = "..")` (repeatable),
///   `records_at = "a.b"`. A paging scheme that cannot follow its signal is an error here.
/// - `backend(...)`: `idempotency_header = ".." | false`, `version = "etag" | "none"` or
///   `version(field = "..")`, `conditional(header = "..", template = "..{version}..") |
///   conditional = false`, `conflict_statuses(409, 412)`, `conflict_record_at = "a.b" | false`,
///   `already_exists(statuses(400), code_at = "a.b", codes(137))`, `updated_at(field = "..",
///   format = "..")`, `tombstone(field = "..", value = true | "..")`, `server_fields("..", ..)`,
///   `server_ids(id_at = "a.b", local_id_field = "..", lookup_param = "..",
///   lookup_template = "..{local_id}..")`. Fields named here must be stored fields of the
///   model, by wire name.
///
/// Field attributes: `id` (exactly one, `String` or `uuid::Uuid`), `index` (an SQL index),
/// `json` (stored and compared as JSON), `skip` (not stored or sent; needs `#[serde(skip)]`
/// and a default), `skip_delta` (never sent alone: a change to it sends the full record),
/// `encrypted` (end-to-end, see `sync_core::envelope`), `column = "..."`. Serde's `rename` and
/// `rename_all` are honoured; a field serde skips must also be `#[sync(skip)]`.
#[proc_macro_derive(SyncModel, attributes(sync))]
pub fn derive_sync_model(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}

#[cfg(test)]
mod tests;
