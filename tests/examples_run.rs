//! Runs the examples that have no test of their own, so that they cannot break at run time
//! unnoticed: each is included as a module and its entry point called.
//!
//! Guards against: examples that compile but fail when someone runs them.

#![allow(clippy::unwrap_used, dead_code, unreachable_pub, missing_docs)]

#[path = "../examples/custom_rest.rs"]
mod custom_rest;
#[path = "../examples/generate_migrations.rs"]
mod generate_migrations;
#[path = "../examples/model_basics.rs"]
mod model_basics;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_rest_runs() {
    custom_rest::run().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_migrations_runs() {
    generate_migrations::run().await.unwrap();
}

#[test]
fn model_basics_runs() {
    model_basics::main().unwrap();
}
