//! Runs the examples that have no test of their own, so that they cannot break at run time
//! unnoticed: each is included as a module and its entry point called.
//!
//! Guards against: examples that compile but fail when someone runs them.

#![allow(clippy::unwrap_used, dead_code, unreachable_pub, missing_docs)]

#[path = "../examples/accounts.rs"]
mod accounts;
#[path = "../examples/conditional_writes.rs"]
mod conditional_writes;
#[path = "../examples/custom_rest.rs"]
mod custom_rest;
#[cfg(feature = "encryption")]
#[path = "../examples/encryption.rs"]
mod encryption;
#[path = "../examples/generate_migrations.rs"]
mod generate_migrations;
#[path = "../examples/json_server.rs"]
mod json_server;
#[path = "../examples/model_basics.rs"]
mod model_basics;
#[path = "../examples/parse_server.rs"]
mod parse_server;
mod support;

/// The Datum patterns: the app shows local data before the first sync ends, the loading
/// state goes syncing -> ready, users see only their own notes, and after the relogin the
/// draft queued before the sign-out is on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_runs() {
    let mut out = Vec::new();
    let outcome = accounts::run(&mut out).await;
    let text = out.join("\n");
    let outcome = outcome.unwrap_or_else(|e| panic!("accounts example failed: {e}\n{text}"));
    assert!(
        outcome
            .states
            .contains(&offline_sync_kit::SyncState::Syncing)
            && outcome.states.last() == Some(&offline_sync_kit::SyncState::Completed),
        "{:?}\n{text}",
        outcome.states
    );
    assert_eq!(outcome.bob_notes, vec!["b1"], "{text}");
    assert_eq!(outcome.alice_notes.len(), 201, "{text}");
    assert!(outcome.alice_notes.contains(&"draft".to_owned()));
    assert_eq!(outcome.relogin_known, 201, "{text}");
}

/// The conditional-write backend, configured by the derive's attributes only: the stale
/// write is refused (412) and merged, never applied over the other device's edit; the list is
/// followed page by page; the delete reaches the other device as a tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_runs() {
    let outcome = conditional_writes::run().await.unwrap();
    assert_eq!(outcome.pulled, 3, "{outcome:?}");
    assert!(outcome.refused >= 1, "{outcome:?}");
    assert_eq!(outcome.conflicts, 1, "{outcome:?}");
    assert_eq!(
        outcome.merged,
        ("item 1 (renamed on B)".to_owned(), true),
        "both edits survive: {outcome:?}"
    );
    assert!(!outcome.deleted_item_on_b, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_rest_runs() {
    custom_rest::run().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_migrations_runs() {
    generate_migrations::run().await.unwrap();
}

/// The Parse Server example, on a Parse Server the test starts (npm, on the test Postgres;
/// skipped with the reason printed where neither is at hand, see `support::npm`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_server_runs() {
    let Some(parse) = support::npm::Parse::start(false).await else {
        return;
    };
    let id = parse_server::run(&parse.url, support::npm::APP_ID, support::npm::MASTER_KEY)
        .await
        .unwrap();
    assert_ne!(id, "draft-1");
    assert!(
        parse.notes_where("localId", "draft-1").await.is_empty(),
        "deleted"
    );
}

/// The json-server example, on a json-server the test starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_server_runs() {
    let Some((_child, url, _dir)) = support::npm::json_server().await else {
        return;
    };
    assert_eq!(json_server::run(&url).await.unwrap(), 3);
}

#[test]
fn model_basics_runs() {
    model_basics::main().unwrap();
}

/// The encryption example (feature `encryption`): the server holds only an envelope of the
/// encrypted field, neither database file holds the secret, the old passphrase and no
/// passphrase are refused after the rekey, the new one reads the note back.
#[cfg(feature = "encryption")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_runs() {
    let mut out = Vec::new();
    let outcome = encryption::run(&mut out).await;
    let text = String::from_utf8(out).unwrap();
    let outcome = outcome.unwrap_or_else(|e| panic!("encryption example failed: {e}\n{text}"));
    let body = &outcome.on_server["body"];
    assert_eq!(body["$enc"], "v1", "{text}");
    assert_eq!(body["kid"], "2025-01", "{text}");
    assert!(body["c"].as_str().is_some_and(|c| !c.is_empty()), "{text}");
    assert_eq!(outcome.on_server["title"], "Front door", "{text}");
    assert!(!outcome.secret_in_server_file, "{text}");
    assert!(!outcome.plaintext_in_device_file, "{text}");
    let note = outcome
        .on_second_device
        .expect("the second device has the note");
    assert_eq!(note.body, "The key code is 4711-0815", "{text}");
    assert_eq!(outcome.after_rekey, Some(note), "{text}");
    assert!(
        outcome.wrong_key.contains("cannot decrypt the store"),
        "{text}"
    );
    assert!(
        outcome
            .missing_key
            .contains("is encrypted; open it with its key"),
        "{text}"
    );
    for expected in [
        "an encrypted envelope",
        "rekeyed",
        "the new passphrase opens it",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
