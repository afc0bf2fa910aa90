use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;
use sync_schema::SqlType;

use crate::internals::ast::Container;

fn ident(name: &str) -> Ident {
    // Column and table names are plain identifiers (checked); keywords need the raw form.
    match syn::parse_str::<Ident>(name) {
        Ok(_) => Ident::new(name, Span::call_site()),
        Err(_) => Ident::new_raw(name, Span::call_site()),
    }
}

/// Diesel SQL type of a column as the default (SQLite) store writes it.
fn sql_type(t: SqlType) -> TokenStream {
    match t {
        SqlType::Bool => quote!(Bool),
        SqlType::SmallInt => quote!(SmallInt),
        SqlType::Integer => quote!(Integer),
        SqlType::BigInt => quote!(BigInt),
        SqlType::Float => quote!(Float),
        SqlType::Double => quote!(Double),
        SqlType::Binary => quote!(Binary),
        // Timestamps (RFC 3339), UUIDs and JSON are TEXT in the SQLite store.
        _ => quote!(Text),
    }
}

/// With `#[sync(diesel_table)]`: a Diesel `table!` for the model's table,
/// its columns and the bookkeeping columns. Diesel's `table!` names `::diesel`,
/// so the application depends on diesel itself (as with any Diesel schema).
pub(crate) fn expand(cont: &Container<'_>) -> TokenStream {
    if cont.attrs.diesel_table.is_none() {
        return TokenStream::new();
    }
    let table = ident(&cont.table);
    let Some(id) = cont.id_field() else {
        return TokenStream::new();
    };
    let id_column = ident(&id.column);
    let columns = cont.stored().map(|f| {
        let column = ident(&f.column);
        let ty = sql_type(f.sql_type.unwrap_or(SqlType::Json));
        if f.nullable {
            quote!(#column -> Nullable<#ty>,)
        } else {
            quote!(#column -> #ty,)
        }
    });
    quote! {
        ::diesel::table! {
            #table (#id_column) {
                #(#columns)*
                _version -> BigInt,
                _created_at -> Text,
                _updated_at -> Text,
                _synced -> Bool,
                _deleted -> Bool,
                _user_id -> Nullable<Text>,
                _sync_error -> Nullable<Text>,
                _sync_attempts -> Integer,
            }
        }
    }
}
