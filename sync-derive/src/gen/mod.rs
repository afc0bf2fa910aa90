//! Code generation, one module per output.

pub(crate) mod delta;
pub(crate) mod diesel;
pub(crate) mod fallback;
pub(crate) mod fields;
pub(crate) mod rest;
pub(crate) mod schema;
pub(crate) mod tracking;

use proc_macro2::TokenStream;
use quote::quote;

use crate::internals::ast::Container;

/// The runtime path generated code names everything through.
pub(crate) fn runtime_path(cont: &Container<'_>) -> TokenStream {
    match &cont.attrs.krate {
        Some(path) => quote!(#path::__private),
        None => quote!(::offline_sync_kit::__private),
    }
}

pub(crate) fn expand(cont: &Container<'_>) -> TokenStream {
    let ident = cont.ident;
    let rt = runtime_path(cont);
    let model_type = &cont.model_type;
    let endpoint = &cont.endpoint;
    let schema = schema::expand(cont, &rt);
    let (fields_struct, fields_ty, fields_fn) = fields::expand(cont, &rt);
    let id_fn = tracking::id_fn(cont, &rt);
    let changed_fields = tracking::changed_fields(cont, &rt);
    let to_delta = delta::to_delta_json(cont, &rt);
    let apply_delta = delta::apply_delta(cont, &rt);
    let field_value = delta::field_value(cont, &rt);
    let rest_requests = rest::expand(cont, &rt);
    let rest_backend = rest::expand_backend(cont, &rt);
    let table = diesel::expand(cont);
    let encrypted: Vec<&str> = cont
        .stored()
        .filter(|f| f.attrs.encrypted.is_some())
        .map(|f| f.wire_name.as_str())
        .collect();
    let encrypted_fields = if encrypted.is_empty() {
        quote!()
    } else {
        quote!(const ENCRYPTED_FIELDS: &'static [&'static str] = &[#(#encrypted),*];)
    };

    let priority = match cont.attrs.priority {
        Some(priority) => quote!(const PRIORITY: i32 = #priority;),
        None => quote!(),
    };

    quote! {
        #fields_struct

        #table

        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications, clippy::float_cmp)]
        const _: () = {
            #schema

            #[automatically_derived]
            impl #rt::SyncModel for #ident {
                const MODEL_TYPE: &'static str = #model_type;
                const ENDPOINT: &'static str = #endpoint;
                const SCHEMA: &'static #rt::ModelSchema = &__SYNC_SCHEMA;
                #encrypted_fields
                #priority
                type Fields = #fields_ty;
                #fields_fn
                #id_fn
                #changed_fields
                #to_delta
                #apply_delta
                #field_value
                #rest_requests
                #rest_backend
            }
        };
    }
}
