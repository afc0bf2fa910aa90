use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use crate::internals::ast::Container;

/// `fn rest_requests()` from the `rest(...)` attributes.
pub(crate) fn expand(cont: &Container<'_>, rt: &TokenStream) -> TokenStream {
    let methods = cont.attrs.rest.iter().map(|m| {
        let variant = Ident::new(
            match m.method.0 {
                "get" => "Get",
                "post" => "Post",
                "put" => "Put",
                "patch" => "Patch",
                _ => "Delete",
            },
            Span::call_site(),
        );
        let slot = Ident::new(m.method.0, Span::call_site());
        let mut sets = Vec::new();
        if let Some(url) = &m.url {
            sets.push(quote!(req.url = ::std::option::Option::Some(#rt::ToString::to_string(#url));));
        }
        for (name, value) in &m.url_parameters {
            sets.push(quote!(req.url_parameters.insert(#rt::ToString::to_string(#name), #rt::ToString::to_string(#value));));
        }
        for (name, value) in &m.headers {
            sets.push(quote!(req.headers.insert(#rt::ToString::to_string(#name), #rt::ToString::to_string(#value));));
        }
        if let Some(key) = &m.top_level_key {
            sets.push(quote!(req.top_level_key = ::std::option::Option::Some(#rt::ToString::to_string(#key));));
        }
        if let Some(json) = &m.supplemental {
            sets.push(quote!(req.supplemental_top_level_data = ::std::option::Option::Some(#rt::json_object_literal(#json));));
        }
        if let Some(key) = &m.response_data_key {
            sets.push(quote!(req.response_data_key = ::std::option::Option::Some(#rt::ToString::to_string(#key));));
        }
        if let Some(ms) = m.timeout_ms {
            sets.push(quote!(req.timeout = ::std::option::Option::Some(::std::time::Duration::from_millis(#ms));));
        }
        if let Some(n) = m.retry_count {
            sets.push(quote!(req.retry_count = ::std::option::Option::Some(#n);));
        }
        if let Some(sent) = m.send_as {
            let sent = Ident::new(
                match sent {
                    "GET" => "Get",
                    "POST" => "Post",
                    "PUT" => "Put",
                    "PATCH" => "Patch",
                    _ => "Delete",
                },
                Span::call_site(),
            );
            sets.push(quote!(req.send_as = ::std::option::Option::Some(#rt::RestMethod::#sent);));
        }
        if let Some(path) = &m.response_transformer {
            sets.push(quote!(req.response_transformer = ::std::option::Option::Some(#rt::transformer(#path));));
        }
        quote! {
            requests.#slot = ::std::option::Option::Some({
                #[allow(unused_mut)]
                let mut req = #rt::RestRequest::new(#rt::RestMethod::#variant);
                #(#sets)*
                req
            });
        }
    });
    quote! {
        fn rest_requests() -> #rt::RestRequests {
            #[allow(unused_mut)]
            let mut requests = #rt::RestRequests::new();
            #(#methods)*
            requests
        }
    }
}

/// `fn pull_mode()` and `fn rest_backend()` from `pull(...)` and `backend(...)`; absent when
/// the attributes are (the trait's defaults say "none").
pub(crate) fn expand_backend(cont: &Container<'_>, rt: &TokenStream) -> TokenStream {
    let pull = cont.attrs.pull.as_ref().map(|pull| {
        let expr = &pull.expr;
        quote! {
            fn pull_mode() -> ::std::option::Option<#rt::PullMode> {
                use #rt as __rt;
                ::std::option::Option::Some(#expr)
            }
        }
    });
    let backend = cont.attrs.backend.as_ref().map(|backend| {
        let statements = &backend.statements;
        quote! {
            fn rest_backend() -> ::std::option::Option<#rt::RestBackend> {
                use #rt as __rt;
                #[allow(unused_mut)]
                let mut backend = __rt::RestBackend::new();
                #statements
                ::std::option::Option::Some(backend)
            }
        }
    });
    quote!(#pull #backend)
}
