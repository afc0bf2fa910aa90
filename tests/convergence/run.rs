//! One run: start the server and the clients as child processes behind the fault proxy,
//! play the plan's steps, turn the faults off, sync until quiet, and check what the issue
//! promises (every device equals the server, nothing queued, nothing lost or invented, one
//! record per id, versions increasing in pull order).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

use crate::plan::{defaults, owner_of, Backend, Faults, Plan, Step, FIELDS};
use crate::proxy::Proxy;
use crate::TOKEN;

/// Figures of one run.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub client_kills: u64,
    pub server_kills: u64,
    pub lost_responses: u64,
    pub cut_requests: u64,
    pub refused_connections: u64,
    pub conflicts: u64,
    pub writes_acked: u64,
    pub writes_in_flight_at_kill: u64,
    pub settle_rounds: u64,
    /// The longest `sync_all` a client reported (ms) and which client ran it.
    pub slowest_sync_ms: u64,
    pub slowest_sync_client: usize,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.client_kills += other.client_kills;
        self.server_kills += other.server_kills;
        self.lost_responses += other.lost_responses;
        self.cut_requests += other.cut_requests;
        self.refused_connections += other.refused_connections;
        self.conflicts += other.conflicts;
        self.writes_acked += other.writes_acked;
        self.writes_in_flight_at_kill += other.writes_in_flight_at_kill;
        self.settle_rounds += other.settle_rounds;
        if other.slowest_sync_ms > self.slowest_sync_ms {
            self.slowest_sync_ms = other.slowest_sync_ms;
            self.slowest_sync_client = other.slowest_sync_client;
        }
    }

    fn sync_took(&mut self, client: usize, reply: &Value) {
        let ms = reply["ms"].as_u64().unwrap_or(0);
        if ms > self.slowest_sync_ms {
            self.slowest_sync_ms = ms;
            self.slowest_sync_client = client;
        }
    }
}

/// What a run found wrong, by the categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A device differs from the server after everything synced.
    Divergent,
    /// An acknowledged write is not where it must be, or a value nobody wrote appeared.
    Lost,
    /// Two records for one id, or versions not increasing in pull order.
    Duplicate,
    /// Ops pending or failed after the end, or the system never became quiet.
    LeftQueued,
    /// A process died on its own, a command never answered, the harness failed.
    Broken,
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub kind: Kind,
    pub text: String,
}

pub struct Outcome {
    pub stats: Stats,
    pub problems: Vec<Problem>,
    /// The run's directory (kept when it failed): databases and child logs.
    pub dir: PathBuf,
    /// The Postgres schema of a failed run's server, kept.
    pub kept_schema: Option<String>,
}

type Replies = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

struct ClientProc {
    child: Child,
    stdin: ChildStdin,
    replies: Replies,
    killed: Arc<AtomicBool>,
}

struct ServerProc {
    child: Child,
    _stdin: ChildStdin,
    addr: SocketAddr,
}

enum WriteOutcome {
    /// Sent; the answer is in `rx`.
    Waiting(oneshot::Receiver<Value>),
    /// `save`/`delete` returned Ok; the record as written (`None`: deleted).
    Acked(Option<Map<String, Value>>),
    /// The process died before answering (killed while it ran).
    InFlightAtKill,
    /// `save`/`delete` returned an error: nothing was written.
    Refused,
}

struct Write {
    client: usize,
    id: String,
    /// Fields set; `None` for a delete.
    set: Option<Map<String, Value>>,
    outcome: WriteOutcome,
}

struct Ctx<'a> {
    plan: &'a Plan,
    dir: PathBuf,
    exe: PathBuf,
    proxy: Proxy,
    server_db: String,
    problems: Vec<Problem>,
    stats: Stats,
    next_n: u64,
    writes: Vec<Write>,
    clients: Vec<Option<ClientProc>>,
    syncs: Vec<Option<oneshot::Receiver<Value>>>,
    server: Option<ServerProc>,
    /// Children that exited without being killed.
    unexpected: Arc<Mutex<Vec<String>>>,
}

const ANSWER: Duration = Duration::from_secs(60);
/// A `sync_all` longer than this keeps the run's directory for a look at its logs.
pub const SLOW_SYNC_MS: u64 = 10_000;

pub async fn run(plan: &Plan, postgres: Option<&str>) -> Outcome {
    let dir = match tempfile::Builder::new().prefix("convergence-").tempdir() {
        Ok(d) => d.keep(),
        Err(e) => {
            return Outcome {
                stats: Stats::default(),
                problems: vec![broken(format!("temp dir: {e}"))],
                dir: PathBuf::new(),
                kept_schema: None,
            }
        }
    };
    let mut pg_schema = None;
    let server_db = match (plan.backend, postgres) {
        (Backend::Postgres, Some(base)) => match create_schema(base) {
            Ok((url, schema)) => {
                pg_schema = Some((base.to_owned(), schema));
                url
            }
            Err(e) => {
                return Outcome {
                    stats: Stats::default(),
                    problems: vec![broken(e)],
                    dir,
                    kept_schema: None,
                }
            }
        },
        _ => format!("sqlite://{}", dir.join("server.db").display()),
    };
    let outcome = match Proxy::start(plan.seed).await {
        Ok(proxy) => {
            let exe = std::env::current_exe().unwrap_or_default();
            let mut ctx = Ctx {
                plan,
                dir: dir.clone(),
                exe,
                proxy,
                server_db,
                problems: Vec::new(),
                stats: Stats::default(),
                next_n: 0,
                writes: Vec::new(),
                clients: Vec::new(),
                syncs: Vec::new(),
                server: None,
                unexpected: Arc::new(Mutex::new(Vec::new())),
            };
            match tokio::time::timeout(Duration::from_secs(300), ctx.play()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => ctx.problems.push(broken(e)),
                Err(_) => ctx.problems.push(broken("the run took over 300 s".into())),
            }
            ctx.stop_all().await;
            let proxy_stats = ctx.proxy.stats();
            ctx.stats.lost_responses = proxy_stats.dropped_responses.load(Ordering::Relaxed);
            ctx.stats.cut_requests = proxy_stats.cut_requests.load(Ordering::Relaxed);
            ctx.stats.refused_connections = proxy_stats.refused.load(Ordering::Relaxed);
            Outcome {
                stats: ctx.stats,
                problems: ctx.problems,
                dir: dir.clone(),
                kept_schema: None,
            }
        }
        Err(e) => Outcome {
            stats: Stats::default(),
            problems: vec![broken(format!("proxy: {e}"))],
            dir: dir.clone(),
            kept_schema: None,
        },
    };
    let mut outcome = outcome;
    if let Some((base, schema)) = pg_schema {
        if outcome.problems.is_empty() {
            drop_schema(&base, &schema);
        } else {
            // Kept for a look, like the run's directory.
            outcome.kept_schema = Some(schema);
        }
    }
    // Kept when something failed or a sync ran suspiciously long (see its logs).
    if outcome.problems.is_empty() && outcome.stats.slowest_sync_ms < SLOW_SYNC_MS {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

fn broken(text: String) -> Problem {
    Problem {
        kind: Kind::Broken,
        text,
    }
}

fn problem(kind: Kind, text: String) -> Problem {
    Problem { kind, text }
}

fn create_schema(base: &str) -> Result<(String, String), String> {
    use diesel::{Connection, PgConnection, RunQueryDsl};
    let schema = format!("conv_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::establish(base).map_err(|e| format!("postgres {base}: {e}"))?;
    diesel::sql_query(format!("CREATE SCHEMA \"{schema}\""))
        .execute(&mut conn)
        .map_err(|e| format!("create schema: {e}"))?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok((
        format!("{base}{sep}options=-csearch_path%3D{schema}"),
        schema,
    ))
}

fn drop_schema(base: &str, schema: &str) {
    use diesel::{Connection, PgConnection, RunQueryDsl};
    if let Ok(mut conn) = PgConnection::establish(base) {
        let _ = diesel::sql_query(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut conn);
    }
}

fn log_file(path: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

impl Ctx<'_> {
    async fn play(&mut self) -> Result<(), String> {
        self.start_server().await?;
        for client in 0..self.plan.auto_sync.len() {
            let proc = self.start_client(client).await?;
            self.clients.push(Some(proc));
            self.syncs.push(None);
        }
        for step in self.plan.steps.clone() {
            self.step(&step).await?;
        }
        self.settle().await?;
        self.check().await
    }

    async fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Edit { client, id, set } => {
                let cmd = json!({ "op": "edit", "id": id, "set": set });
                let rx = self.send(*client, cmd).await;
                self.writes.push(Write {
                    client: *client,
                    id: id.clone(),
                    set: Some(set.clone()),
                    outcome: WriteOutcome::Waiting(rx),
                });
            }
            Step::Delete { client, id } => {
                let rx = self
                    .send(*client, json!({ "op": "delete", "id": id }))
                    .await;
                self.writes.push(Write {
                    client: *client,
                    id: id.clone(),
                    set: None,
                    outcome: WriteOutcome::Waiting(rx),
                });
            }
            Step::Sync { client } => {
                let busy = match self.syncs[*client].as_mut().map(|rx| rx.try_recv()) {
                    Some(Ok(reply)) => {
                        self.stats.conflicts += reply["conflicts"].as_u64().unwrap_or(0);
                        self.stats.sync_took(*client, &reply);
                        false
                    }
                    Some(Err(oneshot::error::TryRecvError::Empty)) => true,
                    _ => false,
                };
                if !busy {
                    let rx = self.send(*client, json!({ "op": "sync" })).await;
                    self.syncs[*client] = Some(rx);
                }
            }
            Step::Sleep { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
            Step::SetFaults(faults) => self.proxy.set_faults(*faults),
            Step::KillClient { client } => {
                if let Some(mut proc) = self.clients[*client].take() {
                    proc.killed.store(true, Ordering::SeqCst);
                    let _ = proc.child.start_kill();
                    let _ = proc.child.wait().await;
                    self.stats.client_kills += 1;
                }
                self.syncs[*client] = None;
                let proc = self.start_client(*client).await?;
                self.clients[*client] = Some(proc);
            }
            Step::KillServer => {
                self.proxy.set_upstream(None);
                if let Some(mut server) = self.server.take() {
                    let _ = server.child.start_kill();
                    let _ = server.child.wait().await;
                    self.stats.server_kills += 1;
                }
            }
            Step::RestartServer => {
                if self.server.is_none() {
                    self.start_server().await?;
                }
            }
        }
        Ok(())
    }

    async fn start_server(&mut self) -> Result<(), String> {
        let mut child = Command::new(&self.exe)
            .env("CONV_ROLE", "server")
            .env("CONV_SERVER_DB", &self.server_db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file(&self.dir.join("server.log")))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting the server: {e}"))?;
        let stdin = child.stdin.take().ok_or("server stdin")?;
        let stdout = child.stdout.take().ok_or("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let Some(rest) = line.strip_prefix("@@") else {
                    continue;
                };
                let value: Value = serde_json::from_str(rest).unwrap_or(Value::Null);
                if let Some(addr) = value["listening"].as_str() {
                    return addr.parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or("the server did not start (see server.log)")?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.proxy.set_upstream(Some(addr));
        self.server = Some(ServerProc {
            child,
            _stdin: stdin,
            addr,
        });
        Ok(())
    }

    async fn start_client(&mut self, index: usize) -> Result<ClientProc, String> {
        let plan = self.plan;
        let mut child = Command::new(&self.exe)
            .env("CONV_ROLE", "client")
            .env("CONV_DB", self.dir.join(format!("client{index}.db")))
            .env("CONV_URL", self.proxy.url())
            .env("CONV_TRANSPORT", plan.transport.name())
            .env("CONV_STRATEGY", plan.strategy.name())
            .env("CONV_BATCH", plan.batch_size.to_string())
            .env("CONV_DELTA", if plan.delta { "1" } else { "0" })
            .env("CONV_REALTIME", if plan.realtime { "1" } else { "0" })
            .env("CONV_SHORT", if plan.short_timeouts { "1" } else { "0" })
            .env("CONV_AUTO", if plan.auto_sync[index] { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file(&self.dir.join(format!("client{index}.log"))))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting client {index}: {e}"))?;
        let stdin = child.stdin.take().ok_or("client stdin")?;
        let stdout = child.stdout.take().ok_or("client stdout")?;
        let replies: Replies = Arc::new(Mutex::new(HashMap::new()));
        let killed = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let reader_replies = Arc::clone(&replies);
        let reader_killed = Arc::clone(&killed);
        let unexpected = Arc::clone(&self.unexpected);
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Some(rest) = line.strip_prefix("@@") else {
                    continue;
                };
                let value: Value = serde_json::from_str(rest).unwrap_or(Value::Null);
                if value["ready"] == true {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                } else if let Some(n) = value["n"].as_u64() {
                    let tx = reader_replies.lock().ok().and_then(|mut r| r.remove(&n));
                    if let Some(tx) = tx {
                        let _ = tx.send(value);
                    }
                } else if let Some(error) = value["error"].as_str() {
                    if let Ok(mut u) = unexpected.lock() {
                        u.push(format!("client {index}: {error}"));
                    }
                }
            }
            if !reader_killed.load(Ordering::SeqCst) {
                if let Ok(mut u) = unexpected.lock() {
                    u.push(format!(
                        "client {index} exited without being killed (see client{index}.log)"
                    ));
                }
            }
            if let Ok(mut r) = reader_replies.lock() {
                r.clear();
            }
        });
        tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .map_err(|_| format!("client {index} did not start within 60 s"))?
            .map_err(|_| format!("client {index} exited while starting (see client{index}.log)"))?;
        Ok(ClientProc {
            child,
            stdin,
            replies,
            killed,
        })
    }

    /// Sends a command; the receiver fails if the client dies before answering.
    async fn send(&mut self, client: usize, mut command: Value) -> oneshot::Receiver<Value> {
        self.next_n += 1;
        let n = self.next_n;
        command["n"] = json!(n);
        let (tx, rx) = oneshot::channel();
        if let Some(proc) = self.clients[client].as_mut() {
            if let Ok(mut r) = proc.replies.lock() {
                r.insert(n, tx);
            }
            let line = format!("{command}\n");
            if proc.stdin.write_all(line.as_bytes()).await.is_err() {
                if let Ok(mut r) = proc.replies.lock() {
                    r.remove(&n);
                }
            }
        }
        rx
    }

    async fn ask(&mut self, client: usize, command: Value) -> Result<Value, String> {
        let rx = self.send(client, command.clone()).await;
        match tokio::time::timeout(ANSWER, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(format!("client {client} died answering {command}")),
            Err(_) => Err(format!(
                "client {client} did not answer {command} in {ANSWER:?}"
            )),
        }
    }

    /// Faults off, server up, every answer in, then syncs until a whole round changes
    /// nothing anywhere.
    async fn settle(&mut self) -> Result<(), String> {
        self.proxy.set_faults(Faults::default());
        if self.server.is_none() {
            self.start_server().await?;
        }
        for write in &mut self.writes {
            if let WriteOutcome::Waiting(rx) = &mut write.outcome {
                write.outcome = match tokio::time::timeout(ANSWER, rx).await {
                    Ok(Ok(reply)) if reply["ok"] == true => {
                        self.stats.writes_acked += 1;
                        WriteOutcome::Acked(reply["record"].as_object().cloned())
                    }
                    Ok(Ok(_)) => WriteOutcome::Refused,
                    Ok(Err(_)) => {
                        self.stats.writes_in_flight_at_kill += 1;
                        WriteOutcome::InFlightAtKill
                    }
                    Err(_) => {
                        return Err(format!(
                            "a write of {} by client {} never returned",
                            write.id, write.client
                        ))
                    }
                };
            }
        }
        for client in 0..self.syncs.len() {
            if let Some(rx) = self.syncs[client].take() {
                if let Ok(Ok(reply)) = tokio::time::timeout(ANSWER, rx).await {
                    self.stats.conflicts += reply["conflicts"].as_u64().unwrap_or(0);
                    self.stats.sync_took(client, &reply);
                }
            }
        }
        for round in 1..=40u64 {
            self.stats.settle_rounds += 1;
            // A client with automatic sync may push between two clients' runs; a round
            // counts as quiet only if the server did not change while it ran.
            let before = self.server_high_water().await?;
            let mut quiet = true;
            for client in 0..self.clients.len() {
                let reply = self.ask(client, json!({ "op": "sync" })).await?;
                self.stats.sync_took(client, &reply);
                if reply["ok"] != true {
                    quiet = false;
                    continue;
                }
                self.stats.conflicts += reply["conflicts"].as_u64().unwrap_or(0);
                for field in ["pushed", "pulled", "conflicts", "failed"] {
                    if reply[field].as_u64() != Some(0) {
                        quiet = false;
                    }
                }
            }
            for client in 0..self.clients.len() {
                let dump = self.ask(client, json!({ "op": "dump" })).await?;
                if dump["pending"].as_u64() != Some(0) || dump["failed"].as_u64() != Some(0) {
                    quiet = false;
                }
            }
            if quiet && self.server_high_water().await? == before {
                return Ok(());
            }
            if round > 3 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Not quiet: the checks below say why (ops left, devices apart).
        self.problems.push(problem(
            Kind::LeftQueued,
            "40 sync rounds without one that changed nothing".into(),
        ));
        Ok(())
    }

    async fn check(&mut self) -> Result<(), String> {
        let unexpected = self
            .unexpected
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default();
        for text in unexpected {
            self.problems.push(broken(text));
        }
        let server = self.server_records().await?;
        let server_checksum = self.server_checksum().await?;
        // Each device's checksum equals the server's: it knows the same versions of the same
        // records, tombstones included (field-by-field equality does not see versions).
        // `CONVERGENCE_SKIP_CHECKSUMS` turns the comparison off, for a backend that differs.
        let compare_with_server = std::env::var_os("CONVERGENCE_SKIP_CHECKSUMS").is_none();

        // Every device equals the server, with nothing left queued.
        for client in 0..self.clients.len() {
            let dump = self.ask(client, json!({ "op": "dump" })).await?;
            if dump["ok"] != true {
                return Err(format!("dump of client {client}: {dump}"));
            }
            // The checksum the device keeps equals its recount and the server's.
            if dump["checksum"] != dump["checksum_recount"] {
                self.problems.push(problem(
                    Kind::Divergent,
                    format!(
                        "client {client} keeps checksum {} but a recount gives {}",
                        dump["checksum"], dump["checksum_recount"]
                    ),
                ));
            } else if compare_with_server
                && dump["checksum"].as_str() != Some(server_checksum.as_str())
            {
                let digest = self.server_digest().await?;
                let mine: BTreeSet<String> = dump["known"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| e.to_string())
                    .collect();
                let only_mine: Vec<&String> = mine.difference(&digest).collect();
                let only_theirs: Vec<&String> = digest.difference(&mine).collect();
                let history: Vec<String> = self
                    .writes
                    .iter()
                    .filter(|w| {
                        only_mine
                            .iter()
                            .any(|e| e.contains(&format!("\"{}\"", w.id)))
                    })
                    .map(|w| {
                        let outcome = match &w.outcome {
                            WriteOutcome::Waiting(_) => "waiting",
                            WriteOutcome::Acked(_) => "saved",
                            WriteOutcome::InFlightAtKill => "killed",
                            WriteOutcome::Refused => "refused",
                        };
                        let what = if w.set.is_some() { "save" } else { "delete" };
                        format!("c{} {what} {} {outcome}", w.client, w.id)
                    })
                    .collect();
                self.problems.push(problem(
                    Kind::Divergent,
                    format!(
                        "client {client} has checksum {}, the server {server_checksum}: \
                         only on the client {only_mine:?}, only on the server {only_theirs:?}; \
                         writes: {history:?}",
                        dump["checksum"]
                    ),
                ));
            }
            if dump["pending"].as_u64() != Some(0) || dump["failed"].as_u64() != Some(0) {
                self.problems.push(problem(
                    Kind::LeftQueued,
                    format!(
                        "client {client}: {} pending, {} failed {}, last error {}",
                        dump["pending"], dump["failed"], dump["failed_ops"], dump["last_error"]
                    ),
                ));
            }
            let mut local = BTreeMap::new();
            for record in dump["records"].as_array().into_iter().flatten() {
                let id = record["id"].as_str().unwrap_or_default().to_owned();
                if local.insert(id.clone(), fields(record)).is_some() {
                    self.problems.push(problem(
                        Kind::Duplicate,
                        format!("client {client} holds {id} twice"),
                    ));
                }
            }
            let ids: BTreeSet<&String> = local.keys().chain(server.keys()).collect();
            for id in ids {
                let (mine, theirs) = (local.get(id), server.get(id));
                if mine != theirs {
                    self.problems.push(problem(
                        Kind::Divergent,
                        format!("client {client} has {id} = {mine:?}, the server {theirs:?}"),
                    ));
                }
            }
        }

        // Every server value was written by a client (acknowledged or in flight at a kill).
        let mut allowed: HashMap<(&str, &str), BTreeSet<String>> = HashMap::new();
        for write in &self.writes {
            let Some(set) = &write.set else { continue };
            if matches!(
                write.outcome,
                WriteOutcome::Acked(_) | WriteOutcome::InFlightAtKill
            ) {
                for (field, value) in set {
                    allowed
                        .entry((write.id.as_str(), field_name(field)))
                        .or_default()
                        .insert(value.to_string());
                }
            }
        }
        for (id, record) in &server {
            let start = defaults(id);
            for field in FIELDS {
                let value = record.get(field).cloned().unwrap_or(Value::Null);
                let written = allowed
                    .get(&(id.as_str(), field))
                    .is_some_and(|values| values.contains(&value.to_string()));
                if !written && start.get(field) != Some(&value) {
                    self.problems.push(problem(
                        Kind::Lost,
                        format!("the server's {id}.{field} = {value} was never written"),
                    ));
                }
            }
        }

        // Ids only one client writes hold its last acknowledged write (or a later one that
        // was in flight at a kill).
        let mut by_id: BTreeMap<&str, Vec<&Write>> = BTreeMap::new();
        for write in &self.writes {
            by_id.entry(write.id.as_str()).or_default().push(write);
        }
        for (id, writes) in by_id {
            if owner_of(id).is_none() {
                continue;
            }
            let mut candidates: Vec<Option<Map<String, Value>>> = vec![None];
            for write in writes {
                match &write.outcome {
                    WriteOutcome::Acked(record) => {
                        candidates =
                            vec![record.as_ref().map(|r| fields(&Value::Object(r.clone())))]
                    }
                    WriteOutcome::InFlightAtKill => {
                        let after: Vec<_> = candidates
                            .iter()
                            .map(|c| apply(id, c.as_ref(), write.set.as_ref()))
                            .collect();
                        candidates.extend(after);
                    }
                    WriteOutcome::Refused | WriteOutcome::Waiting(_) => {}
                }
            }
            let actual = server.get(id).cloned();
            if !candidates.contains(&actual) {
                self.problems.push(problem(
                    Kind::Lost,
                    format!(
                        "{id} (written by client {} alone) is {actual:?} on the server; expected one of {candidates:?}",
                        owner_of(id).unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The newest version the server holds (tombstones included).
    async fn server_high_water(&mut self) -> Result<i64, String> {
        let (_, newest) = self.pull_server().await?;
        Ok(newest)
    }

    /// Live records of the server by id, checked as `pull_server` says.
    /// The server's (id, version, deleted) of every record, as JSON arrays like the dump's.
    async fn server_digest(&mut self) -> Result<BTreeSet<String>, String> {
        let addr = self.server.as_ref().map(|s| s.addr).ok_or("no server")?;
        let http = reqwest::Client::new();
        let mut out = BTreeSet::new();
        let mut after = String::new();
        for _ in 0..10_000 {
            let page: Value = http
                .get(format!("http://{addr}/sync/digest/todos"))
                .query(&[("after", after.as_str()), ("limit", "1000")])
                .bearer_auth(TOKEN)
                .send()
                .await
                .map_err(|e| format!("digest from the server: {e}"))?
                .json()
                .await
                .map_err(|e| format!("digest from the server: {e}"))?;
            for item in page["items"].as_array().into_iter().flatten() {
                out.insert(json!([item["id"], item["version"], item["deleted"]]).to_string());
            }
            match page["next_after"].as_str() {
                Some(next) => after = next.to_owned(),
                None => break,
            }
        }
        Ok(out)
    }

    /// The server's checksum of the collection (`GET /sync/metadata`).
    async fn server_checksum(&mut self) -> Result<String, String> {
        let addr = self.server.as_ref().map(|s| s.addr).ok_or("no server")?;
        let meta: Value = reqwest::Client::new()
            .get(format!("http://{addr}/sync/metadata"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .map_err(|e| format!("metadata from the server: {e}"))?
            .json()
            .await
            .map_err(|e| format!("metadata from the server: {e}"))?;
        Ok(meta["collections"]["todos"]["checksum"]
            .as_str()
            .unwrap_or("0000000000000000")
            .to_owned())
    }

    async fn server_records(&mut self) -> Result<BTreeMap<String, Map<String, Value>>, String> {
        let (live, _) = self.pull_server().await?;
        Ok(live)
    }

    /// Live records of the server by id, read with a full pull from the start; checks that
    /// versions strictly increase in pull order and that no id comes twice.
    async fn pull_server(&mut self) -> Result<(BTreeMap<String, Map<String, Value>>, i64), String> {
        let addr = self.server.as_ref().map(|s| s.addr).ok_or("no server")?;
        let http = reqwest::Client::new();
        let mut since: Option<String> = None;
        let mut seen = BTreeSet::new();
        let mut last_version = i64::MIN;
        let mut live = BTreeMap::new();
        for _ in 0..10_000 {
            let mut url = format!("http://{addr}/todos?limit=50");
            if let Some(s) = &since {
                url.push_str(&format!("&since={s}"));
            }
            let page: Value = http
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .map_err(|e| format!("pull from the server: {e}"))?
                .json()
                .await
                .map_err(|e| format!("pull from the server: {e}"))?;
            for item in page["items"]
                .as_array()
                .ok_or("a pull page without items")?
            {
                let id = item["id"].as_str().unwrap_or_default().to_owned();
                let version = item["version"].as_i64().unwrap_or(i64::MIN);
                if version <= last_version {
                    self.problems.push(problem(
                        Kind::Duplicate,
                        format!(
                            "version {version} of {id} after version {last_version} in pull order"
                        ),
                    ));
                }
                last_version = version;
                if !seen.insert(id.clone()) {
                    self.problems.push(problem(
                        Kind::Duplicate,
                        format!("{id} came twice in one pull from the start"),
                    ));
                }
                if item["deleted"] != true {
                    live.insert(id, fields(item));
                }
            }
            if page["has_more"] != true {
                return Ok((live, last_version));
            }
            since = Some(
                page["next_cursor"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| page["next_cursor"].to_string()),
            );
        }
        Err("the server's pull never ended".into())
    }

    async fn stop_all(&mut self) {
        for proc in self.clients.iter_mut().flatten() {
            proc.killed.store(true, Ordering::SeqCst);
            let _ = proc.child.start_kill();
            let _ = proc.child.wait().await;
        }
        if let Some(mut server) = self.server.take() {
            let _ = server.child.start_kill();
            let _ = server.child.wait().await;
        }
    }
}

/// The model fields of a record (wire names), without protocol fields.
fn fields(record: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for field in FIELDS {
        out.insert(
            field.to_owned(),
            record.get(field).cloned().unwrap_or(Value::Null),
        );
    }
    out
}

fn field_name(field: &str) -> &'static str {
    FIELDS.into_iter().find(|f| *f == field).unwrap_or("?")
}

/// A write applied on top of a record that may or may not exist.
fn apply(
    id: &str,
    before: Option<&Map<String, Value>>,
    set: Option<&Map<String, Value>>,
) -> Option<Map<String, Value>> {
    let set = set?;
    let mut record = before
        .cloned()
        .unwrap_or_else(|| fields(&Value::Object(defaults(id))));
    for (field, value) in set {
        record.insert(field.clone(), value.clone());
    }
    Some(record)
}
