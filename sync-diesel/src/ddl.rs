//! SQL text derived from a model's schema: column types, CREATE TABLE and
//! indexes. Shared by the store's auto-migration and the migration generator,
//! so both always create the same table.

use std::fmt::Write as _;

use sync_schema::{FieldSpec, ModelSchema, SqlType};

/// The SQL dialect a store or a generated migration targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// SQLite (bundled libsqlite3).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// Lower-case name, used for directory names (`migrations/sqlite`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Column type of `sql_type` in this dialect.
    ///
    /// SQLite stores timestamps as fixed-width UTC text
    /// (`2024-05-01T12:00:00.000000000Z`, so text order is time order), UUIDs
    /// as lower-case hyphenated text, booleans as 0/1 and JSON as text.
    /// Postgres uses `TIMESTAMPTZ`, `TIMESTAMP`, `UUID`, `BOOLEAN`, `BYTEA`,
    /// and `TEXT COLLATE "C"` for text and JSON so that text compares by
    /// code point on both backends.
    pub fn column_type(self, sql_type: SqlType) -> &'static str {
        match self {
            Backend::Sqlite => match sql_type {
                SqlType::Bool => "BOOLEAN",
                SqlType::SmallInt => "SMALLINT",
                SqlType::Integer => "INTEGER",
                SqlType::BigInt => "BIGINT",
                SqlType::Float => "FLOAT",
                SqlType::Double => "DOUBLE",
                SqlType::Binary => "BLOB",
                // Text, Json, Timestamp, NaiveTimestamp, Uuid and any later addition
                _ => "TEXT",
            },
            Backend::Postgres => match sql_type {
                SqlType::Bool => "BOOLEAN",
                SqlType::SmallInt => "SMALLINT",
                SqlType::Integer => "INTEGER",
                SqlType::BigInt => "BIGINT",
                SqlType::Float => "REAL",
                SqlType::Double => "DOUBLE PRECISION",
                SqlType::Timestamp => "TIMESTAMPTZ",
                SqlType::NaiveTimestamp => "TIMESTAMP",
                SqlType::Uuid => "UUID",
                SqlType::Binary => "BYTEA",
                _ => "TEXT COLLATE \"C\"",
            },
        }
    }

    /// Type of the local timestamps (`_created_at`, outbox times).
    pub(crate) fn timestamp_type(self) -> &'static str {
        self.column_type(SqlType::Timestamp)
    }

    /// SQL literal of the value a new NOT NULL column gets in existing rows.
    pub(crate) fn zero_literal(self, sql_type: SqlType) -> &'static str {
        match (self, sql_type) {
            (_, SqlType::Bool) => "FALSE",
            (
                _,
                SqlType::SmallInt
                | SqlType::Integer
                | SqlType::BigInt
                | SqlType::Float
                | SqlType::Double,
            ) => "0",
            (Backend::Sqlite, SqlType::Timestamp) => "'1970-01-01T00:00:00.000000000Z'",
            (Backend::Sqlite, SqlType::NaiveTimestamp) => "'1970-01-01T00:00:00.000000000'",
            (Backend::Postgres, SqlType::Timestamp) => "'1970-01-01T00:00:00Z'",
            (Backend::Postgres, SqlType::NaiveTimestamp) => "'1970-01-01T00:00:00'",
            (_, SqlType::Uuid) => "'00000000-0000-0000-0000-000000000000'",
            (Backend::Sqlite, SqlType::Binary) => "X''",
            (Backend::Postgres, SqlType::Binary) => "'\\x'",
            (_, SqlType::Json) => "'null'",
            _ => "''",
        }
    }
}

/// Quotes an SQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Bookkeeping column names, in the order the store selects them.
pub(crate) const META_COLUMNS: [&str; 8] = [
    "_version",
    "_created_at",
    "_updated_at",
    "_synced",
    "_deleted",
    "_user_id",
    "_sync_error",
    "_sync_attempts",
];

/// Definition of one model column (`"title" TEXT NOT NULL`).
pub(crate) fn column_definition(field: &FieldSpec, backend: Backend) -> String {
    let mut out = format!(
        "{} {}",
        ident(field.column),
        backend.column_type(field.sql_type)
    );
    if field.id {
        out.push_str(" PRIMARY KEY NOT NULL");
    } else if !field.nullable {
        out.push_str(" NOT NULL");
    }
    out
}

fn meta_definitions(backend: Backend) -> [String; 8] {
    let ts = backend.timestamp_type();
    let text = backend.column_type(SqlType::Text);
    [
        "\"_version\" BIGINT NOT NULL DEFAULT 0".to_owned(),
        format!("\"_created_at\" {ts} NOT NULL"),
        format!("\"_updated_at\" {ts} NOT NULL"),
        "\"_synced\" BOOLEAN NOT NULL DEFAULT FALSE".to_owned(),
        "\"_deleted\" BOOLEAN NOT NULL DEFAULT FALSE".to_owned(),
        format!("\"_user_id\" {text}"),
        format!("\"_sync_error\" {text}"),
        "\"_sync_attempts\" INTEGER NOT NULL DEFAULT 0".to_owned(),
    ]
}

/// Name of the index on an `#[sync(index)]` field.
pub(crate) fn index_name(table: &str, column: &str) -> String {
    format!("{table}_{column}_idx")
}

/// `CREATE TABLE` for the model (model columns, then the bookkeeping columns).
pub(crate) fn create_table(schema: &ModelSchema, backend: Backend, if_not_exists: bool) -> String {
    let mut out = String::from("CREATE TABLE ");
    if if_not_exists {
        out.push_str("IF NOT EXISTS ");
    }
    out.push_str(&ident(schema.table));
    out.push_str(" (\n");
    let mut lines: Vec<String> = schema
        .fields
        .iter()
        .map(|f| column_definition(f, backend))
        .collect();
    lines.extend(meta_definitions(backend));
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { "" } else { "," };
        let _ = writeln!(out, "    {line}{sep}");
    }
    out.push_str(");\n");
    out
}

/// `CREATE INDEX` for one indexed field.
pub(crate) fn create_index(table: &str, column: &str, if_not_exists: bool) -> String {
    format!(
        "CREATE INDEX {}{} ON {} ({});\n",
        if if_not_exists { "IF NOT EXISTS " } else { "" },
        ident(&index_name(table, column)),
        ident(table),
        ident(column)
    )
}

/// `DROP INDEX` for one indexed field.
pub(crate) fn drop_index(table: &str, column: &str) -> String {
    format!(
        "DROP INDEX IF EXISTS {};\n",
        ident(&index_name(table, column))
    )
}

/// The statements that create the model's table and indexes.
pub(crate) fn create_model_statements(
    schema: &ModelSchema,
    backend: Backend,
    if_not_exists: bool,
) -> Vec<String> {
    let mut out = vec![create_table(schema, backend, if_not_exists)];
    out.extend(
        schema
            .indexed_fields()
            .map(|f| create_index(schema.table, f.column, if_not_exists)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_escaped() {
        assert_eq!(ident("todos"), "\"todos\"");
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn every_type_has_a_column_type_on_both_backends() {
        for ty in SqlType::ALL {
            assert!(!Backend::Sqlite.column_type(*ty).is_empty());
            assert!(!Backend::Postgres.column_type(*ty).is_empty());
        }
        assert_eq!(Backend::Sqlite.column_type(SqlType::Timestamp), "TEXT");
        assert_eq!(Backend::Postgres.column_type(SqlType::Uuid), "UUID");
    }
}
