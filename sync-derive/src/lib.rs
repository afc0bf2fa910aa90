//! `#[derive(SyncModel)]` for offline-sync-kit.
//!
//! Use it through the `offline-sync-kit` facade, which re-exports it next to
//! the `SyncModel` trait. The expansion is written against the facade's hidden
//! `__private` module; `#[sync(crate = "...")]` re-points it.

#![warn(missing_docs)]

mod expand;
mod gen;
mod internals;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Implements `SyncModel` for a struct with named fields.
///
/// Container attributes: `#[sync(model_type = "...", endpoint = "...", table = "...",
/// crate = "...", diesel_table, rest(get(..), post(..), put(..), patch(..), delete(..)))]`.
/// Field attributes: `id`, `index`, `json`, `skip`, `skip_delta`,
/// `encrypted` (end-to-end, see `sync_core::envelope`), `column = "..."`. Serde's `rename` and
/// `rename_all` are honoured; a field serde skips must also be `#[sync(skip)]`.
#[proc_macro_derive(SyncModel, attributes(sync))]
pub fn derive_sync_model(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}

#[cfg(test)]
mod tests;
