//! End-to-end encrypted fields (`#[sync(encrypted)]`) and the envelope of their values.
//!
//! A field marked `#[sync(encrypted)]` is encrypted on the device with
//! XChaCha20-Poly1305 before it leaves for the remote, so the server (or any
//! REST backend) only ever holds ciphertext. The local store keeps the
//! plaintext: change tracking, deltas, coalescing and `MergeFields` then work
//! on real values, and the file itself is protected by the store's own
//! encryption (SQLCipher, `sync-diesel`'s `encryption` feature).
//!
//! The keys ([`FieldKey`](crate::FieldKey), [`KeyProvider`](crate::KeyProvider),
//! [`StaticKeys`](crate::StaticKeys), registered with
//! [`SyncManagerBuilder::field_keys`](crate::SyncManagerBuilder::field_keys)) and the errors
//! ([`CryptoError`](crate::CryptoError)) are at the crate root. This module holds the envelope
//! itself, for tools that read or write encrypted values outside the manager.
//!
//! # Wire format
//!
//! An encrypted value replaces the field's JSON value on the wire with
//!
//! ```text
//! {"$enc":"v1","kid":"<key id>","n":"<nonce>","c":"<ciphertext>"}
//! ```
//!
//! - `v1`: XChaCha20-Poly1305 (IETF, 256-bit key, 24-byte nonce, 16-byte tag);
//! - `kid`: the id of the key under [`KeyProvider`](crate::KeyProvider), so keys can rotate;
//! - `n`: the nonce, 24 random bytes, standard base64 with padding;
//! - `c`: ciphertext followed by the tag, standard base64 with padding, of
//!   the UTF-8 JSON text of the field's value (`"milk"`, `42`, `null`, ...);
//! - associated data: the bytes `osk-e2e-v1`, then for each of the model
//!   type, the record id and the field's wire name, its length as a 4-byte
//!   big-endian integer followed by its UTF-8 bytes. A ciphertext moved to
//!   another record, field or model does not decrypt.
//!
//! A value that does not decrypt (no key with its id, altered ciphertext,
//! moved to another record) is not applied: the record keeps its local
//! value, the error shows in
//! [`RecordState::decryption_error`](crate::store::RecordState::decryption_error) and a
//! [`SyncEvent::DecryptionFailed`](crate::SyncEvent::DecryptionFailed) event, the remote copy
//! (with its ciphertext) is kept in the store's metadata, and the sync goes on.
//! [`SyncManager::retry_decryption`](crate::SyncManager::retry_decryption) applies the kept
//! copies once a key opens them; [`SyncManager::reencrypt`](crate::SyncManager::reencrypt)
//! rewrites old-key values on the remote under the current key.

pub use crate::crypto::{envelope_key_id, open_value, seal_value, ENVELOPE_V1};
