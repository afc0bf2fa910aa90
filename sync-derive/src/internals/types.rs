//! Recognising field types for the column type map.

use syn::{GenericArgument, PathArguments, Type, TypePath};
use sync_schema::SqlType;

/// What a field's Rust type means for storage.
pub(crate) struct TypeInfo {
    /// `Option<T>` at the top.
    pub(crate) nullable: bool,
    /// The column type of `inner`, if it is in the type map.
    pub(crate) sql_type: Option<SqlType>,
}

pub(crate) fn classify(ty: &Type) -> TypeInfo {
    match option_inner(ty) {
        Some(inner) => TypeInfo {
            nullable: true,
            sql_type: scalar(inner),
        },
        None => TypeInfo {
            nullable: false,
            sql_type: scalar(ty),
        },
    }
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(TypePath { qself: None, path }) => path.segments.last(),
        Type::Group(group) => last_segment(&group.elem),
        Type::Paren(paren) => last_segment(&paren.elem),
        _ => None,
    }
}

fn single_type_arg(segment: &syn::PathSegment) -> Option<&Type> {
    let PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    let first = types.next()?;
    types.next().is_none().then_some(first)
}

fn option_inner(ty: &Type) -> Option<&Type> {
    let segment = last_segment(ty)?;
    if segment.ident != "Option" {
        return None;
    }
    single_type_arg(segment)
}

fn scalar(ty: &Type) -> Option<SqlType> {
    let segment = last_segment(ty)?;
    let name = segment.ident.to_string();
    let generic = match &segment.arguments {
        PathArguments::None => None,
        _ => Some(last_segment(single_type_arg(segment)?)?.ident.to_string()),
    };
    SqlType::from_rust_type(&name, generic.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(text: &str) -> Type {
        syn::parse_str(text).unwrap()
    }

    #[test]
    fn recognises_the_type_map() {
        let cases = [
            ("String", false, Some(SqlType::Text)),
            ("std::string::String", false, Some(SqlType::Text)),
            ("Option<i32>", true, Some(SqlType::Integer)),
            (
                "chrono::DateTime<chrono::Utc>",
                false,
                Some(SqlType::Timestamp),
            ),
            ("Option<DateTime<Utc>>", true, Some(SqlType::Timestamp)),
            ("Vec<u8>", false, Some(SqlType::Binary)),
            ("uuid::Uuid", false, Some(SqlType::Uuid)),
            ("Vec<String>", false, None),
            ("Option<Option<i32>>", true, None),
            ("u32", false, None),
            ("HashMap<String, i32>", false, None),
            ("&'static str", false, None),
        ];
        for (text, nullable, sql) in cases {
            let t = ty(text);
            let info = classify(&t);
            assert_eq!(info.nullable, nullable, "{text}");
            assert_eq!(info.sql_type, sql, "{text}");
        }
    }
}
