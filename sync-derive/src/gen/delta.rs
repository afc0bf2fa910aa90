use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::internals::ast::Container;

/// `fn try_to_delta_json(&self, mask)`.
pub(crate) fn to_delta_json(cont: &Container<'_>, rt: &TokenStream) -> TokenStream {
    let model_type = &cont.model_type;
    let count = cont.stored().count();
    let inserts = cont.stored().map(|f| {
        let member = f.ident;
        let position = f.position.unwrap_or(0);
        let wire = &f.wire_name;
        quote! {
            if mask.contains(#position) {
                map.insert(
                    #rt::ToString::to_string(#wire),
                    #rt::to_field_json(#model_type, #wire, &self.#member)?,
                );
            }
        }
    });
    quote! {
        fn try_to_delta_json(
            &self,
            mask: #rt::FieldMask,
        ) -> #rt::Result<#rt::serde_json::Map<::std::string::String, #rt::serde_json::Value>, #rt::Error> {
            let mask = if <Self as #rt::SyncModel>::needs_full_update(mask) {
                #rt::FieldMask::all(#count)
            } else {
                mask
            };
            let mut map = #rt::serde_json::Map::new();
            #(#inserts)*
            #rt::Result::Ok(map)
        }
    }
}

/// `fn apply_delta(&mut self, delta)`: every value is deserialised before
/// anything is assigned, so an error leaves the model unchanged.
pub(crate) fn apply_delta(cont: &Container<'_>, rt: &TokenStream) -> TokenStream {
    let model_type = &cont.model_type;
    let known = cont
        .stored()
        .map(|f| f.wire_name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let slots = cont.stored().map(|f| {
        let slot = format_ident!("__slot_{}", f.position.unwrap_or(0));
        let ty = f.ty;
        quote!(let mut #slot: ::std::option::Option<#ty> = ::std::option::Option::None;)
    });
    let arms = cont.stored().map(|f| {
        let slot = format_ident!("__slot_{}", f.position.unwrap_or(0));
        let wire = &f.wire_name;
        let position = f.position.unwrap_or(0);
        quote! {
            #wire => {
                #slot = ::std::option::Option::Some(#rt::from_field_json(#model_type, #wire, value)?);
                mask.insert(#position);
            }
        }
    });
    let assigns = cont.stored().map(|f| {
        let slot = format_ident!("__slot_{}", f.position.unwrap_or(0));
        let member = f.ident;
        quote! {
            if let ::std::option::Option::Some(value) = #slot {
                self.#member = value;
            }
        }
    });
    quote! {
        fn apply_delta(
            &mut self,
            delta: &#rt::serde_json::Map<::std::string::String, #rt::serde_json::Value>,
        ) -> #rt::Result<#rt::FieldMask, #rt::Error> {
            #(#slots)*
            let mut mask = #rt::FieldMask::EMPTY;
            for (key, value) in delta {
                match key.as_str() {
                    #(#arms)*
                    other => {
                        return #rt::Result::Err(#rt::Error::UnknownDeltaField {
                            model: #model_type,
                            key: #rt::ToString::to_string(other),
                            known: #rt::ToString::to_string(#known),
                        });
                    }
                }
            }
            #(#assigns)*
            #rt::Result::Ok(mask)
        }
    }
}

/// `fn field_value(&self, position)`.
pub(crate) fn field_value(cont: &Container<'_>, rt: &TokenStream) -> TokenStream {
    let model_type = &cont.model_type;
    let arms = cont.stored().map(|f| {
        let member = f.ident;
        let position = f.position.unwrap_or(0);
        let wire = &f.wire_name;
        quote!(#position => #rt::to_field_json(#model_type, #wire, &self.#member),)
    });
    quote! {
        fn field_value(&self, position: usize) -> #rt::Result<#rt::serde_json::Value, #rt::Error> {
            match position {
                #(#arms)*
                other => #rt::Result::Err(#rt::Error::UnknownField {
                    model: #model_type,
                    name: ::std::format!("#{}", other),
                }),
            }
        }
    }
}
