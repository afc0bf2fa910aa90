//! The whole loop on one machine: a sync-server in process on an embedded
//! SQLite file, two clients with their own SQLite files, offline saves,
//! realtime delivery and conflict resolution, narrated.
//!
//! ```text
//! cargo run --example quickstart
//! ```

#[allow(dead_code, unreachable_pub)]
#[path = "support/quickstart.rs"]
mod quickstart;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut out = std::io::stdout();
    match quickstart::run_quickstart(&mut out).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("quickstart failed: {err}");
            ExitCode::FAILURE
        }
    }
}
