//! The derive's entry: parse, check, then generate.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::gen;
use crate::internals::{ast::Container, check, Ctxt};

/// Expands `#[derive(SyncModel)]`. Errors come back as `compile_error!`s
/// together with a stub impl, so the user's other code does not add a flood
/// of "trait not implemented" errors on top of the real one.
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let container = Container::from_ast(&cx, input);
    if let Some(container) = &container {
        check::check(&cx, container);
    }
    match (cx.check(), container) {
        (Ok(()), Some(container)) => gen::expand(&container),
        (Err(err), _) => {
            let errors = err.into_compile_error();
            let fallback = gen::fallback::expand(input);
            quote! {
                #errors
                #fallback
            }
        }
        (Ok(()), None) => gen::fallback::expand(input),
    }
}
