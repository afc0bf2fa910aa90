//! Compile-time behaviour of `#[derive(SyncModel)]`: what compiles, and the
//! exact error messages of what does not (reviewed `.stderr` files).
//!
//! Regenerate the expected output after a deliberate change with
//! `TRYBUILD=overwrite cargo test --test ui`, then review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
