use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use crate::internals::ast::Container;

/// `const __SYNC_SCHEMA: ModelSchema`.
pub(crate) fn expand(cont: &Container<'_>, rt: &TokenStream) -> TokenStream {
    let struct_name = cont.ident.to_string();
    let model_type = &cont.model_type;
    let endpoint = &cont.endpoint;
    let table = &cont.table;
    let id_field = cont.id_field().and_then(|f| f.position).unwrap_or(0);
    let specs = cont.stored().map(|f| {
        let position = f.position.unwrap_or(0);
        let name = &f.name;
        let wire_name = &f.wire_name;
        let column = &f.column;
        let sql_type = Ident::new(
            f.sql_type.map_or("Json", |t| t.variant_name()),
            Span::call_site(),
        );
        let nullable = f.nullable;
        let id = f.is_id();
        let index = f.attrs.index;
        let skip_delta = f.attrs.skip_delta.is_some();
        let has_default = f.attrs.serde_default || cont.attrs.serde_default || f.nullable;
        quote! {
            #rt::FieldSpec {
                position: #position,
                name: #name,
                wire_name: #wire_name,
                column: #column,
                sql_type: #rt::SqlType::#sql_type,
                nullable: #nullable,
                id: #id,
                index: #index,
                skip_delta: #skip_delta,
                has_default: #has_default,
            }
        }
    });
    quote! {
        const __SYNC_SCHEMA: #rt::ModelSchema = #rt::ModelSchema {
            struct_name: #struct_name,
            model_type: #model_type,
            endpoint: #endpoint,
            table: #table,
            id_field: #id_field,
            fields: &[#(#specs),*],
        };
    }
}
