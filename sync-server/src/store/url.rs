//! Which backend serves a database URL.

use crate::error::{Error, Result};

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DatabaseUrl {
    /// A SQLite file.
    Sqlite(String),
    /// A Postgres connection URL.
    Postgres(String),
}

impl DatabaseUrl {
    pub(crate) fn parse(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() || path.contains("://") {
            return Err(Error::UnsupportedDatabase(url.to_owned()));
        }
        if path == ":memory:" {
            return Err(Error::Config(
                "an in-memory SQLite database would be private to each pooled connection; \
                 use a file (e.g. in a temporary directory)"
                    .into(),
            ));
        }
        Ok(Self::Sqlite(path.to_owned()))
    }
}
