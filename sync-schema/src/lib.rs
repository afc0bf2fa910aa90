//! Schema description of a sync model, shared by the `SyncModel` derive (which
//! emits it as a `static`) and the runtime (which turns it into SQL, wire names
//! and query translations).
//!
//! This crate has no dependencies so the proc-macro crate can use the same
//! naming and type rules as the runtime without pulling the runtime in.

#![warn(missing_docs)]

mod rename;
mod types;

pub use crate::rename::RenameRule;
pub use crate::types::{ScalarKind, SqlType};

/// Static description of a model: everything the store, the migration
/// generator, the query translators and the remote need to know about it.
///
/// The derive emits one `static` of this type per model (`SyncModel::SCHEMA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSchema {
    /// Rust name of the struct, used in error messages.
    pub struct_name: &'static str,
    /// Model type name (`#[sync(model_type = "...")]`), stored in the outbox.
    pub model_type: &'static str,
    /// REST endpoint / wire collection (`#[sync(endpoint = "...")]`).
    pub endpoint: &'static str,
    /// Local SQL table (`#[sync(table = "...")]`).
    pub table: &'static str,
    /// Index into [`ModelSchema::fields`] of the `#[sync(id)]` field.
    pub id_field: usize,
    /// Stored and synced fields in declaration order (`#[sync(skip)]` fields are absent).
    pub fields: &'static [FieldSpec],
}

impl ModelSchema {
    /// The `#[sync(id)]` field.
    pub fn id(&self) -> &'static FieldSpec {
        &self.fields[self.id_field]
    }

    /// Looks a field up by its wire (serde) name.
    pub fn field_by_wire_name(&self, wire_name: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.wire_name == wire_name)
    }

    /// Looks a field up by its Rust name.
    pub fn field_by_name(&self, name: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Looks a field up by its column name.
    pub fn field_by_column(&self, column: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.column == column)
    }

    /// Fields carrying `#[sync(index)]`.
    pub fn indexed_fields(&self) -> impl Iterator<Item = &'static FieldSpec> {
        self.fields.iter().filter(|f| f.index)
    }
}

/// Static description of one stored field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// Position in [`ModelSchema::fields`]; also the field's bit in a `FieldMask`.
    pub position: usize,
    /// Rust field name.
    pub name: &'static str,
    /// Name on the wire: what serde writes, after `rename` / `rename_all`.
    pub wire_name: &'static str,
    /// SQL column name (`#[sync(column = "...")]`, default: the Rust name).
    pub column: &'static str,
    /// Column type.
    pub sql_type: SqlType,
    /// The Rust type is `Option<_>`; the column is nullable.
    pub nullable: bool,
    /// `#[sync(id)]`.
    pub id: bool,
    /// `#[sync(index)]`: the store creates an index on this column.
    pub index: bool,
    /// `#[sync(skip_delta)]`: never sent in a partial delta; a change to it makes the update a full one.
    pub skip_delta: bool,
    /// The field carries `#[serde(default)]`, so a record without it still deserialises.
    pub has_default: bool,
}

impl FieldSpec {
    /// True for `#[sync(json)]` fields, stored as JSON text.
    pub fn is_json(&self) -> bool {
        self.sql_type == SqlType::Json
    }
}
