//! End-to-end encrypted fields (`#[sync(encrypted)]`): the server and the wire only
//! see ciphertext; values that do not decrypt are per-record errors and the sync
//! goes on; keys rotate; the envelope binds model, record and field.

#![allow(clippy::unwrap_used)]

mod support;

use offline_sync_kit::envelope::{open_value, seal_value};
use offline_sync_kit::prelude::*;
use offline_sync_kit::{CryptoError, FieldKey, StaticKeys};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use support::{client_builder, eventually, fast_options, next_event, ClientDb, Server, ALICE};

const SECRET: &str = "SECRET-body-3c9d";
const TITLE: &str = "visible-title-88ab";

#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "notes")]
struct Note {
    #[sync(id)]
    id: String,
    title: String,
    #[sync(encrypted)]
    body: String,
    #[sync(encrypted)]
    pin: Option<i32>,
}

fn note(id: &str, body: &str) -> Note {
    Note {
        id: id.into(),
        title: TITLE.into(),
        body: body.into(),
        pin: Some(4321),
    }
}

fn k1() -> FieldKey {
    FieldKey::new([1; 32])
}
fn k2() -> FieldKey {
    FieldKey::new([2; 32])
}

async fn client(server: &Server, db: &ClientDb, keys: StaticKeys) -> SyncManager {
    client_builder(&server.url(), db, ALICE.1)
        .await
        .model::<Note>()
        .field_keys(keys)
        .options({
            let mut options = fast_options();
            options.auto_sync = false;
            options.conflict_strategy = ConflictStrategy::MergeFields;
            options
        })
        .build()
        .await
        .unwrap()
}

/// The ciphertext with its first character changed.
fn flip_first(c: &str) -> String {
    let mut chars = c.chars();
    let first = chars.next().unwrap_or('A');
    let rest: String = chars.collect();
    format!("{}{rest}", if first == 'A' { 'B' } else { 'A' })
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn server_bytes(server: &Server) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in ["server.db", "server.db-wal"] {
        bytes.extend(std::fs::read(server.dir.path().join(name)).unwrap_or_default());
    }
    bytes
}

async fn patch(server: &Server, id: &str, version: i64, body: Value) {
    let response = reqwest::Client::new()
        .patch(format!("{}/notes/{id}", server.url()))
        .bearer_auth(ALICE.1)
        .header("If-Match", version.to_string())
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

#[test]
fn the_envelope_authenticates_and_binds_model_record_and_field() {
    let keys = StaticKeys::new("k1", k1());
    let value = json!("milk");
    let a = seal_value(&keys, "Note", "n1", "body", &value).unwrap();
    let b = seal_value(&keys, "Note", "n1", "body", &value).unwrap();
    assert_eq!(a["$enc"], "v1");
    assert_eq!(a["kid"], "k1");
    assert_ne!(a["n"], b["n"], "a random nonce per value");
    assert_eq!(open_value(&keys, "Note", "n1", "body", &a).unwrap(), value);
    for (model, id, field) in [
        ("Other", "n1", "body"),
        ("Note", "n2", "body"),
        ("Note", "n1", "title"),
    ] {
        let err = open_value(&keys, model, id, field, &a).unwrap_err();
        assert!(matches!(err, CryptoError::Authentication { .. }), "{err}");
    }
    let mut tampered = a.clone();
    let c = tampered["c"].as_str().unwrap().to_owned();
    tampered["c"] = Value::String(flip_first(&c));
    assert!(matches!(
        open_value(&keys, "Note", "n1", "body", &tampered),
        Err(CryptoError::Authentication { .. })
    ));
    let other = StaticKeys::new("k1", k2());
    assert!(matches!(
        open_value(&other, "Note", "n1", "body", &a),
        Err(CryptoError::Authentication { .. })
    ));
    let unknown = StaticKeys::new("k9", k1());
    assert!(matches!(
        open_value(&unknown, "Note", "n1", "body", &a),
        Err(CryptoError::UnknownKey { .. })
    ));
    for bad in [
        json!("plain"),
        json!({"$enc": "v2", "kid": "k1", "n": "", "c": ""}),
        json!({"$enc": "v1", "kid": "k1", "n": "AAAA", "c": "AAAA"}),
    ] {
        assert!(
            matches!(
                open_value(&keys, "Note", "n1", "body", &bad),
                Err(CryptoError::Malformed { .. })
            ),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_model_with_encrypted_fields_needs_keys() {
    let server = Server::start().await;
    let db = ClientDb::new();
    let err = client_builder(&server.url(), &db, ALICE.1)
        .await
        .model::<Note>()
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("field_keys"), "{err}");
}

#[tokio::test]
async fn the_server_only_holds_ciphertext_and_devices_read_plaintext() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client(&server, &db_a, StaticKeys::new("k1", k1())).await;
    let b = client(&server, &db_b, StaticKeys::new("k1", k1())).await;
    a.save(&note("n1", SECRET)).await.unwrap();
    a.sync_all().await.unwrap();

    let stored = server.records(ALICE.1, "notes").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["title"], TITLE);
    assert_eq!(stored[0]["body"]["$enc"], "v1");
    assert_eq!(stored[0]["pin"]["kid"], "k1");
    let bytes = server_bytes(&server);
    assert!(
        contains(&bytes, TITLE),
        "the control: the title is in clear on the server"
    );
    assert!(
        !contains(&bytes, SECRET),
        "the server database holds the encrypted field's plaintext"
    );
    assert!(!contains(&bytes, "4321"));

    b.sync_all().await.unwrap();
    assert_eq!(b.get::<Note>("n1").await.unwrap(), Some(note("n1", SECRET)));

    // Deltas and MergeFields on plaintext: A edits the title, B the body.
    let mut on_a = note("n1", SECRET);
    on_a.title = "new title".into();
    a.save(&on_a).await.unwrap();
    let mut on_b = note("n1", SECRET);
    on_b.body = "SECRET-2".into();
    b.save(&on_b).await.unwrap();
    a.sync_all().await.unwrap();
    b.sync_all().await.unwrap();
    a.sync_all().await.unwrap();
    let merged = Note {
        id: "n1".into(),
        title: "new title".into(),
        body: "SECRET-2".into(),
        pin: Some(4321),
    };
    assert_eq!(a.get::<Note>("n1").await.unwrap(), Some(merged.clone()));
    assert_eq!(b.get::<Note>("n1").await.unwrap(), Some(merged));
    assert!(!contains(&server_bytes(&server), "SECRET-2"));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_value_that_does_not_decrypt_is_a_record_error_and_the_sync_goes_on() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client(&server, &db_a, StaticKeys::new("k1", k1())).await;
    for id in ["n1", "n2", "n3"] {
        a.save(&note(id, &format!("{SECRET} {id}"))).await.unwrap();
    }
    a.sync_all().await.unwrap();
    let stored = server.records(ALICE.1, "notes").await;
    let by_id = |id: &str| stored.iter().find(|r| r["id"] == id).unwrap().clone();
    // n1: altered ciphertext; n3: n2's ciphertext copied over (bound to n2).
    let mut tampered = by_id("n1")["body"].clone();
    let c = tampered["c"].as_str().unwrap().to_owned();
    tampered["c"] = Value::String(flip_first(&c));
    patch(
        &server,
        "n1",
        by_id("n1")["version"].as_i64().unwrap(),
        json!({ "body": tampered }),
    )
    .await;
    patch(
        &server,
        "n3",
        by_id("n3")["version"].as_i64().unwrap(),
        json!({ "body": by_id("n2")["body"] }),
    )
    .await;

    let b = client(&server, &db_b, StaticKeys::new("k1", k1())).await;
    let mut events = b.events();
    let report = b.sync_all().await.unwrap();
    assert_eq!(report.pulled, 1, "n2 applied, n1 and n3 kept aside");
    assert_eq!(
        b.get::<Note>("n2").await.unwrap(),
        Some(note("n2", &format!("{SECRET} n2")))
    );
    next_event(&mut events, SyncEventType::DecryptionFailed, Some("n1")).await;
    for id in ["n1", "n3"] {
        let state = b.record_state::<Note>(id).await.unwrap();
        let error = state.decryption_error.unwrap_or_default();
        assert!(error.contains("does not decrypt"), "{id}: {error}");
        assert_eq!(b.get::<Note>(id).await.unwrap(), None);
    }
    // On A, which has the records, the local copies are left as they were.
    a.sync_all().await.unwrap();
    assert_eq!(
        a.get::<Note>("n1").await.unwrap(),
        Some(note("n1", &format!("{SECRET} n1")))
    );
    assert!(a
        .record_state::<Note>("n1")
        .await
        .unwrap()
        .decryption_error
        .is_some());
    // Still not decryptable: still kept.
    assert_eq!(b.retry_decryption().await.unwrap(), 0);
    assert!(b
        .record_state::<Note>("n1")
        .await
        .unwrap()
        .decryption_error
        .is_some());
    // An edit on A meets the server copy it cannot read: nothing can be settled
    // against it, so the edit stays queued, visible and retried, never dropped.
    let mut edited = note("n1", "edited");
    edited.pin = None;
    a.save(&edited).await.unwrap();
    let _ = a.sync_all().await;
    let state = a.record_state::<Note>("n1").await.unwrap();
    assert_eq!(state.ops.len(), 1, "{state:?}");
    let last = state.ops[0].last_error.clone().unwrap_or_default();
    assert!(last.contains("does not decrypt"), "{last}");
    assert_eq!(a.get::<Note>("n1").await.unwrap(), Some(edited));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wrong_or_missing_key_keeps_the_ciphertext_until_the_key_comes() {
    let server = Server::start().await;
    let (db_a, db_c) = (ClientDb::new(), ClientDb::new());
    let a = client(&server, &db_a, StaticKeys::new("k1", k1())).await;
    a.save(&note("n1", SECRET)).await.unwrap();
    a.sync_all().await.unwrap();
    // C has another key under the same id, then no key with that id at all.
    let c = client(&server, &db_c, StaticKeys::new("k1", k2())).await;
    c.sync_all().await.unwrap();
    assert_eq!(c.get::<Note>("n1").await.unwrap(), None);
    let error = c
        .record_state::<Note>("n1")
        .await
        .unwrap()
        .decryption_error
        .unwrap();
    assert!(error.contains("does not decrypt with key `k1`"), "{error}");
    c.shutdown().await.unwrap();
    let c = client(&server, &db_c, StaticKeys::new("k7", k2())).await;
    assert_eq!(c.retry_decryption().await.unwrap(), 0);
    let error = c
        .record_state::<Note>("n1")
        .await
        .unwrap()
        .decryption_error
        .unwrap();
    assert!(error.contains("no field key `k1`"), "{error}");
    c.shutdown().await.unwrap();
    // With the right key the kept copy applies, without a new pull.
    let c = client(&server, &db_c, StaticKeys::new("k1", k1())).await;
    assert_eq!(c.retry_decryption().await.unwrap(), 1);
    assert_eq!(c.get::<Note>("n1").await.unwrap(), Some(note("n1", SECRET)));
    assert_eq!(
        c.record_state::<Note>("n1").await.unwrap().decryption_error,
        None
    );
    a.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn keys_rotate_and_the_reencrypt_pass_moves_everything_to_the_new_key() {
    let server = Server::start().await;
    let (db_a, db_b) = (ClientDb::new(), ClientDb::new());
    let a = client(&server, &db_a, StaticKeys::new("k1", k1())).await;
    a.save(&note("old", "under key 1")).await.unwrap();
    a.sync_all().await.unwrap();
    a.shutdown().await.unwrap();
    let rotated = StaticKeys::new("k1", k1()).rotate_to("k2", k2());
    let a = client(&server, &db_a, rotated.clone()).await;
    a.save(&note("new", "under key 2")).await.unwrap();
    a.sync_all().await.unwrap();
    let kids = |records: Vec<Value>| {
        let mut kids: Vec<(String, String)> = records
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["body"]["kid"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        kids.sort();
        kids
    };
    assert_eq!(
        kids(server.records(ALICE.1, "notes").await),
        [
            ("new".to_owned(), "k2".to_owned()),
            ("old".to_owned(), "k1".to_owned())
        ]
    );
    // Both read back on a device with both keys.
    let b = client(&server, &db_b, rotated).await;
    b.sync_all().await.unwrap();
    assert_eq!(
        b.get::<Note>("old").await.unwrap(),
        Some(note("old", "under key 1"))
    );
    assert_eq!(
        b.get::<Note>("new").await.unwrap(),
        Some(note("new", "under key 2"))
    );

    let report = a.reencrypt::<Note>().await.unwrap();
    assert_eq!(
        (report.examined, report.reencrypted, report.skipped),
        (2, 1, 0)
    );
    assert_eq!(
        kids(server.records(ALICE.1, "notes").await),
        [
            ("new".to_owned(), "k2".to_owned()),
            ("old".to_owned(), "k2".to_owned())
        ]
    );
    // A device with only key 2 reads everything; A goes on syncing normally.
    let db_c = ClientDb::new();
    let c = client(&server, &db_c, StaticKeys::new("k2", k2())).await;
    c.sync_all().await.unwrap();
    assert_eq!(
        c.get::<Note>("old").await.unwrap(),
        Some(note("old", "under key 1"))
    );
    assert_eq!(a.record_state::<Note>("old").await.unwrap().ops.len(), 0);
    let mut edited = note("old", "edited after the pass");
    edited.pin = None;
    a.save(&edited).await.unwrap();
    a.sync_all().await.unwrap();
    c.sync_all().await.unwrap();
    eventually(Duration::from_secs(5), "C has A's edit", || async {
        c.get::<Note>("old").await.unwrap() == Some(edited.clone())
    })
    .await;
    for m in [a, b, c] {
        m.shutdown().await.unwrap();
    }
}
