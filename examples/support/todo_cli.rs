//! The todo CLI, shared by `examples/todo.rs` (the binary) and
//! `tests/todo_cli.rs` (which runs it against an in-process sync-server).

use std::ffi::OsString;
use std::fmt::Display;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

/// A todo item, stored in the local SQLite file and synced to the server.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "todos")]
#[serde(rename_all = "camelCase")]
pub struct Todo {
    /// A UUID; commands accept any unique prefix of it.
    #[sync(id)]
    pub id: String,
    /// What to do.
    pub title: String,
    /// Done yet?
    pub done: bool,
    /// Higher is more urgent.
    #[sync(index)]
    pub priority: i32,
    /// Free-form labels.
    #[sync(json)]
    #[serde(default)]
    pub tags: Vec<String>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// Offline-first todo list: every command works on the local database; `sync`
/// exchanges changes with a sync-server.
#[derive(Debug, Parser)]
#[command(name = "todo", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Base URL of the sync-server.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Local SQLite database file.
    #[arg(long, global = true, default_value = "todo.db")]
    db: PathBuf,
    /// Bearer token: the SECRET of a `--token USER:SECRET` given to sync-server.
    /// Needed by `sync` and `watch` only.
    #[arg(long, global = true, env = "TODO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

const AFTER_HELP: &str = "Start a server first, e.g.:
  cargo run -p sync-server -- --database sqlite://sync.db --token alice:alice-secret-token
then: todo --token alice-secret-token add \"Buy milk\" && todo --token alice-secret-token sync";

#[derive(Debug, Subcommand)]
enum Command {
    /// Add a todo.
    Add {
        /// What to do.
        title: String,
        /// Priority (higher is more urgent).
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// A tag; repeat for several.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// List todos, most urgent first.
    List {
        /// Only done todos.
        #[arg(long, conflicts_with = "open")]
        done: bool,
        /// Only open todos.
        #[arg(long)]
        open: bool,
        /// Only todos with at least this priority.
        #[arg(long, value_name = "N")]
        min_priority: Option<i32>,
        /// Only todos with this tag.
        #[arg(long, value_name = "TAG")]
        tag: Option<String>,
    },
    /// Mark a todo done.
    Done {
        /// Id or a unique prefix of it.
        id: String,
    },
    /// Change a todo's title or priority.
    Edit {
        /// Id or a unique prefix of it.
        id: String,
        /// New title.
        #[arg(long)]
        title: Option<String>,
        /// New priority.
        #[arg(long)]
        priority: Option<i32>,
    },
    /// Delete a todo.
    Rm {
        /// Id or a unique prefix of it.
        id: String,
    },
    /// Push local changes to the server and pull remote ones.
    Sync,
    /// Show pending and failed changes and whether the server is reachable.
    Status,
    /// Print changes made elsewhere as they happen (Ctrl-C to stop).
    Watch,
}

/// An error for people: one line, printed as `error: ...`.
#[derive(Debug)]
pub struct CliError(String);

impl Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<offline_sync_kit::Error> for CliError {
    fn from(err: offline_sync_kit::Error) -> Self {
        CliError(err.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(err: std::io::Error) -> Self {
        CliError(format!("cannot write the output: {err}"))
    }
}

type Result<T, E = CliError> = std::result::Result<T, E>;

fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(CliError(message.into()))
}

/// Runs the CLI with `args` (the first is the program name); returns the exit
/// code: 0 on success, 1 on an error (printed as one `error: ...` line to
/// `err`), 2 on a usage error.
pub async fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.render().to_string();
            let code = e.exit_code();
            // --help and --version are not errors.
            let _ = if code == 0 {
                write!(out, "{text}")
            } else {
                write!(err, "{text}")
            };
            return code;
        }
    };
    match execute(cli, out).await {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            1
        }
    }
}

async fn open(cli: &Cli, needs_token: bool, realtime: bool) -> Result<SyncManager> {
    // A CLI process is short-lived: changes go out on `todo sync`, not in the
    // background of a command that is about to exit.
    let mut options = SyncOptions::default();
    options.auto_sync = false;
    let store = DieselStore::open_sqlite(&cli.db)
        .await
        .map_err(|e| CliError(format!("cannot open {}: {e}", cli.db.display())))?;
    let mut builder = SyncManager::builder()
        .base_url(cli.server.trim_end_matches('/'))
        .store(store)
        .model::<Todo>()
        .options(options);
    match &cli.token {
        Some(token) => builder = builder.bearer_token(token),
        None if needs_token => {
            return fail(
                "no token: pass --token SECRET or set TODO_TOKEN \
                 (the SECRET of the `--token USER:SECRET` sync-server was started with)",
            )
        }
        None => {}
    }
    if realtime {
        builder = builder.websocket(WebSocketConfig::new(ws_url(&cli.server)?));
    }
    Ok(builder.build().await?)
}

fn ws_url(server: &str) -> Result<String> {
    let server = server.trim_end_matches('/');
    if let Some(rest) = server.strip_prefix("https://") {
        Ok(format!("wss://{rest}/ws"))
    } else if let Some(rest) = server.strip_prefix("http://") {
        Ok(format!("ws://{rest}/ws"))
    } else {
        fail(format!(
            "--server must start with http:// or https://, got {server:?}"
        ))
    }
}

/// Checks that the server answers `/health`, with a message that says what to do.
async fn reachable(server: &str) -> Result<()> {
    let url = format!("{}/health", server.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| CliError(format!("cannot create an HTTP client: {e}")))?;
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => fail(format!(
            "the server at {server} answered {} on /health; is it a sync-server?",
            response.status()
        )),
        Err(_) => fail(format!(
            "cannot reach the server at {server}; is it running? \
             (cargo run -p sync-server -- --token USER:SECRET)"
        )),
    }
}

/// The todo whose id is `prefix` or starts with it.
async fn find(sync: &SyncManager, prefix: &str) -> Result<Todo> {
    if let Some(todo) = sync.get::<Todo>(prefix).await? {
        return Ok(todo);
    }
    let query = Query::new().filter(Todo::fields().id.starts_with(prefix));
    let mut matches = sync.query::<Todo>(query.limit(2)).await?;
    match matches.len() {
        0 => fail(format!("no todo with id {prefix:?} (see `todo list`)")),
        1 => Ok(matches.remove(0)),
        _ => fail(format!(
            "{prefix:?} matches several todos; type more of the id"
        )),
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn line(todo: &Todo) -> String {
    let mut text = format!(
        "{} [{}] {} (p{})",
        short(&todo.id),
        if todo.done { "x" } else { " " },
        todo.title,
        todo.priority
    );
    if !todo.tags.is_empty() {
        text.push_str(&format!(" #{}", todo.tags.join(" #")));
    }
    text
}

async fn execute(cli: Cli, out: &mut dyn Write) -> Result<()> {
    match &cli.command {
        Command::Sync => return sync(&cli, out).await,
        Command::Watch => return watch(&cli, out).await,
        Command::Status => return status(&cli, out).await,
        _ => {}
    }
    let sync = open(&cli, false, false).await?;
    let result = local_command(&sync, cli.command, out).await;
    sync.shutdown().await?;
    result
}

async fn local_command(sync: &SyncManager, command: Command, out: &mut dyn Write) -> Result<()> {
    match command {
        Command::Add {
            title,
            priority,
            tags,
        } => {
            if title.trim().is_empty() {
                return fail("the title is empty");
            }
            let todo = Todo {
                id: uuid::Uuid::new_v4().to_string(),
                title,
                done: false,
                priority,
                tags,
                created_at: Utc::now(),
            };
            sync.save(&todo).await?;
            writeln!(out, "added {}", line(&todo))?;
        }
        Command::List {
            done,
            open,
            min_priority,
            tag,
        } => {
            let f = Todo::fields();
            let mut query = Query::new();
            if done || open {
                query = query.filter(f.done.eq(done));
            }
            if let Some(min) = min_priority {
                query = query.filter(f.priority.ge(min));
            }
            let query = query
                .order_by(f.done.asc())
                .order_by(f.priority.desc())
                .order_by(f.created_at.asc());
            let mut todos = sync.query::<Todo>(query).await?;
            // Tags are a JSON column, which typed queries do not look into.
            if let Some(tag) = &tag {
                todos.retain(|t| t.tags.contains(tag));
            }
            if todos.is_empty() {
                writeln!(out, "no todos")?;
            }
            for todo in &todos {
                writeln!(out, "{}", line(todo))?;
            }
        }
        Command::Done { id } => {
            let mut todo = find(sync, &id).await?;
            todo.done = true;
            sync.save(&todo).await?;
            writeln!(out, "done {}", line(&todo))?;
        }
        Command::Edit {
            id,
            title,
            priority,
        } => {
            if title.is_none() && priority.is_none() {
                return fail("nothing to change: pass --title and/or --priority");
            }
            let mut todo = find(sync, &id).await?;
            if let Some(title) = title {
                todo.title = title;
            }
            if let Some(priority) = priority {
                todo.priority = priority;
            }
            sync.save(&todo).await?;
            writeln!(out, "edited {}", line(&todo))?;
        }
        Command::Rm { id } => {
            let todo = find(sync, &id).await?;
            sync.delete::<Todo>(&todo.id).await?;
            writeln!(out, "removed {}", line(&todo))?;
        }
        Command::Sync | Command::Status | Command::Watch => {}
    }
    Ok(())
}

/// A progress bar fed by the engine's status; it appears once a run moves
/// more than a handful of records (and only on a terminal).
struct Progress {
    task: tokio::task::JoinHandle<()>,
    bar: std::sync::Arc<std::sync::Mutex<Option<indicatif::ProgressBar>>>,
}

impl Progress {
    const SHOW_FROM: u64 = 20;

    fn start(sync: &SyncManager) -> Progress {
        let mut status = sync.status();
        let bar = std::sync::Arc::new(std::sync::Mutex::new(None));
        let slot = std::sync::Arc::clone(&bar);
        let task = tokio::spawn(async move {
            while status.changed().await.is_ok() {
                let Some(p) = status.borrow_and_update().progress else {
                    continue;
                };
                if p.total < Progress::SHOW_FROM {
                    continue;
                }
                let mut slot = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let bar = slot.get_or_insert_with(|| {
                    let bar = indicatif::ProgressBar::new(p.total);
                    if let Ok(style) = indicatif::ProgressStyle::with_template(
                        "syncing {bar:40} {pos}/{len} records",
                    ) {
                        bar.set_style(style);
                    }
                    bar
                });
                bar.set_length(p.total);
                bar.set_position(p.done);
            }
        });
        Progress { task, bar }
    }

    fn finish(self) {
        self.task.abort();
        let bar = self
            .bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    }
}

async fn sync(cli: &Cli, out: &mut dyn Write) -> Result<()> {
    let sync = open(cli, true, false).await?;
    let result = async {
        reachable(&cli.server).await?;
        let progress = Progress::start(&sync);
        let outcome = sync.sync_all().await;
        progress.finish();
        let report = match outcome {
            Ok(report) => report,
            Err(e) => {
                reachable(&cli.server).await?;
                return fail(format!("sync failed: {e}"));
            }
        };
        writeln!(
            out,
            "synced: pushed {}, pulled {}, conflicts {} ({} ms)",
            report.pushed,
            report.pulled,
            report.conflicts,
            report.duration.as_millis()
        )?;
        if report.retried > 0 {
            return fail(format!(
                "{} change(s) could not be sent this time; run `todo sync` again",
                report.retried
            ));
        }
        let failed = sync.failed_ops().await?;
        if let Some(op) = failed.first() {
            return fail(format!(
                "{} change(s) refused by the server, first: {} ({}); see `todo status`",
                failed.len(),
                short(&op.record_id),
                op.last_error.as_deref().unwrap_or("no reason given")
            ));
        }
        Ok(())
    }
    .await;
    sync.shutdown().await?;
    result
}

async fn status(cli: &Cli, out: &mut dyn Write) -> Result<()> {
    let sync = open(cli, false, false).await?;
    let result = async {
        let todos = sync.all::<Todo>().await?;
        let open = todos.iter().filter(|t| !t.done).count();
        let status = sync.status().borrow().clone();
        writeln!(
            out,
            "database: {} ({} todos, {open} open)",
            cli.db.display(),
            todos.len()
        )?;
        writeln!(out, "pending changes: {}", status.pending_changes)?;
        writeln!(out, "failed changes: {}", status.failed_changes)?;
        for op in sync.failed_ops().await? {
            writeln!(
                out,
                "  {} {:?}: {}",
                short(&op.record_id),
                op.op,
                op.last_error.as_deref().unwrap_or("no reason given")
            )?;
        }
        match reachable(&cli.server).await {
            Ok(()) => writeln!(out, "server: {} (reachable)", cli.server)?,
            Err(e) => writeln!(out, "server: {e}")?,
        }
        Ok(())
    }
    .await;
    sync.shutdown().await?;
    result
}

async fn watch(cli: &Cli, out: &mut dyn Write) -> Result<()> {
    reachable(&cli.server).await?;
    let sync = open(cli, true, true).await?;
    let mut events = sync.events();
    sync.realtime()?.connect()?;
    writeln!(
        out,
        "watching {} for changes (Ctrl-C to stop)",
        ws_url(&cli.server)?
    )?;
    out.flush()?;
    let result = async {
        loop {
            let event = tokio::select! {
                signal = tokio::signal::ctrl_c() => {
                    signal.map_err(|e| CliError(format!("cannot listen for Ctrl-C: {e}")))?;
                    return Ok(());
                }
                event = events.recv() => event,
            };
            let event = match event {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    writeln!(out, "({n} events skipped)")?;
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            };
            let id = event.id().unwrap_or("?");
            let record = || {
                event.data().and_then(|d| {
                    serde_json::from_value::<Todo>(serde_json::Value::Object(d.clone())).ok()
                })
            };
            match event.kind() {
                SyncEventType::ModelAdded => match record() {
                    Some(t) => writeln!(out, "added   {}", line(&t))?,
                    None => writeln!(out, "added   {}", short(id))?,
                },
                SyncEventType::ModelUpdated => match record() {
                    Some(t) => writeln!(out, "changed {}", line(&t))?,
                    None => writeln!(out, "changed {}", short(id))?,
                },
                SyncEventType::ModelDeleted => writeln!(out, "removed {}", short(id))?,
                SyncEventType::ConnectionEstablished => writeln!(out, "(connected)")?,
                SyncEventType::ConnectionClosed => writeln!(out, "(connection lost)")?,
                SyncEventType::Reconnecting => writeln!(out, "(reconnecting)")?,
                _ => continue,
            }
            out.flush()?;
        }
    }
    .await;
    sync.shutdown().await?;
    result
}
