//! An offline-first todo list on the command line.
//!
//! ```text
//! cargo run -p sync-server -- --database sqlite://sync.db --token alice:alice-secret-token
//! cargo run --example todo -- --token alice-secret-token add "Buy milk" --priority 2 --tag home
//! cargo run --example todo -- list --open
//! cargo run --example todo -- --token alice-secret-token sync
//! cargo run --example todo -- --token alice-secret-token watch
//! ```
//!
//! Every command works on the local database (`--db`, default `todo.db`);
//! `sync` exchanges changes with the server (`--server`, default
//! `http://127.0.0.1:8080`). `--token` may also come from `TODO_TOKEN`.

#[allow(dead_code, unreachable_pub)]
#[path = "support/todo_cli.rs"]
mod todo_cli;

#[tokio::main]
async fn main() {
    let code = todo_cli::run(
        std::env::args_os(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
    .await;
    std::process::exit(code);
}
