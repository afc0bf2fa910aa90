//! Without the `encryption` feature the encrypted store's tests (`tests/encryption.rs`) are not
//! built; this says so instead of passing silently.

#[cfg(not(feature = "encryption"))]
#[test]
fn encryption_tests_need_the_encryption_feature() {
    eprintln!(
        "skipped: the encrypted store's tests need `cargo test -p sync-diesel --features \
         encryption --test encryption` (SQLCipher, libssl-dev)"
    );
}
