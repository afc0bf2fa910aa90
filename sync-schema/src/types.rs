/// Column type of a stored field.
///
/// The mapping from Rust types is fixed: `String` -> [`Text`](SqlType::Text),
/// `bool` -> [`Bool`](SqlType::Bool), `i16`/`i32`/`i64` ->
/// [`SmallInt`](SqlType::SmallInt)/[`Integer`](SqlType::Integer)/[`BigInt`](SqlType::BigInt),
/// `f32`/`f64` -> [`Float`](SqlType::Float)/[`Double`](SqlType::Double),
/// `chrono::DateTime<Utc>` -> [`Timestamp`](SqlType::Timestamp),
/// `chrono::NaiveDateTime` -> [`NaiveTimestamp`](SqlType::NaiveTimestamp),
/// `uuid::Uuid` -> [`Uuid`](SqlType::Uuid), `Vec<u8>` -> [`Binary`](SqlType::Binary),
/// and any `#[sync(json)]` field -> [`Json`](SqlType::Json). `Option<T>` is `T`, nullable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SqlType {
    /// UTF-8 text.
    Text,
    /// Boolean.
    Bool,
    /// 16-bit integer.
    SmallInt,
    /// 32-bit integer.
    Integer,
    /// 64-bit integer.
    BigInt,
    /// 32-bit float.
    Float,
    /// 64-bit float.
    Double,
    /// UTC timestamp (`chrono::DateTime<Utc>`); TEXT in RFC 3339 on SQLite.
    Timestamp,
    /// Timestamp without zone (`chrono::NaiveDateTime`); TEXT on SQLite.
    NaiveTimestamp,
    /// UUID; TEXT on SQLite, `UUID` on Postgres.
    Uuid,
    /// Bytes.
    Binary,
    /// Any serde value stored as JSON text (`#[sync(json)]`).
    Json,
}

/// How values of a column compare, for evaluating queries in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarKind {
    /// Text compared by code point.
    Text,
    /// Booleans.
    Bool,
    /// Integers and floats compared numerically.
    Number,
    /// Timestamps compared as instants, whatever their textual precision.
    Timestamp,
    /// Values with no order (bytes, JSON); only equality.
    Opaque,
}

impl SqlType {
    /// Every type, in declaration order.
    pub const ALL: &'static [SqlType] = &[
        SqlType::Text,
        SqlType::Bool,
        SqlType::SmallInt,
        SqlType::Integer,
        SqlType::BigInt,
        SqlType::Float,
        SqlType::Double,
        SqlType::Timestamp,
        SqlType::NaiveTimestamp,
        SqlType::Uuid,
        SqlType::Binary,
        SqlType::Json,
    ];

    /// Maps the last path segment of a Rust type (and its single generic
    /// argument, for `DateTime<Utc>` and `Vec<u8>`) to a column type.
    ///
    /// Returns `None` for types outside the map; such fields need `#[sync(json)]`.
    ///
    /// ```
    /// use sync_schema::SqlType;
    /// assert_eq!(SqlType::from_rust_type("i32", None), Some(SqlType::Integer));
    /// assert_eq!(SqlType::from_rust_type("Vec", Some("u8")), Some(SqlType::Binary));
    /// assert_eq!(SqlType::from_rust_type("Vec", Some("String")), None);
    /// ```
    pub fn from_rust_type(name: &str, generic: Option<&str>) -> Option<SqlType> {
        Some(match (name, generic) {
            ("String", None) => SqlType::Text,
            ("bool", None) => SqlType::Bool,
            ("i16", None) => SqlType::SmallInt,
            ("i32", None) => SqlType::Integer,
            ("i64", None) => SqlType::BigInt,
            ("f32", None) => SqlType::Float,
            ("f64", None) => SqlType::Double,
            ("DateTime", Some("Utc")) => SqlType::Timestamp,
            ("NaiveDateTime", None) => SqlType::NaiveTimestamp,
            ("Uuid", None) => SqlType::Uuid,
            ("Vec", Some("u8")) => SqlType::Binary,
            _ => return None,
        })
    }

    /// The Rust types accepted for this column type, for error messages.
    pub fn rust_type_names() -> &'static str {
        "String, bool, i16, i32, i64, f32, f64, chrono::DateTime<Utc>, chrono::NaiveDateTime, uuid::Uuid, Vec<u8>, and Option<T> of these"
    }

    /// Variant name, as written in generated code (`SqlType::Integer` -> `"Integer"`).
    pub fn variant_name(self) -> &'static str {
        match self {
            SqlType::Text => "Text",
            SqlType::Bool => "Bool",
            SqlType::SmallInt => "SmallInt",
            SqlType::Integer => "Integer",
            SqlType::BigInt => "BigInt",
            SqlType::Float => "Float",
            SqlType::Double => "Double",
            SqlType::Timestamp => "Timestamp",
            SqlType::NaiveTimestamp => "NaiveTimestamp",
            SqlType::Uuid => "Uuid",
            SqlType::Binary => "Binary",
            SqlType::Json => "Json",
        }
    }

    /// How values of this type compare in memory.
    pub fn scalar_kind(self) -> ScalarKind {
        match self {
            SqlType::Text | SqlType::Uuid => ScalarKind::Text,
            SqlType::Bool => ScalarKind::Bool,
            SqlType::SmallInt
            | SqlType::Integer
            | SqlType::BigInt
            | SqlType::Float
            | SqlType::Double => ScalarKind::Number,
            SqlType::Timestamp | SqlType::NaiveTimestamp => ScalarKind::Timestamp,
            SqlType::Binary | SqlType::Json => ScalarKind::Opaque,
        }
    }

    /// True if the id field may have this type (`String` or `uuid::Uuid`).
    pub fn can_be_id(self) -> bool {
        matches!(self, SqlType::Text | SqlType::Uuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_documented_type() {
        let cases = [
            ("String", None, SqlType::Text),
            ("bool", None, SqlType::Bool),
            ("i16", None, SqlType::SmallInt),
            ("i32", None, SqlType::Integer),
            ("i64", None, SqlType::BigInt),
            ("f32", None, SqlType::Float),
            ("f64", None, SqlType::Double),
            ("DateTime", Some("Utc"), SqlType::Timestamp),
            ("NaiveDateTime", None, SqlType::NaiveTimestamp),
            ("Uuid", None, SqlType::Uuid),
            ("Vec", Some("u8"), SqlType::Binary),
        ];
        for (name, generic, expected) in cases {
            assert_eq!(
                SqlType::from_rust_type(name, generic),
                Some(expected),
                "{name}"
            );
        }
    }

    #[test]
    fn rejects_unmapped_types() {
        for (name, generic) in [
            ("u32", None),
            ("u64", None),
            ("Vec", Some("String")),
            ("DateTime", Some("Local")),
            ("HashMap", None),
            ("char", None),
        ] {
            assert_eq!(SqlType::from_rust_type(name, generic), None, "{name}");
        }
    }

    #[test]
    fn only_text_and_uuid_can_be_ids() {
        let ids: Vec<_> = SqlType::ALL.iter().filter(|t| t.can_be_id()).collect();
        assert_eq!(ids, [&SqlType::Text, &SqlType::Uuid]);
    }
}
