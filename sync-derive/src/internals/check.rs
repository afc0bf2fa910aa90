//! Checks that span several attributes or fields.

use std::collections::HashMap;

use quote::ToTokens;
use sync_schema::SqlType;

use super::ast::Container;
use super::Ctxt;

/// Stored fields a model may have: the capacity of `FieldMask`.
pub(crate) const MAX_FIELDS: usize = 64;

/// Wire names the protocol adds to every record.
const RESERVED_WIRE_NAMES: &[&str] = &["version", "updated_at", "deleted"];

pub(crate) fn check(cx: &Ctxt, cont: &Container<'_>) {
    check_generics(cx, cont);
    check_id(cx, cont);
    check_fields(cx, cont);
    check_names(cx, cont);
    check_backend_fields(cx, cont);
}

/// Fields named by `backend(...)` (updated-at, server fields, the local-id field) are fields
/// of the model, by wire name; the id is neither a server field nor the local-id field.
fn check_backend_fields(cx: &Ctxt, cont: &Container<'_>) {
    let Some(backend) = &cont.attrs.backend else {
        return;
    };
    let wire: Vec<&str> = cont.stored().map(|f| f.wire_name.as_str()).collect();
    let id_wire = cont.id_field().map(|f| f.wire_name.as_str());
    for field in &backend.fields {
        if !wire.contains(&field.wire_name.as_str()) {
            cx.error_spanned_by(
                &field.tokens,
                format!(
                    "{} `{}` is not a stored field of the model (wire names: {})",
                    field.what,
                    field.wire_name,
                    wire.join(", ")
                ),
            );
        } else if id_wire == Some(field.wire_name.as_str()) && field.what != "the updated-at field"
        {
            cx.error_spanned_by(
                &field.tokens,
                format!("{} cannot be the id `{}`", field.what, field.wire_name),
            );
        }
    }
}

fn check_generics(cx: &Ctxt, cont: &Container<'_>) {
    let generics = &cont.original.generics;
    if !generics.params.is_empty() {
        cx.error_spanned_by(
            &generics.params,
            "SyncModel cannot be derived for a generic struct: the schema, table and endpoint are fixed per type; use a concrete struct",
        );
    }
}

fn check_id(cx: &Ctxt, cont: &Container<'_>) {
    let ids: Vec<_> = cont.fields.iter().filter(|f| f.is_id()).collect();
    match ids.as_slice() {
        [] => cx.error_spanned_by(
            cont.ident_tokens(),
            format!(
                "`{}` has no `#[sync(id)]` field; mark the field that identifies a record, e.g. `#[sync(id)] id: String`",
                cont.ident
            ),
        ),
        [first, rest @ ..] => {
            for extra in rest {
                if let Some(tokens) = &extra.attrs.id {
                    cx.error_spanned_by(
                        tokens,
                        format!(
                            "duplicate `#[sync(id)]`: a model has exactly one id field and `{}` is already it",
                            first.name
                        ),
                    );
                }
            }
            let id = first;
            let ok = !id.nullable
                && !id.is_json()
                && id.sql_type.is_some_and(SqlType::can_be_id);
            if !ok {
                cx.error_spanned_by(
                    id.ty,
                    format!(
                        "the `#[sync(id)]` field must be `String` or `uuid::Uuid`, found `{}`",
                        id.ty.to_token_stream().to_string().replace(' ', "")
                    ),
                );
            }
            if let Some(tokens) = &id.attrs.skip {
                cx.error_spanned_by(tokens, "the `#[sync(id)]` field cannot be `skip`: every record is stored and sent with its id");
            }
            if let Some(tokens) = &id.attrs.skip_delta {
                cx.error_spanned_by(tokens, "`skip_delta` has no meaning on the id field: the id addresses a record and is never part of a delta");
            }
        }
    }
}

fn check_fields(cx: &Ctxt, cont: &Container<'_>) {
    let stored = cont.stored().count();
    if stored > MAX_FIELDS {
        cx.error_spanned_by(
            cont.ident_tokens(),
            format!(
                "`{}` has {stored} stored fields; a SyncModel holds at most {MAX_FIELDS} (the capacity of FieldMask). Mark some `#[sync(skip)]` or group related ones in a struct stored as one `#[sync(json)]` field",
                cont.ident
            ),
        );
    }
    for field in &cont.fields {
        let attrs = &field.attrs;
        if let Some(tokens) = &attrs.serde_flatten {
            cx.error_spanned_by(
                tokens,
                "`#[serde(flatten)]` is not supported on a SyncModel: each field must be one column; store the nested struct as a field marked `#[sync(json)]` instead",
            );
        }
        if let Some(tokens) = &attrs.serde_with {
            cx.error_spanned_by(
                tokens,
                "`#[serde(with/serialize_with/deserialize_with)]` is not supported on a SyncModel field: deltas use the field type's own serde impls; wrap the value in a newtype that implements them and mark the field `#[sync(json)]`",
            );
        }
        if let (None, Some(tokens)) = (&attrs.skip, &attrs.serde_skip) {
            cx.error_spanned_by(
                tokens,
                format!(
                    "serde skips `{}` one way or both, so its value would not survive the store or the remote (it comes back as the default); mark it `#[sync(skip)]` as well to keep it local-only and out of sync, or drop the serde skip",
                    field.name
                ),
            );
        }
        if let Some(encrypted) = &attrs.encrypted {
            if attrs.index {
                cx.error_spanned_by(
                    encrypted,
                    format!(
                        "`{}` cannot be both `encrypted` and `index`: the server only sees ciphertext, so an index or a filter on it cannot be served by a remote query; remove `index` (filter such records in memory after decrypting)",
                        field.name
                    ),
                );
            }
            if attrs.id.is_some() {
                cx.error_spanned_by(
                    encrypted,
                    "the `#[sync(id)]` field cannot be `encrypted`: the server routes and versions records by id; encrypt another field",
                );
            }
            if attrs.skip.is_some() {
                cx.error_spanned_by(
                    encrypted,
                    "a `#[sync(skip)]` field is never synced, so `encrypted` has no effect; remove one or the other",
                );
            }
        }
        if let Some(skip) = &attrs.skip {
            let mut pointless = Vec::new();
            if attrs.index {
                pointless.push("index");
            }
            if attrs.json.is_some() {
                pointless.push("json");
            }
            if attrs.skip_delta.is_some() {
                pointless.push("skip_delta");
            }
            if attrs.column.is_some() {
                pointless.push("column");
            }
            if !pointless.is_empty() {
                cx.error_spanned_by(
                    skip,
                    format!(
                        "a `#[sync(skip)]` field is neither stored nor synced, so `{}` has no effect; remove one or the other",
                        pointless.join("`, `")
                    ),
                );
            }
            if !(attrs.serde_default || attrs.serde_skip_deserializing || cont.attrs.serde_default)
            {
                cx.error_spanned_by(
                    field.ident,
                    format!(
                        "`{}` is `#[sync(skip)]`, so stored and received records do not carry it; add `#[serde(skip)]` (or `#[serde(default)]`) so such records deserialise",
                        field.name
                    ),
                );
            }
            continue;
        }
        if field.sql_type.is_none() && attrs.serde_flatten.is_none() {
            cx.error_spanned_by(
                field.ty,
                format!(
                    "field `{}` has type `{}`, which has no column type; supported: {}; add `#[sync(json)]` to store any serde type as JSON text",
                    field.name,
                    field.ty.to_token_stream().to_string().replace(' ', ""),
                    SqlType::rust_type_names()
                ),
            );
        }
    }
}

fn is_sql_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_names(cx: &Ctxt, cont: &Container<'_>) {
    if cont.attrs.table.is_none() && !is_sql_identifier(&cont.table) {
        cx.error_spanned_by(
            cont.ident_tokens(),
            format!(
                "the table name `{}` (taken from the endpoint) is not a plain SQL identifier; set one with `#[sync(table = \"...\")]`",
                cont.table
            ),
        );
    }
    let mut wire: HashMap<&str, &str> = HashMap::new();
    let mut columns: HashMap<&str, &str> = HashMap::new();
    let id_wire = cont.id_field().map(|f| f.wire_name.as_str());
    for field in cont.stored() {
        if field.attrs.column.is_none() && !is_sql_identifier(&field.column) {
            cx.error_spanned_by(
                field.ident,
                format!(
                    "column `{}` must start with a letter: names starting with `_` are reserved for sync bookkeeping; set `#[sync(column = \"...\")]`",
                    field.column
                ),
            );
        }
        let reserved = RESERVED_WIRE_NAMES.contains(&field.wire_name.as_str())
            || (!field.is_id() && field.wire_name == "id" && id_wire.is_some_and(|w| w != "id"));
        if reserved {
            cx.error_spanned_by(
                field.ident,
                format!(
                    "wire name `{}` is reserved by the sync protocol (records carry `id`, `version`, `updated_at` and `deleted`); rename the field or use `#[serde(rename = \"...\")]`",
                    field.wire_name
                ),
            );
        }
        if let Some(other) = wire.insert(&field.wire_name, &field.name) {
            cx.error_spanned_by(
                field.ident,
                format!(
                    "fields `{other}` and `{}` have the same wire name `{}`",
                    field.name, field.wire_name
                ),
            );
        }
        if let Some(other) = columns.insert(&field.column, &field.name) {
            cx.error_spanned_by(
                field.ident,
                format!(
                    "fields `{other}` and `{}` map to the same column `{}`",
                    field.name, field.column
                ),
            );
        }
    }
}
