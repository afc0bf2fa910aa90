//! The derive input turned into a model description, keeping the user's
//! tokens for error spans.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{Data, DeriveInput, Fields, Ident, Type};
use sync_schema::{RenameRule, SqlType};

use super::attr;
use super::types::classify;
use super::Ctxt;

/// A struct deriving `SyncModel`.
pub(crate) struct Container<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) attrs: attr::Container,
    /// Every named field, including `#[sync(skip)]` ones.
    pub(crate) fields: Vec<Field<'a>>,
    pub(crate) original: &'a DeriveInput,
    pub(crate) model_type: String,
    pub(crate) endpoint: String,
    pub(crate) table: String,
}

/// One named field.
pub(crate) struct Field<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) ty: &'a Type,
    pub(crate) attrs: attr::Field,
    /// Rust name without `r#`.
    pub(crate) name: String,
    pub(crate) wire_name: String,
    pub(crate) column: String,
    pub(crate) nullable: bool,
    /// `None` when the type is outside the type map and the field is not `#[sync(json)]`.
    pub(crate) sql_type: Option<SqlType>,
    /// Position among stored fields (`None` for `#[sync(skip)]`).
    pub(crate) position: Option<usize>,
}

impl Field<'_> {
    pub(crate) fn is_skipped(&self) -> bool {
        self.attrs.skip.is_some()
    }

    pub(crate) fn is_json(&self) -> bool {
        self.attrs.json.is_some()
    }

    pub(crate) fn is_id(&self) -> bool {
        self.attrs.id.is_some()
    }
}

impl<'a> Container<'a> {
    /// Reads the input; `None` if it is not a struct with named fields (the
    /// error is recorded in `cx`).
    pub(crate) fn from_ast(cx: &Ctxt, input: &'a DeriveInput) -> Option<Container<'a>> {
        let attrs = attr::Container::from_ast(cx, input);
        let named = match &input.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(named) => named,
                Fields::Unnamed(fields) => {
                    cx.error_spanned_by(
                        fields,
                        "SyncModel needs a struct with named fields; a tuple struct has no field names to store and send",
                    );
                    return None;
                }
                Fields::Unit => {
                    cx.error_spanned_by(
                        &input.ident,
                        "SyncModel needs a struct with named fields, one of them `#[sync(id)]`; a unit struct has none",
                    );
                    return None;
                }
            },
            Data::Enum(data) => {
                cx.error_spanned_by(
                    data.enum_token,
                    "SyncModel can only be derived for a struct with named fields, not for an enum; store an enum inside a struct field marked `#[sync(json)]`",
                );
                return None;
            }
            Data::Union(data) => {
                cx.error_spanned_by(
                    data.union_token,
                    "SyncModel can only be derived for a struct with named fields, not for a union",
                );
                return None;
            }
        };

        let rename_all = attrs.rename_all;
        let mut position = 0usize;
        let fields = named
            .named
            .iter()
            .filter_map(|field| {
                let ident = field.ident.as_ref()?;
                let field_attrs = attr::Field::from_ast(cx, field);
                let name = ident.to_string().trim_start_matches("r#").to_owned();
                let wire_name = field_attrs.serde_rename.clone().unwrap_or_else(|| {
                    rename_all
                        .unwrap_or(RenameRule::Snake)
                        .apply_to_field(&name)
                });
                let column = field_attrs
                    .column
                    .as_ref()
                    .map_or_else(|| name.clone(), |c| c.value.clone());
                let info = classify(&field.ty);
                let sql_type = if field_attrs.json.is_some() {
                    Some(SqlType::Json)
                } else {
                    info.sql_type
                };
                let pos = if field_attrs.skip.is_some() {
                    None
                } else {
                    position += 1;
                    Some(position - 1)
                };
                Some(Field {
                    ident,
                    ty: &field.ty,
                    attrs: field_attrs,
                    name,
                    wire_name,
                    column,
                    nullable: info.nullable,
                    sql_type,
                    position: pos,
                })
            })
            .collect();

        let model_type = attrs.model_type.as_ref().map_or_else(
            || RenameRule::snake_case_of_type(&input.ident.to_string()),
            |s| s.value.clone(),
        );
        let endpoint = attrs
            .endpoint
            .as_ref()
            .map_or_else(|| format!("{model_type}s"), |s| s.value.clone());
        let table = attrs
            .table
            .as_ref()
            .map_or_else(|| endpoint.clone(), |s| s.value.clone());

        Some(Container {
            ident: &input.ident,
            attrs,
            fields,
            original: input,
            model_type,
            endpoint,
            table,
        })
    }

    /// Fields that are stored and synced, in schema order.
    pub(crate) fn stored(&self) -> impl Iterator<Item = &Field<'a>> {
        self.fields.iter().filter(|f| !f.is_skipped())
    }

    /// The `#[sync(id)]` field, if there is exactly one.
    pub(crate) fn id_field(&self) -> Option<&Field<'a>> {
        let mut ids = self.stored().filter(|f| f.is_id());
        let first = ids.next()?;
        ids.next().is_none().then_some(first)
    }

    /// Tokens to point at for errors about the whole struct.
    pub(crate) fn ident_tokens(&self) -> TokenStream {
        self.ident.to_token_stream()
    }
}
