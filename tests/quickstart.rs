//! Runs the quickstart's flow (the code `cargo run --example quickstart`
//! runs) and checks what it narrates and the final states it returns.

#![allow(clippy::unwrap_used)]

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/support/quickstart.rs"]
mod quickstart;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_converges_on_a_b_and_the_server() {
    let mut out = Vec::new();
    let outcome = quickstart::run_quickstart(&mut out).await;
    let text = String::from_utf8(out).unwrap();
    let outcome = outcome.unwrap_or_else(|e| panic!("quickstart failed: {e}\n{text}"));

    // Identical everywhere, with both different-field edits merged and the
    // later rename winning the same-field conflict.
    assert_eq!(outcome.a, outcome.b, "{text}");
    assert_eq!(outcome.a, outcome.server, "{text}");
    assert_eq!(outcome.a.len(), 1, "{text}");
    let todo = &outcome.a[0];
    assert!(todo.done, "B's edit survived the merge\n{text}");
    assert_eq!(todo.priority, 3, "A's edit survived the merge\n{text}");
    assert_eq!(todo.title, "Buy soy milk", "the later rename won\n{text}");

    // The narration tells each step.
    for expected in [
        "pending changes: 1",
        "pending changes: 0",
        "arrived over the WebSocket",
        "merged per field",
        "A's rename won",
        "identical on A, B and the server",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
