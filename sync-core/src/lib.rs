//! The typed runtime of offline-sync-kit.
//!
//! This crate holds the [`SyncModel`] trait that `#[derive(SyncModel)]`
//! implements, the typed [`Query`] builder, and the REST request
//! configuration ([`RestRequests`]) that routes a model to any REST API.
//! Applications normally use it through the `offline-sync-kit` facade.
//!
//! Every public item has one path. What an application uses is at the crate root. What a
//! custom local store or remote needs is in [`store`] (the [`LocalStore`](store::LocalStore)
//! contract, its records, ops and errors, and the untyped form of a query) and [`remote`] (the
//! [`Remote`](remote::Remote) contract and its types); the wire format of encrypted field
//! values is in [`envelope`], and the default wire protocol in [`protocol`].

#![warn(missing_docs)]

mod accounts;
mod auth;
mod backend;
mod connectivity;
mod crypto;
mod disposition;
mod engine;
pub mod envelope;
mod error;
mod events;
mod http;
mod manager;
mod mask;
mod model;
mod options;
mod query;
mod realtime;
pub mod remote;
mod rest;
pub mod store;
mod ws_driver;
mod ws_remote;

/// The serde types of the default wire protocol: the `sync-protocol` crate, which sync-server
/// uses too.
pub use sync_protocol as protocol;

pub use crate::accounts::{AccountStores, Credentials, SignOut, SyncAccounts};
pub use crate::auth::{TokenError, TokenProvider};
pub use crate::backend::{
    AlreadyExists, Conditional, CountAt, NextPage, Paging, RestBackend, RestPull, ServerIds, Since,
    TimeFormat, Tombstone, UpdatedAt, VersionSource,
};
pub use crate::connectivity::{
    Connectivity, ManualConnectivity, Observation, ProbeConnectivity, RemoteConnectivity,
};
pub use crate::crypto::{
    CryptoError, EncryptedField, FieldKey, KeyProvider, NotQueryable, ReencryptReport, StaticKeys,
};
pub use crate::error::{Error, JsonKind, RestError, Result};
pub use crate::events::{
    SyncEvent, SyncEventType, SyncProgress, SyncReport, SyncState, SyncStatus,
};
pub use crate::http::{HttpRemote, HttpRemoteBuilder, DEFAULT_MAX_RESPONSE_BYTES};
pub use crate::manager::{
    EntityMetadata, LiveQuery, MetadataComparison, ModelConfig, RealtimeHandle, RemoteSyncMetadata,
    SyncManager, SyncManagerBuilder, SyncMetadata, SyncRun, VerifyReport,
};
pub use crate::mask::FieldMask;
pub use crate::model::SyncModel;
pub use crate::options::{
    ConflictContext, ConflictResolver, ConflictStrategy, DeleteStrategy, FetchStrategy,
    RetryPolicy, SaveStrategy, SyncDirection, SyncOptions, WriteOptions,
};
pub use crate::query::{
    Comparable, Condition, Direction, Field, Operand, Order, Ordered, Query, Textual,
};
pub use crate::realtime::{MessageFormat, MessageHandler, SyncEventMapper, WebSocketConfig};
pub use crate::rest::{PullMode, ResponseTransformer, RestMethod, RestRequest, RestRequests};
pub use crate::ws_remote::WebSocketRemote;
pub use sync_schema::{FieldSpec, ModelSchema, RenameRule, ScalarKind, SqlType};

/// Items used by the code `#[derive(SyncModel)]` generates. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::backend::{
        CountAt, NextPage, Paging, RestBackend, RestPull, Since, TimeFormat, VersionSource,
    };
    pub use crate::crypto::EncryptedField;
    pub use crate::error::Error;
    pub use crate::mask::FieldMask;
    pub use crate::model::SyncModel;
    pub use crate::query::Field;
    pub use crate::rest::{PullMode, RestMethod, RestRequest, RestRequests};
    pub use serde_json;
    pub use std::borrow::Cow;
    pub use std::result::Result;
    pub use std::string::ToString;
    pub use sync_schema::{FieldSpec, ModelSchema, SqlType};

    /// Parses a JSON literal the derive validated at compile time.
    pub fn json_object_literal(text: &str) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(map)) => map,
            // The derive rejects anything but a JSON object at compile time.
            _ => serde_json::Map::new(),
        }
    }

    /// Parses a JSON scalar the derive wrote from a literal it checked at compile time.
    pub fn json_value_literal(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
    }

    /// A field's value as JSON.
    pub fn to_field_json<T: serde::Serialize + ?Sized>(
        model: &'static str,
        field: &'static str,
        value: &T,
    ) -> Result<serde_json::Value, Error> {
        serde_json::to_value(value).map_err(|source| Error::SerializeField {
            model,
            field,
            source,
        })
    }

    /// A field's value from JSON, without cloning the input.
    pub fn from_field_json<T: serde::de::DeserializeOwned>(
        model: &'static str,
        field: &'static str,
        value: &serde_json::Value,
    ) -> Result<T, Error> {
        T::deserialize(value).map_err(|source| Error::InvalidDeltaValue {
            model,
            field,
            source,
        })
    }

    /// True if two values of a `#[sync(json)]` field serialise differently
    /// (a value that cannot be serialised counts as changed).
    pub fn json_differs<T: serde::Serialize>(a: &T, b: &T) -> bool {
        match (serde_json::to_value(a), serde_json::to_value(b)) {
            (Ok(a), Ok(b)) => a != b,
            _ => true,
        }
    }

    /// Wraps a `fn(Value) -> Value` named in `response_transformer = "..."`.
    pub fn transformer(
        f: fn(serde_json::Value) -> serde_json::Value,
    ) -> crate::rest::ResponseTransformer {
        std::sync::Arc::new(f)
    }
}
