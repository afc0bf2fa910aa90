use proc_macro2::TokenStream;
use quote::quote;
use sync_schema::SqlType;

use crate::internals::ast::Container;

/// `fn id(&self)`.
pub(crate) fn id_fn(cont: &Container<'_>, rt: &TokenStream) -> TokenStream {
    let Some(id) = cont.id_field() else {
        return TokenStream::new();
    };
    let member = id.ident;
    let body = if id.sql_type == Some(SqlType::Uuid) {
        quote!(#rt::Cow::Owned(#rt::ToString::to_string(&self.#member)))
    } else {
        quote!(#rt::Cow::Borrowed(self.#member.as_str()))
    };
    quote! {
        fn id(&self) -> #rt::Cow<'_, str> {
            #body
        }
    }
}

/// `fn changed_fields(&self, before)`: typed `!=` for mapped types, JSON
/// equality for `#[sync(json)]` fields (which need not implement `PartialEq`).
pub(crate) fn changed_fields(cont: &Container<'_>, rt: &TokenStream) -> TokenStream {
    let checks = cont.stored().map(|f| {
        let member = f.ident;
        let position = f.position.unwrap_or(0);
        if f.is_json() {
            quote! {
                if #rt::json_differs(&self.#member, &before.#member) {
                    mask.insert(#position);
                }
            }
        } else {
            quote! {
                if self.#member != before.#member {
                    mask.insert(#position);
                }
            }
        }
    });
    quote! {
        fn changed_fields(&self, before: &Self) -> #rt::FieldMask {
            let mut mask = #rt::FieldMask::EMPTY;
            #(#checks)*
            mask
        }
    }
}
