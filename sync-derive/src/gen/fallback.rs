use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

/// A stub impl emitted next to the compile errors, so that uses of the model
/// elsewhere do not add "trait not implemented" errors on top of the real one.
///
/// Generic types get no stub: it would only add bound errors of its own.
pub(crate) fn expand(input: &DeriveInput) -> TokenStream {
    if !input.generics.params.is_empty() {
        return TokenStream::new();
    }
    let ident = &input.ident;
    let rt = crate_path(input);
    let name = ident.to_string();
    quote! {
        #[allow(unreachable_code, unused_variables)]
        const _: () = {
            #[automatically_derived]
            impl #rt::SyncModel for #ident {
                const MODEL_TYPE: &'static str = #name;
                const ENDPOINT: &'static str = #name;
                const SCHEMA: &'static #rt::ModelSchema = &#rt::ModelSchema {
                    struct_name: #name,
                    model_type: #name,
                    endpoint: #name,
                    table: #name,
                    id_field: 0,
                    fields: &[],
                };
                type Fields = ();
                fn fields() -> Self::Fields {}
                fn id(&self) -> #rt::Cow<'_, str> {
                    ::std::unreachable!()
                }
                fn changed_fields(&self, before: &Self) -> #rt::FieldMask {
                    ::std::unreachable!()
                }
                fn try_to_delta_json(&self, mask: #rt::FieldMask) -> #rt::Result<#rt::serde_json::Map<::std::string::String, #rt::serde_json::Value>, #rt::Error> {
                    ::std::unreachable!()
                }
                fn apply_delta(&mut self, delta: &#rt::serde_json::Map<::std::string::String, #rt::serde_json::Value>) -> #rt::Result<#rt::FieldMask, #rt::Error> {
                    ::std::unreachable!()
                }
                fn field_value(&self, position: usize) -> #rt::Result<#rt::serde_json::Value, #rt::Error> {
                    ::std::unreachable!()
                }
                fn rest_requests() -> #rt::RestRequests {
                    ::std::unreachable!()
                }
            }
        };
    }
}

/// The runtime path, read leniently: the attributes may be the broken part.
fn crate_path(input: &DeriveInput) -> TokenStream {
    for attr in &input.attrs {
        if !attr.path().is_ident("sync") {
            continue;
        }
        let mut found = None;
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let lit: syn::LitStr = meta.value()?.parse()?;
                found = lit.parse::<syn::Path>().ok();
            } else if meta.input.peek(syn::Token![=]) {
                let _: syn::Expr = meta.value()?.parse()?;
            } else if meta.input.peek(syn::token::Paren) {
                let content;
                syn::parenthesized!(content in meta.input);
                let _: TokenStream = content.parse()?;
            }
            Ok(())
        });
        if let Some(path) = found {
            return quote!(#path::__private);
        }
    }
    quote!(::offline_sync_kit::__private)
}
