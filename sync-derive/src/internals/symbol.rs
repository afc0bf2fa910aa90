use std::fmt::{self, Display};

use syn::{Ident, Path};

/// An attribute key, named once.
#[derive(Copy, Clone)]
pub(crate) struct Symbol(pub(crate) &'static str);

pub(crate) const SYNC: Symbol = Symbol("sync");
pub(crate) const SERDE: Symbol = Symbol("serde");

// container
pub(crate) const MODEL_TYPE: Symbol = Symbol("model_type");
pub(crate) const ENDPOINT: Symbol = Symbol("endpoint");
pub(crate) const TABLE: Symbol = Symbol("table");
pub(crate) const REST: Symbol = Symbol("rest");
pub(crate) const CRATE: Symbol = Symbol("crate");
pub(crate) const DIESEL_TABLE: Symbol = Symbol("diesel_table");
pub(crate) const PRIORITY: Symbol = Symbol("priority");
pub(crate) const PULL: Symbol = Symbol("pull");
pub(crate) const BACKEND: Symbol = Symbol("backend");

// field
pub(crate) const ID: Symbol = Symbol("id");
pub(crate) const INDEX: Symbol = Symbol("index");
pub(crate) const JSON: Symbol = Symbol("json");
pub(crate) const SKIP: Symbol = Symbol("skip");
pub(crate) const SKIP_DELTA: Symbol = Symbol("skip_delta");
pub(crate) const ENCRYPTED: Symbol = Symbol("encrypted");
pub(crate) const COLUMN: Symbol = Symbol("column");

// rest methods
pub(crate) const GET: Symbol = Symbol("get");
pub(crate) const POST: Symbol = Symbol("post");
pub(crate) const PUT: Symbol = Symbol("put");
pub(crate) const PATCH: Symbol = Symbol("patch");
pub(crate) const DELETE: Symbol = Symbol("delete");

// rest options
pub(crate) const URL: Symbol = Symbol("url");
pub(crate) const URL_PARAMETERS: Symbol = Symbol("url_parameters");
pub(crate) const HEADER: Symbol = Symbol("header");
pub(crate) const TOP_LEVEL_KEY: Symbol = Symbol("top_level_key");
pub(crate) const SUPPLEMENTAL: Symbol = Symbol("supplemental");
pub(crate) const RESPONSE_DATA_KEY: Symbol = Symbol("response_data_key");
pub(crate) const TIMEOUT_MS: Symbol = Symbol("timeout_ms");
pub(crate) const RETRY_COUNT: Symbol = Symbol("retry_count");
pub(crate) const SEND_AS: Symbol = Symbol("send_as");
pub(crate) const RESPONSE_TRANSFORMER: Symbol = Symbol("response_transformer");

// serde keys that matter to the schema
pub(crate) const RENAME: Symbol = Symbol("rename");
pub(crate) const RENAME_ALL: Symbol = Symbol("rename_all");
pub(crate) const DEFAULT: Symbol = Symbol("default");
pub(crate) const SERIALIZE: Symbol = Symbol("serialize");
pub(crate) const DESERIALIZE: Symbol = Symbol("deserialize");
pub(crate) const FLATTEN: Symbol = Symbol("flatten");
pub(crate) const SKIP_DESERIALIZING: Symbol = Symbol("skip_deserializing");
pub(crate) const SKIP_SERIALIZING: Symbol = Symbol("skip_serializing");
pub(crate) const WITH: Symbol = Symbol("with");
pub(crate) const SERIALIZE_WITH: Symbol = Symbol("serialize_with");
pub(crate) const DESERIALIZE_WITH: Symbol = Symbol("deserialize_with");

pub(crate) const CONTAINER_KEYS: &[Symbol] = &[
    MODEL_TYPE,
    ENDPOINT,
    TABLE,
    PRIORITY,
    REST,
    PULL,
    BACKEND,
    CRATE,
    DIESEL_TABLE,
];
pub(crate) const FIELD_KEYS: &[Symbol] = &[ID, INDEX, JSON, SKIP, SKIP_DELTA, ENCRYPTED, COLUMN];
pub(crate) const REST_METHODS: &[Symbol] = &[GET, POST, PUT, PATCH, DELETE];
pub(crate) const REST_KEYS: &[Symbol] = &[
    URL,
    URL_PARAMETERS,
    HEADER,
    TOP_LEVEL_KEY,
    SUPPLEMENTAL,
    RESPONSE_DATA_KEY,
    TIMEOUT_MS,
    RETRY_COUNT,
    RESPONSE_TRANSFORMER,
    SEND_AS,
];

/// "`a`, `b` or `c`", for "expected one of" messages.
pub(crate) fn one_of(symbols: &[Symbol]) -> String {
    let names: Vec<String> = symbols.iter().map(|s| format!("`{}`", s.0)).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {}", rest.join(", "), last),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

impl PartialEq<Symbol> for Ident {
    fn eq(&self, word: &Symbol) -> bool {
        self == word.0
    }
}

impl PartialEq<Symbol> for &Ident {
    fn eq(&self, word: &Symbol) -> bool {
        *self == word.0
    }
}

impl PartialEq<Symbol> for Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl PartialEq<Symbol> for &Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl Display for Symbol {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.0)
    }
}
