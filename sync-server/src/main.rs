//! `sync-server` command line: serve the reference backend.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sync_server::{SyncServer, DEFAULT_DATABASE};
use tracing_subscriber::EnvFilter;

/// Reference backend of offline-sync-kit: REST + batch push + WebSocket over SQLite or Postgres.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Database: sqlite://PATH (default sqlite://sync-server.db) or postgres://USER@HOST/DB.
    #[arg(long)]
    database: Option<String>,

    /// Static bearer token as USER:SECRET; repeatable.
    #[arg(long = "token", value_name = "USER:SECRET")]
    tokens: Vec<String>,

    /// File with one USER:SECRET per line.
    #[arg(long, value_name = "PATH")]
    tokens_file: Option<PathBuf>,

    /// Accept HS256 JWTs signed with this secret; the user is the `sub` claim.
    #[arg(long, value_name = "SECRET")]
    jwt_secret: Option<String>,

    /// Largest request body in bytes.
    #[arg(long)]
    max_body_bytes: Option<usize>,

    /// Most ops in one batch push.
    #[arg(long)]
    max_batch_ops: Option<usize>,

    /// Bytes of records one push answer carries; past them results carry only the version.
    #[arg(long)]
    max_push_answer_bytes: Option<usize>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sync-server: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> sync_server::Result<()> {
    let mut builder = SyncServer::builder()
        .database(args.database.unwrap_or_else(|| DEFAULT_DATABASE.to_owned()));
    for pair in args.tokens {
        builder = builder.token_pair(pair);
    }
    if let Some(path) = args.tokens_file {
        builder = builder.tokens_file(path);
    }
    if let Some(secret) = args.jwt_secret {
        builder = builder.jwt_secret(secret.into_bytes());
    }
    if let Some(bytes) = args.max_body_bytes {
        builder = builder.max_body_bytes(bytes);
    }
    if let Some(ops) = args.max_batch_ops {
        builder = builder.max_batch_ops(ops);
    }
    if let Some(bytes) = args.max_push_answer_bytes {
        builder = builder.max_push_answer_bytes(bytes);
    }
    let server = builder.build().await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    println!("sync-server listening on http://{addr} (WebSocket: ws://{addr}/ws)");
    let shutdown = server.shutdown_token();
    tokio::spawn(async move {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("shutting down"),
            Err(err) => tracing::error!(error = %err, "cannot listen for Ctrl-C; shutting down"),
        }
        shutdown.cancel();
    });
    server.serve(listener).await
}
