use std::fmt;

/// Errors of the sync runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A delta carried a value that does not deserialise into the field's type.
    /// The model was left unchanged.
    #[error("delta for {model} has a value of the wrong type for field `{field}`")]
    InvalidDeltaValue {
        /// Model type.
        model: &'static str,
        /// Wire name of the field.
        field: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },

    /// A delta carried a key that is not a field of the model. The model was left unchanged.
    #[error("delta for {model} has unknown field `{key}`; known fields: {known}")]
    UnknownDeltaField {
        /// Model type.
        model: &'static str,
        /// The offending key.
        key: String,
        /// Wire names of the model's fields, comma separated.
        known: String,
    },

    /// A field of the model could not be serialised to JSON.
    #[error("field `{field}` of {model} cannot be serialised to JSON")]
    SerializeField {
        /// Model type.
        model: &'static str,
        /// Wire name of the field.
        field: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },

    /// A field name given to a [`FieldMask`](crate::FieldMask) conversion is not a field of the model.
    #[error("{model} has no field named `{name}`")]
    UnknownField {
        /// Model type.
        model: &'static str,
        /// The name that was not found.
        name: String,
    },

    /// A REST request could not be built or its response not read.
    #[error(transparent)]
    Rest(#[from] RestError),

    /// The local store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),

    /// The remote failed or refused.
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),

    /// The operation needs the remote and it is offline (nothing was changed).
    #[error("the remote is offline; {what} needs it, and nothing was changed")]
    Offline {
        /// What needed the remote.
        what: &'static str,
    },

    /// The remote refused a write that had to succeed remotely (nothing was kept locally).
    #[error("the remote refused the {what}: {message}")]
    RemoteRefused {
        /// What was refused.
        what: &'static str,
        /// Why.
        message: String,
    },

    /// A stored or received record does not deserialise into the model.
    #[error("{model} `{id}` does not match the model")]
    Decode {
        /// Model type.
        model: &'static str,
        /// Record id.
        id: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },

    /// A record id that cannot be synced: empty, `.` or `..` (a URL parser would resolve it
    /// as a path segment), or holding a control character. Nothing was written.
    #[error("{model} id {id:?} cannot be used: {reason}")]
    InvalidId {
        /// Model type.
        model: &'static str,
        /// The id.
        id: String,
        /// Why.
        reason: &'static str,
    },

    /// A model was used that was not registered with the manager.
    #[error("model `{model}` is not registered; add `.model::<{struct_name}>()` to the SyncManager builder")]
    NotRegistered {
        /// Model type.
        model: &'static str,
        /// Rust type name.
        struct_name: &'static str,
    },

    /// The manager's configuration is invalid. (Only this crate's own checks; an invalid
    /// remote configuration is a [`RemoteError::Config`](crate::remote::RemoteError::Config)
    /// with its source.)
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The manager was shut down.
    #[error("the sync manager has been shut down")]
    Shutdown,

    /// The local store holds another user's data: opening it as `requested` (`None`: without a
    /// user id) would show that user's rows and send that user's queued changes with these
    /// credentials. Each user needs a store of their own (see `SyncAccounts`).
    #[error("the local store belongs to user {owner:?}, not {}", requested.as_deref().map_or_else(|| "an anonymous session".to_owned(), |u| format!("{u:?}")))]
    StoreOwnedByAnotherUser {
        /// The user the store belongs to.
        owner: String,
        /// The user the manager was built for.
        requested: Option<String>,
    },

    /// The remote refused the credentials and the token provider gave no token it takes:
    /// nothing was sent, the queue is kept (see `SyncManagerBuilder::token_provider`).
    #[error("the remote needs new credentials: {reason}")]
    NeedsAuth {
        /// Why: the provider's error, or the remote's refusal.
        reason: String,
    },

    /// The user is not signed in (see `SyncAccounts`): their sync is paused.
    #[error("user {user:?} is not signed in")]
    NotSignedIn {
        /// The user asked for.
        user: String,
    },

    /// A task the manager ran in the background panicked or was cancelled (a store call on
    /// the blocking pool, a prefetched pull page). The [`JoinError`](tokio::task::JoinError)
    /// says which, and carries the panic's payload.
    #[error("background task failed: {task}")]
    Task {
        /// What the task was doing.
        task: &'static str,
        /// Tokio's report of how it ended.
        #[source]
        source: tokio::task::JoinError,
    },

    /// A query uses something the target cannot express.
    #[error("query cannot be expressed {target}: {reason}")]
    UnsupportedQuery {
        /// Where the query was to be translated (e.g. "as URL query parameters").
        target: &'static str,
        /// What part of it cannot be translated.
        reason: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `err` and its chain of sources, joined with `": "`: the text kept where only a string
/// travels (an op's `last_error`, the status, events, logs). A source whose text the chain
/// already ends with (an error that prints its source too) is not repeated.
pub(crate) fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !part.is_empty() && !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

/// Problems building a REST request from a [`RestRequest`](crate::RestRequest) or reading its response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestError {
    /// A `{placeholder}` in the URL template had no value.
    #[error("URL template `{template}` needs `{{{name}}}`, but neither url_parameters nor the record has it")]
    UnfilledPlaceholder {
        /// The template.
        template: String,
        /// The placeholder name.
        name: String,
    },
    /// The value for a placeholder is not a string, number or boolean.
    #[error("URL template `{template}`: `{{{name}}}` has a {kind} value; only strings, numbers and booleans fit in a URL")]
    PlaceholderNotScalar {
        /// The template.
        template: String,
        /// The placeholder name.
        name: String,
        /// JSON kind of the value found.
        kind: JsonKind,
    },
    /// A `{` without its `}` (or an empty `{}`) in a URL template.
    #[error("URL template `{template}` has an unclosed or empty `{{`")]
    MalformedTemplate {
        /// The template.
        template: String,
    },
    /// A base URL is needed for a relative request URL and none (or a bad one) was configured.
    #[error(
        "relative URL `{url}` needs a base URL starting with http:// or https://, got `{base}`"
    )]
    BadBaseUrl {
        /// The relative URL.
        url: String,
        /// The base URL given.
        base: String,
    },
    /// `response_data_key` names a path the response does not have.
    #[error("response has no `{path}` (response_data_key): `{missing}` is missing")]
    MissingResponseKey {
        /// The configured dot path.
        path: String,
        /// The first segment that was not found.
        missing: String,
    },
}

/// The kind of a JSON value, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// `null`
    Null,
    /// an array
    Array,
    /// an object
    Object,
    /// a string, number or boolean
    Scalar,
}

impl JsonKind {
    pub(crate) fn of(value: &serde_json::Value) -> JsonKind {
        match value {
            serde_json::Value::Null => JsonKind::Null,
            serde_json::Value::Array(_) => JsonKind::Array,
            serde_json::Value::Object(_) => JsonKind::Object,
            _ => JsonKind::Scalar,
        }
    }
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonKind::Null => "null",
            JsonKind::Array => "array",
            JsonKind::Object => "object",
            JsonKind::Scalar => "scalar",
        })
    }
}
