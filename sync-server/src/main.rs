//! `sync-server` command line: serve the reference backend.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sync_server::{Limits, SyncServer, DEFAULT_DATABASE};
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
    #[arg(long, value_name = "PATH", env = "SYNC_SERVER_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,

    /// Accept HS256 JWTs signed with this secret (at least 16 bytes); the user is the `sub`
    /// claim. Prefer --jwt-secret-file or the environment: the command line is visible to
    /// other local users.
    #[arg(
        long,
        value_name = "SECRET",
        env = "SYNC_SERVER_JWT_SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,

    /// Read the JWT secret from this file (surrounding whitespace trimmed).
    #[arg(long, value_name = "PATH", env = "SYNC_SERVER_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,

    /// Require this `iss` claim in JWTs.
    #[arg(long, value_name = "ISSUER")]
    jwt_issuer: Option<String>,

    /// Require this `aud` claim in JWTs.
    #[arg(long, value_name = "AUDIENCE")]
    jwt_audience: Option<String>,

    /// Let a JWT whose `sub` names a static-token user act as that user.
    #[arg(long)]
    jwt_subjects_share_static_users: bool,

    /// Largest request body in bytes (default 8 MiB).
    #[arg(long)]
    max_body_bytes: Option<usize>,

    /// Most ops in one batch push (default 1000).
    #[arg(long)]
    max_batch_ops: Option<usize>,

    /// Bytes of records one push answer carries (default 8 MiB).
    #[arg(long)]
    max_push_answer_bytes: Option<usize>,

    /// Bytes of records one pull page carries (default 8 MiB).
    #[arg(long)]
    max_page_bytes: Option<usize>,

    /// Deepest nesting of record data (default 64).
    #[arg(long)]
    max_json_depth: Option<usize>,

    /// Bytes queued for one WebSocket before it is dropped as too slow (default 4 MiB).
    #[arg(long)]
    max_ws_queue_bytes: Option<usize>,

    /// Seconds one WebSocket write may take (default 10).
    #[arg(long, value_name = "SECS")]
    ws_write_timeout: Option<u64>,

    /// Most parameters of one subscription (default 16).
    #[arg(long)]
    max_subscription_parameters: Option<usize>,

    /// Largest JSON of one subscription's parameters in bytes (default 4096).
    #[arg(long)]
    max_subscription_bytes: Option<usize>,

    /// Failed authentications per peer address per minute before 429s (default 60).
    #[arg(long)]
    max_auth_failures_per_minute: Option<u32>,

    /// Connections served at once (default 1024).
    #[arg(long)]
    max_connections: Option<usize>,

    /// Seconds a client has to send request headers (default 10).
    #[arg(long, value_name = "SECS")]
    header_read_timeout: Option<u64>,

    /// Seconds a client has to send a request body (default 30).
    #[arg(long, value_name = "SECS")]
    body_read_timeout: Option<u64>,

    /// WebSocket connections one user may hold (default 32).
    #[arg(long)]
    max_ws_connections_per_user: Option<usize>,

    /// Seconds between the server's WebSocket pings (default 30).
    #[arg(long, value_name = "SECS")]
    ws_ping_interval: Option<u64>,

    /// Seconds of silence after which a WebSocket is closed (default 90).
    #[arg(long, value_name = "SECS")]
    ws_idle_timeout: Option<u64>,

    /// Bytes of record data one user may store, tombstones included (default: no quota).
    #[arg(long)]
    max_user_bytes: Option<u64>,
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

/// Overrides a default with a given value.
fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
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
    if let Some(path) = args.jwt_secret_file {
        builder = builder.jwt_secret_file(path);
    }
    if let Some(issuer) = args.jwt_issuer {
        builder = builder.jwt_issuer(issuer);
    }
    if let Some(audience) = args.jwt_audience {
        builder = builder.jwt_audience(audience);
    }
    builder = builder.jwt_subjects_share_static_users(args.jwt_subjects_share_static_users);
    let mut limits = Limits::default();
    set(&mut limits.max_body_bytes, args.max_body_bytes);
    set(&mut limits.max_batch_ops, args.max_batch_ops);
    set(
        &mut limits.max_push_answer_bytes,
        args.max_push_answer_bytes,
    );
    set(&mut limits.max_page_bytes, args.max_page_bytes);
    set(&mut limits.max_json_depth, args.max_json_depth);
    set(&mut limits.max_ws_queue_bytes, args.max_ws_queue_bytes);
    set(
        &mut limits.ws_write_timeout,
        args.ws_write_timeout.map(Duration::from_secs),
    );
    set(
        &mut limits.max_subscription_parameters,
        args.max_subscription_parameters,
    );
    set(
        &mut limits.max_subscription_bytes,
        args.max_subscription_bytes,
    );
    set(
        &mut limits.max_auth_failures_per_minute,
        args.max_auth_failures_per_minute,
    );
    set(&mut limits.max_connections, args.max_connections);
    let secs = |value: Option<u64>| value.map(Duration::from_secs);
    set(
        &mut limits.header_read_timeout,
        secs(args.header_read_timeout),
    );
    set(&mut limits.body_read_timeout, secs(args.body_read_timeout));
    set(
        &mut limits.max_ws_connections_per_user,
        args.max_ws_connections_per_user,
    );
    set(&mut limits.ws_ping_interval, secs(args.ws_ping_interval));
    set(&mut limits.ws_idle_timeout, secs(args.ws_idle_timeout));
    limits.max_user_bytes = args.max_user_bytes.or(limits.max_user_bytes);
    builder = builder.limits(limits);
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
