//! End-to-end encrypted fields (`#[sync(encrypted)]`): the keys, sealing and opening values,
//! the remote wrapper and the manager's decryption bookkeeping. What an application sees is
//! documented on the public [`envelope`](crate::envelope) module.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde_json::{json, Value};
use sync_schema::FieldSpec;
use tokio::sync::broadcast;
use zeroize::Zeroize;

use crate::events::{SyncEvent, SyncReport};
use crate::manager::SyncManager;
use crate::model::SyncModel;
use crate::remote::{ModelRoute, PushItem, PushOutcome, Remote, RemoteError, RemotePage, Traffic};
use crate::store::{JsonObject, LocalStore, RemoteRecord};

/// Envelope version tag of XChaCha20-Poly1305 values.
pub const ENVELOPE_V1: &str = "v1";
const AAD_PREFIX: &[u8] = b"osk-e2e-v1";
/// Metadata key under which undecryptable remote copies are kept.
const FAILURES_KEY: &str = "e2e.undecryptable";

/// A 256-bit field key. Its `Debug` form hides it; it is wiped when dropped.
#[derive(Clone)]
pub struct FieldKey([u8; 32]);

impl FieldKey {
    /// A key from 32 bytes (e.g. from the platform keychain).
    pub fn new(bytes: [u8; 32]) -> FieldKey {
        FieldKey(bytes)
    }

    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<FieldKey, CryptoError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| CryptoError::Random(e.to_string()))?;
        Ok(FieldKey(bytes))
    }
}

impl Drop for FieldKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for FieldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FieldKey(..)")
    }
}

/// Where field keys come from. The application registers one with
/// [`SyncManagerBuilder::field_keys`](crate::SyncManagerBuilder::field_keys).
///
/// New values are encrypted with the key [`current_key_id`](Self::current_key_id)
/// names; a value is decrypted with the key its envelope names, so old keys
/// keep working as long as the provider still has them.
pub trait KeyProvider: Send + Sync + fmt::Debug + 'static {
    /// The id of the key new values are encrypted with.
    fn current_key_id(&self) -> String;
    /// The key with this id, if the provider has it.
    fn key(&self, key_id: &str) -> Option<FieldKey>;
}

#[allow(dead_code)]
fn _object_safe(_: &dyn KeyProvider) {}

/// A [`KeyProvider`] holding its keys in memory.
///
/// ```
/// use sync_core::{FieldKey, KeyProvider, StaticKeys};
/// let keys = StaticKeys::new("2024-01", FieldKey::new([1; 32]))
///     .rotate_to("2024-06", FieldKey::new([2; 32]));
/// assert_eq!(keys.current_key_id(), "2024-06");
/// assert!(keys.key("2024-01").is_some()); // old values still decrypt
/// ```
#[derive(Debug, Clone)]
pub struct StaticKeys {
    current: String,
    keys: HashMap<String, FieldKey>,
}

impl StaticKeys {
    /// One key, the current one.
    pub fn new(key_id: impl Into<String>, key: FieldKey) -> StaticKeys {
        let current = key_id.into();
        let mut keys = HashMap::new();
        keys.insert(current.clone(), key);
        StaticKeys { current, keys }
    }

    /// Adds an older key, used only to decrypt.
    #[must_use]
    pub fn with_old_key(mut self, key_id: impl Into<String>, key: FieldKey) -> StaticKeys {
        self.keys.insert(key_id.into(), key);
        self
    }

    /// Adds a key and makes it the current one (the previous keys still decrypt).
    #[must_use]
    pub fn rotate_to(mut self, key_id: impl Into<String>, key: FieldKey) -> StaticKeys {
        self.current = key_id.into();
        self.keys.insert(self.current.clone(), key);
        self
    }
}

impl KeyProvider for StaticKeys {
    fn current_key_id(&self) -> String {
        self.current.clone()
    }

    fn key(&self, key_id: &str) -> Option<FieldKey> {
        self.keys.get(key_id).cloned()
    }
}

/// Why a field value could not be encrypted or decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The key provider has no key with this id.
    #[error(
        "no field key `{key_id}` for `{field}` of {model} `{id}`; register it with the KeyProvider"
    )]
    UnknownKey {
        /// Model type.
        model: String,
        /// Record id.
        id: String,
        /// Wire name of the field.
        field: String,
        /// The key id asked for.
        key_id: String,
    },
    /// The ciphertext does not authenticate: a wrong key under that id, an
    /// altered value, or a value moved from another record or field.
    #[error("`{field}` of {model} `{id}` does not decrypt with key `{key_id}`: the key is wrong, or the value was altered or copied from another record or field")]
    Authentication {
        /// Model type.
        model: String,
        /// Record id.
        id: String,
        /// Wire name of the field.
        field: String,
        /// The key id of the envelope.
        key_id: String,
    },
    /// The value is not an encrypted envelope of a version this build reads.
    #[error("`{field}` of {model} `{id}` is not an encrypted value ({reason})")]
    Malformed {
        /// Model type.
        model: String,
        /// Record id.
        id: String,
        /// Wire name of the field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The operating system's random generator failed.
    #[error("no random nonce: {0}")]
    Random(String),
}

/// A typed handle of an `#[sync(encrypted)]` field: it offers no filters and
/// no orderings, since neither can run on ciphertext at the remote.
pub struct EncryptedField<M, T> {
    spec: &'static FieldSpec,
    _marker: PhantomData<fn() -> (M, T)>,
}

impl<M, T> EncryptedField<M, T> {
    /// A handle to the field described by `spec`. Used by generated code.
    #[doc(hidden)]
    pub const fn new(spec: &'static FieldSpec) -> Self {
        EncryptedField {
            spec,
            _marker: PhantomData,
        }
    }

    /// The field's schema entry.
    pub fn spec(&self) -> &'static FieldSpec {
        self.spec
    }
}

/// Implemented by no type: it turns a filter or an ordering on an encrypted field into a
/// compile error that says why, instead of "method not found".
#[diagnostic::on_unimplemented(
    message = "`{Self}` is an `#[sync(encrypted)]` field: it cannot be filtered or ordered",
    label = "this field is encrypted",
    note = "the remote and the SQL store compare ciphertext, so a filter or an ordering on an \
            encrypted field cannot run; remove `#[sync(encrypted)]` from the field, or filter \
            the loaded models in memory"
)]
pub trait NotQueryable {}

/// The query methods of a plain [`Field`](crate::Field), each refused at compile time by
/// [`NotQueryable`].
#[allow(clippy::needless_pass_by_value, missing_docs)]
impl<M, T> EncryptedField<M, T> {
    #[doc(hidden)]
    pub fn eq<V>(self, _value: V) -> crate::Condition<M>
    where
        Self: NotQueryable,
    {
        unreachable_by_bound()
    }
    #[doc(hidden)]
    pub fn ne<V>(self, _value: V) -> crate::Condition<M>
    where
        Self: NotQueryable,
    {
        unreachable_by_bound()
    }
    #[doc(hidden)]
    pub fn in_list<V>(self, _values: V) -> crate::Condition<M>
    where
        Self: NotQueryable,
    {
        unreachable_by_bound()
    }
    #[doc(hidden)]
    pub fn gt<V>(self, _value: V) -> crate::Condition<M>
    where
        Self: NotQueryable,
    {
        unreachable_by_bound()
    }
    #[doc(hidden)]
    pub fn ge<V>(self, _value: V) -> crate::Condition<M>
    where
        Self: NotQueryable,
    {
        unreachable_by_bound()
    }
    #[doc(hidden)]
    pub fn lt<V>(self, _value: V) -> crate::Condition<M>
    where
        Self: NotQueryable,
    {
        unreachable_by_bound()
    }
    #[doc(hidden)]
    pub fn le<V>(self, _value: V) -> crate::Condition<M>
    where
        Self: NotQueryable,
    {
        unreachable_by_bound()
    }
    #[doc(hidden)]
    pub fn contains<V>(self, _value: V) -> crate::Condition<M>
    where
        Self: NotQueryable,
    {
        unreachable_by_bound()
    }
    #[doc(hidden)]
    pub fn starts_with<V>(self, _value: V) -> crate::Condition<M>
    where
        Self: NotQueryable,
    {
        unreachable_by_bound()
    }
    #[doc(hidden)]
    pub fn ends_with<V>(self, _value: V) -> crate::Condition<M>
    where
        Self: NotQueryable,
    {
        unreachable_by_bound()
    }
    #[doc(hidden)]
    pub fn is_null(self) -> crate::Condition<M>
    where
        Self: NotQueryable,
    {
        unreachable_by_bound()
    }
    #[doc(hidden)]
    pub fn is_not_null(self) -> crate::Condition<M>
    where
        Self: NotQueryable,
    {
        unreachable_by_bound()
    }
    #[doc(hidden)]
    pub fn asc(self) -> crate::Order<M>
    where
        Self: NotQueryable,
    {
        unreachable_by_bound()
    }
    #[doc(hidden)]
    pub fn desc(self) -> crate::Order<M>
    where
        Self: NotQueryable,
    {
        unreachable_by_bound()
    }
}

/// The body of a method whose `Self: NotQueryable` bound no type meets: it cannot be called.
fn unreachable_by_bound() -> ! {
    unreachable!("NotQueryable is implemented by no type")
}

impl<M, T> Clone for EncryptedField<M, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M, T> Copy for EncryptedField<M, T> {}

impl<M, T> fmt::Debug for EncryptedField<M, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EncryptedField")
            .field(&self.spec.name)
            .finish()
    }
}

fn associated_data(model: &str, id: &str, field: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(AAD_PREFIX.len() + 12 + model.len() + id.len() + field.len());
    out.extend_from_slice(AAD_PREFIX);
    for part in [model, id, field] {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// Encrypts one field value into a `v1` envelope under the provider's current key.
pub fn seal_value(
    keys: &dyn KeyProvider,
    model: &str,
    id: &str,
    field: &str,
    value: &Value,
) -> Result<Value, CryptoError> {
    let key_id = keys.current_key_id();
    let key = keys.key(&key_id).ok_or_else(|| CryptoError::UnknownKey {
        model: model.to_owned(),
        id: id.to_owned(),
        field: field.to_owned(),
        key_id: key_id.clone(),
    })?;
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).map_err(|e| CryptoError::Random(e.to_string()))?;
    let mut plaintext = serde_json::to_vec(value).unwrap_or_default();
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let aad = associated_data(model, id, field);
    let sealed = cipher.encrypt(
        &XNonce::from(nonce),
        Payload {
            msg: &plaintext,
            aad: &aad,
        },
    );
    plaintext.zeroize();
    let sealed = sealed.map_err(|_| CryptoError::Malformed {
        model: model.to_owned(),
        id: id.to_owned(),
        field: field.to_owned(),
        reason: "the value is too large to encrypt".into(),
    })?;
    Ok(json!({
        "$enc": ENVELOPE_V1,
        "kid": key_id,
        "n": B64.encode(nonce),
        "c": B64.encode(sealed),
    }))
}

/// The key id of an envelope, if `value` is one.
pub fn envelope_key_id(value: &Value) -> Option<&str> {
    let object = value.as_object()?;
    object.get("$enc")?.as_str()?;
    object.get("kid")?.as_str()
}

/// Decrypts a `v1` envelope made by [`seal_value`] for the same model, id and field.
pub fn open_value(
    keys: &dyn KeyProvider,
    model: &str,
    id: &str,
    field: &str,
    envelope: &Value,
) -> Result<Value, CryptoError> {
    let malformed = |reason: &str| CryptoError::Malformed {
        model: model.to_owned(),
        id: id.to_owned(),
        field: field.to_owned(),
        reason: reason.to_owned(),
    };
    let object = envelope
        .as_object()
        .ok_or_else(|| malformed("expected an object with `$enc`, `kid`, `n` and `c`"))?;
    let text = |name: &str| {
        object
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(&format!("`{name}` is missing or not a string")))
    };
    let version = text("$enc")?;
    if version != ENVELOPE_V1 {
        return Err(malformed(&format!(
            "envelope version `{version}`; this build reads `{ENVELOPE_V1}`"
        )));
    }
    let key_id = text("kid")?;
    let nonce = B64
        .decode(text("n")?)
        .map_err(|_| malformed("`n` is not base64"))?;
    let nonce: [u8; 24] = nonce
        .try_into()
        .map_err(|_| malformed("`n` is not 24 bytes"))?;
    let sealed = B64
        .decode(text("c")?)
        .map_err(|_| malformed("`c` is not base64"))?;
    let key = keys.key(key_id).ok_or_else(|| CryptoError::UnknownKey {
        model: model.to_owned(),
        id: id.to_owned(),
        field: field.to_owned(),
        key_id: key_id.to_owned(),
    })?;
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let aad = associated_data(model, id, field);
    let mut plaintext = cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &sealed,
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Authentication {
            model: model.to_owned(),
            id: id.to_owned(),
            field: field.to_owned(),
            key_id: key_id.to_owned(),
        })?;
    let value = serde_json::from_slice(&plaintext)
        .map_err(|_| malformed("the decrypted value is not JSON"));
    plaintext.zeroize();
    value
}

/// What the manager needs to report a failure: set once the manager exists.
struct Sink {
    store: Arc<dyn LocalStore>,
    events: broadcast::Sender<SyncEvent>,
    user_id: Option<String>,
}

/// The field encryption of one manager: the keys, which fields of which
/// model are encrypted, and the undecryptable remote copies kept.
pub(crate) struct FieldCrypto {
    keys: Arc<dyn KeyProvider>,
    fields: HashMap<&'static str, &'static [&'static str]>,
    sink: std::sync::OnceLock<Sink>,
    /// The remote without this layer, for the re-encrypt pass to see envelopes.
    raw: std::sync::OnceLock<Arc<dyn Remote>>,
    /// Serialises the read-modify-write of the kept copies.
    kept_lock: tokio::sync::Mutex<()>,
    /// Whether any copy is kept, so that pulls only read the metadata when it matters.
    any_kept: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for FieldCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldCrypto")
            .field("keys", &self.keys)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl FieldCrypto {
    pub(crate) fn new(
        keys: Arc<dyn KeyProvider>,
        fields: HashMap<&'static str, &'static [&'static str]>,
    ) -> FieldCrypto {
        FieldCrypto {
            keys,
            fields,
            sink: std::sync::OnceLock::new(),
            raw: std::sync::OnceLock::new(),
            kept_lock: tokio::sync::Mutex::new(()),
            any_kept: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Connects the reporting side once the manager's parts exist.
    pub(crate) async fn attach(
        &self,
        raw: Arc<dyn Remote>,
        store: Arc<dyn LocalStore>,
        events: broadcast::Sender<SyncEvent>,
        user_id: Option<String>,
    ) {
        let _ = self.raw.set(raw);
        let _ = self.sink.set(Sink {
            store,
            events,
            user_id,
        });
        let any = !self.kept().await.is_empty();
        self.any_kept
            .store(any, std::sync::atomic::Ordering::SeqCst);
    }

    fn encrypted(&self, model: &str) -> &'static [&'static str] {
        self.fields.get(model).copied().unwrap_or(&[])
    }

    /// Encrypts the encrypted fields present in `data` (a full record or a delta).
    pub(crate) fn seal(
        &self,
        model: &str,
        id: &str,
        data: &mut JsonObject,
    ) -> Result<(), CryptoError> {
        for field in self.encrypted(model) {
            if let Some(value) = data.get_mut(*field) {
                *value = seal_value(&*self.keys, model, id, field, value)?;
            }
        }
        Ok(())
    }

    /// Decrypts the encrypted fields present in `data`, all or nothing.
    pub(crate) fn open(
        &self,
        model: &str,
        id: &str,
        data: &mut JsonObject,
    ) -> Result<(), CryptoError> {
        let mut opened = Vec::new();
        for field in self.encrypted(model) {
            if let Some(value) = data.get(*field) {
                opened.push((*field, open_value(&*self.keys, model, id, field, value)?));
            }
        }
        for (field, value) in opened {
            data.insert(field.to_owned(), value);
        }
        Ok(())
    }

    /// Opens a received record; `Err` with the record untouched when it does not decrypt.
    pub(crate) fn open_record(
        &self,
        model: &str,
        record: &mut RemoteRecord,
    ) -> Result<(), CryptoError> {
        if record.deleted {
            return Ok(());
        }
        self.open(model, &record.id, &mut record.data)
    }

    fn key_ids<'a>(&self, model: &str, data: &'a JsonObject) -> Vec<&'a str> {
        self.encrypted(model)
            .iter()
            .filter_map(|f| data.get(*f).and_then(envelope_key_id))
            .collect()
    }

    async fn kept(&self) -> BTreeMap<String, Value> {
        let Some(sink) = self.sink.get() else {
            return BTreeMap::new();
        };
        let store = Arc::clone(&sink.store);
        let user = sink.user_id.clone();
        let text =
            tokio::task::spawn_blocking(move || store.metadata(user.as_deref(), FAILURES_KEY))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
        text.and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    async fn save_kept(&self, kept: &BTreeMap<String, Value>) {
        let Some(sink) = self.sink.get() else {
            return;
        };
        let store = Arc::clone(&sink.store);
        let user = sink.user_id.clone();
        self.any_kept
            .store(!kept.is_empty(), std::sync::atomic::Ordering::SeqCst);
        let text = serde_json::to_string(kept).unwrap_or_else(|_| "{}".into());
        let saved = tokio::task::spawn_blocking(move || {
            store.set_metadata(user.as_deref(), FAILURES_KEY, &text)
        })
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::error!("could not keep the undecryptable remote copies in the store metadata");
        }
    }

    /// Keeps the remote copy of records that did not decrypt, and tells the application.
    async fn record_failures(&self, model: &'static str, failed: Vec<(RemoteRecord, CryptoError)>) {
        if failed.is_empty() {
            return;
        }
        let _guard = self.kept_lock.lock().await;
        let mut kept = self.kept().await;
        for (record, error) in &failed {
            tracing::warn!(model, id = %record.id, %error, "a remote record does not decrypt; its local copy is left as it was");
            kept.insert(
                format!("{model}/{}", record.id),
                json!({
                    "error": error.to_string(),
                    "version": record.version,
                    "data": Value::Object(record.data.clone()),
                }),
            );
        }
        self.save_kept(&kept).await;
        if let Some(sink) = self.sink.get() {
            for (record, error) in failed {
                let event = SyncEvent::DecryptionFailed {
                    model_type: model,
                    id: record.id.clone(),
                    version: record.version,
                    error: error.to_string(),
                };
                let _ = sink.events.send(event);
            }
        }
    }

    /// Forgets kept copies of records that now arrived decryptable.
    async fn clear_failures(&self, model: &str, ids: &[&str]) {
        if ids.is_empty() || self.sink.get().is_none() {
            return;
        }
        let _guard = self.kept_lock.lock().await;
        let mut kept = self.kept().await;
        let before = kept.len();
        for id in ids {
            kept.remove(&format!("{model}/{id}"));
        }
        if kept.len() != before {
            self.save_kept(&kept).await;
        }
    }

    /// The decryption error kept for a record, if any.
    pub(crate) async fn failure_of(&self, model: &str, id: &str) -> Option<String> {
        let kept = self.kept().await;
        kept.get(&format!("{model}/{id}"))
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// Opens the records of a page; those that do not decrypt are taken out and kept.
    async fn open_page(
        &self,
        model: &'static str,
        records: Vec<RemoteRecord>,
    ) -> Vec<RemoteRecord> {
        let mut out = Vec::with_capacity(records.len());
        let mut failed = Vec::new();
        let mut opened_ids = Vec::new();
        for mut record in records {
            match self.open_record(model, &mut record) {
                Ok(()) => out.push(record),
                Err(error) => failed.push((record, error)),
            }
        }
        for record in &out {
            opened_ids.push(record.id.as_str());
        }
        if self.any_kept.load(std::sync::atomic::Ordering::SeqCst) {
            self.clear_failures(model, &opened_ids).await;
        }
        self.record_failures(model, failed).await;
        out
    }
}

/// The remote as the engine sees it when a model has encrypted fields:
/// values are sealed on the way out and opened on the way in.
#[derive(Debug)]
pub(crate) struct EncryptingRemote {
    pub(crate) inner: Arc<dyn Remote>,
    pub(crate) crypto: Arc<FieldCrypto>,
}

impl EncryptingRemote {
    async fn open_one(
        &self,
        route: &ModelRoute,
        record: RemoteRecord,
    ) -> Result<RemoteRecord, CryptoError> {
        let model = route.schema.model_type;
        let mut opened = record.clone();
        match self.crypto.open_record(model, &mut opened) {
            Ok(()) => Ok(opened),
            Err(error) => {
                self.crypto
                    .record_failures(model, vec![(record, error.clone())])
                    .await;
                Err(error)
            }
        }
    }
}

#[async_trait]
impl Remote for EncryptingRemote {
    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }

    async fn push(
        &self,
        route: &ModelRoute,
        items: &[PushItem],
    ) -> Result<(Vec<PushOutcome>, Traffic), RemoteError> {
        let model = route.schema.model_type;
        let mut sealed = items.to_vec();
        for item in &mut sealed {
            if let Some(data) = &mut item.data {
                self.crypto.seal(model, &item.id, data).map_err(|e| {
                    RemoteError::config("an encrypted field cannot be sealed").with_source(e)
                })?;
            }
        }
        let (outcomes, traffic) = self.inner.push(route, &sealed).await?;
        let mut out = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            out.push(match outcome {
                PushOutcome::Applied { version, record } => {
                    // Our own write: a copy that does not decrypt is not written back.
                    let record = match record {
                        Some(r) => self.open_one(route, r).await.ok(),
                        None => None,
                    };
                    PushOutcome::Applied { version, record }
                }
                PushOutcome::Conflict { current } => match self.open_one(route, current).await {
                    Ok(current) => PushOutcome::Conflict { current },
                    // Nothing can be settled against a copy that cannot be read; the
                    // op waits (kept, retried) until a key opens it.
                    Err(error) => PushOutcome::Transient {
                        message: format!("the server's copy does not decrypt: {error}"),
                        retry_after: None,
                    },
                },
                other => other,
            });
        }
        Ok((out, traffic))
    }

    async fn pull(
        &self,
        route: &ModelRoute,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RemotePage, RemoteError> {
        let mut page = self.inner.pull(route, cursor, limit).await?;
        let records = std::mem::take(&mut page.records);
        page.records = self
            .crypto
            .open_page(route.schema.model_type, records)
            .await;
        Ok(page)
    }

    async fn fetch(
        &self,
        route: &ModelRoute,
        id: &str,
    ) -> Result<Option<RemoteRecord>, RemoteError> {
        match self.inner.fetch(route, id).await? {
            Some(record) => self.open_one(route, record).await.map(Some).map_err(|e| {
                RemoteError::bad_response("the fetched record does not decrypt").with_source(e)
            }),
            None => Ok(None),
        }
    }

    async fn fetch_page(
        &self,
        route: &ModelRoute,
        params: &[(String, String)],
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<RemotePage, RemoteError> {
        let mut page = self.inner.fetch_page(route, params, limit, offset).await?;
        let records = std::mem::take(&mut page.records);
        page.records = self
            .crypto
            .open_page(route.schema.model_type, records)
            .await;
        Ok(page)
    }

    async fn health(&self) -> Result<(), RemoteError> {
        self.inner.health().await
    }

    fn has_sync_metadata(&self) -> bool {
        self.inner.has_sync_metadata()
    }

    async fn sync_metadata(&self) -> Result<crate::protocol::SyncMetadataResponse, RemoteError> {
        self.inner.sync_metadata().await
    }

    async fn digest_page(
        &self,
        route: &crate::remote::ModelRoute,
        after: &str,
        limit: usize,
    ) -> Result<crate::protocol::DigestPage, RemoteError> {
        self.inner.digest_page(route, after, limit).await
    }

    async fn forget_device(&self, device: &str) -> Result<bool, RemoteError> {
        self.inner.forget_device(device).await
    }

    fn change_feed(&self) -> Option<&dyn crate::remote::ChangeFeed> {
        // Events are opened where they are applied (`realtime::apply_event`).
        self.inner.change_feed()
    }

    fn connection_state(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.inner.connection_state()
    }
}

/// Opens a record that arrived by a realtime event; `None` (kept, reported)
/// when it does not decrypt.
pub(crate) async fn open_event_record(
    crypto: &FieldCrypto,
    model: &'static str,
    record: RemoteRecord,
) -> Option<RemoteRecord> {
    let mut opened = record.clone();
    match crypto.open_record(model, &mut opened) {
        Ok(()) => Some(opened),
        Err(error) => {
            crypto.record_failures(model, vec![(record, error)]).await;
            None
        }
    }
}

/// What [`SyncManager::reencrypt`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReencryptReport {
    /// Remote records looked at.
    pub examined: u64,
    /// Records written back under the current key.
    pub reencrypted: u64,
    /// Records under an old key left for later: a local change is queued
    /// (its push may send only some fields), or the remote copy changed
    /// meanwhile. Run the pass again after a sync.
    pub skipped: u64,
}

impl SyncManager {
    /// Applies the kept remote copies that did not decrypt before (see the
    /// module docs), e.g. after the missing key was added to the
    /// [`KeyProvider`]. Returns how many were applied; those that still do not
    /// decrypt stay kept.
    pub async fn retry_decryption(&self) -> crate::Result<u64> {
        let Some(crypto) = self.inner.crypto.clone() else {
            return Ok(0);
        };
        let _guard = crypto.kept_lock.lock().await;
        let kept = crypto.kept().await;
        let mut left = BTreeMap::new();
        let mut applied = 0;
        for (key, value) in kept {
            let Some((model, id)) = key.split_once('/') else {
                continue;
            };
            let Some(route) = self.inner.models.get(model).cloned() else {
                left.insert(key, value);
                continue;
            };
            let mut record = RemoteRecord {
                id: id.to_owned(),
                version: value.get("version").and_then(Value::as_i64).unwrap_or(0),
                deleted: false,
                data: value
                    .get("data")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
                updated_at: None,
            };
            match crypto.open_record(route.schema.model_type, &mut record) {
                Ok(()) => {
                    let mut report = SyncReport::default();
                    self.inner
                        .apply_remote_outside_run(&route, vec![record], &mut report)
                        .await?;
                    applied += 1;
                }
                Err(error) => {
                    let mut value = value;
                    if let Some(o) = value.as_object_mut() {
                        o.insert("error".into(), Value::String(error.to_string()));
                    }
                    left.insert(key, value);
                }
            }
        }
        crypto.save_kept(&left).await;
        Ok(applied)
    }

    /// Re-encrypts under the current key every remote record of `T` whose
    /// encrypted fields are under an older key: each such record, when its
    /// local copy is synced and at the same version, is written back in full
    /// (a conditional replace, so a concurrent change elsewhere wins and the
    /// record is counted as skipped).
    pub async fn reencrypt<T: SyncModel>(&self) -> crate::Result<ReencryptReport> {
        let route = self.route::<T>()?;
        let mut report = ReencryptReport::default();
        let Some(crypto) = self.inner.crypto.clone() else {
            return Ok(report);
        };
        let Some(raw) = crypto.raw.get().cloned() else {
            return Ok(report);
        };
        let current = crypto.keys.current_key_id();
        let model = T::MODEL_TYPE;
        let limit = self.inner.options().batch_size.max(1);
        let mut cursor: Option<String> = None;
        let mut stale = Vec::new();
        loop {
            let page = raw.pull(&route, cursor.as_deref(), limit).await?;
            for record in &page.records {
                if record.deleted {
                    continue;
                }
                report.examined += 1;
                if crypto
                    .key_ids(model, &record.data)
                    .iter()
                    .any(|k| *k != current)
                {
                    stale.push((record.id.clone(), record.version));
                }
            }
            if !page.has_more || page.next_cursor.is_none() || page.records.is_empty() {
                break;
            }
            cursor = page.next_cursor;
        }
        let schema = route.schema;
        for (id, version) in stale {
            let id2 = id.clone();
            let state =
                crate::engine::blocking(&self.inner.store, move |s| s.record_state(schema, &id2))
                    .await?;
            let id2 = id.clone();
            let row =
                crate::engine::blocking(&self.inner.store, move |s| s.get(schema, &id2)).await?;
            let usable =
                row.filter(|r| state.ops.is_empty() && r.meta.synced && r.meta.version == version);
            let Some(row) = usable else {
                report.skipped += 1;
                continue;
            };
            let item = PushItem {
                seq: 0,
                kind: crate::remote::PushKind::Replace,
                id: id.clone(),
                base_version: version,
                data: Some(row.data.clone()),
                idempotency_key: uuid::Uuid::new_v4().to_string(),
                sent: false,
            };
            let (outcomes, _) = self
                .inner
                .remote
                .push(&route, std::slice::from_ref(&item))
                .await?;
            match outcomes.into_iter().next() {
                Some(PushOutcome::Applied { version, .. }) => {
                    let record = RemoteRecord {
                        id: id.clone(),
                        version,
                        deleted: false,
                        data: row.data,
                        updated_at: None,
                    };
                    let mut sync_report = SyncReport::default();
                    self.inner
                        .apply_remote_outside_run(&route, vec![record], &mut sync_report)
                        .await?;
                    report.reencrypted += 1;
                }
                _ => report.skipped += 1,
            }
        }
        Ok(report)
    }
}
