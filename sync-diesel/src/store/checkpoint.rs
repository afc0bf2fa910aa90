//! WAL checkpoints off the commit path.
//!
//! In WAL mode SQLite appends each commit to the `-wal` file and, by default, the connection
//! whose commit takes the WAL past 1,000 pages copies the WAL back into the database file and
//! syncs it (a checkpoint) before that commit returns: one save in a few hundred then takes
//! 10-20 ms instead of 0.2 ms. Here the store's connection checkpoints only as a backstop
//! ([`BACKSTOP_PAGES`]); a thread of the store's own does the work with a second connection,
//! a passive checkpoint a moment after writes, which never blocks the writer (readers and the
//! writer go on while frames are copied; SQLite resets the WAL at the next write after a
//! complete checkpoint).
//!
//! Durability is SQLite's own either way: a commit is in the WAL when it returns, and a
//! checkpoint only moves committed frames. The thread never creates a file: its connection is
//! opened once, on a file the store has just opened, and held until the store is dropped; a
//! re-write of the file (`enable_encryption`, `rekey`, ...) closes it first ([`Checkpointer::pause`])
//! and opens it again on the new file ([`Checkpointer::resume`]).

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::sqlite::SqliteConnection;
use diesel::Connection;

use super::SqliteOptions;

/// WAL pages after which the store's own connection checkpoints at commit anyway: only
/// reached when the thread falls behind (or cannot run), so the WAL stays bounded.
pub(super) const BACKSTOP_PAGES: u32 = 4_000;

/// How long the thread waits after a write before it checkpoints, so that a burst of commits
/// is copied in one go.
const SETTLE: Duration = Duration::from_millis(20);

/// The store's checkpoint thread.
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the thread (a write, a pause, a resume, the end) and the callers waiting for it.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The file to checkpoint; `None` while paused.
    options: Option<SqliteOptions>,
    /// Writes since the last checkpoint.
    dirty: bool,
    /// Whether the thread holds a connection now.
    connected: bool,
    /// The store is gone: the thread ends.
    stop: bool,
    /// Checkpoints run, and WAL frames they copied (for tests and diagnostics).
    runs: u64,
    copied: u64,
    /// The last checkpoint's failure, if it failed.
    last_error: Option<String>,
    /// Checkpoints asked for by `flush`, and the last request a finished checkpoint had
    /// started after: a flush waits for a checkpoint that began after it asked.
    requested: u64,
    served: u64,
}

/// What the checkpoints did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoints run by the store's thread.
    pub runs: u64,
    /// WAL frames they copied into the database file.
    pub frames_copied: u64,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Checkpointer {
    /// Starts the thread on the file of `options` (already open and migrated by the store).
    /// `None` if the thread cannot be started: the store then checkpoints at commit, as
    /// SQLite does by default.
    pub(super) fn start(options: &SqliteOptions) -> Option<Checkpointer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                options: Some(options.clone()),
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("sync-checkpoint".into())
            .spawn(move || run(&for_thread))
            .map_err(
                |e| tracing::warn!(error = %e, "no checkpoint thread; checkpoints run at commit"),
            )
            .ok()?;
        Some(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    /// A write committed.
    pub(super) fn wrote(&self) {
        let mut state = lock(&self.shared.state);
        if !state.dirty {
            state.dirty = true;
            self.shared.changed.notify_all();
        }
    }

    /// Closes the thread's connection and waits until it is closed: the file is about to be
    /// re-written.
    #[cfg_attr(not(feature = "encryption"), allow(dead_code))]
    pub(super) fn pause(&self) {
        let mut state = lock(&self.shared.state);
        state.options = None;
        self.shared.changed.notify_all();
        while state.connected && !state.stop {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Opens the thread's connection again, on the file of `options`.
    #[cfg_attr(not(feature = "encryption"), allow(dead_code))]
    pub(super) fn resume(&self, options: &SqliteOptions) {
        let mut state = lock(&self.shared.state);
        state.options = Some(options.clone());
        state.dirty = true;
        self.shared.changed.notify_all();
    }

    /// Runs a checkpoint now and waits for it (tests; a caller that wants the WAL folded in).
    pub(super) fn flush(&self) -> Result<CheckpointStats, String> {
        let mut state = lock(&self.shared.state);
        state.requested += 1;
        let request = state.requested;
        state.dirty = true;
        self.shared.changed.notify_all();
        while state.served < request && !state.stop && state.options.is_some() {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        match &state.last_error {
            Some(err) => Err(err.clone()),
            None => Ok(CheckpointStats {
                runs: state.runs,
                frames_copied: state.copied,
            }),
        }
    }

    /// What the checkpoints did so far.
    pub(super) fn stats(&self) -> CheckpointStats {
        let state = lock(&self.shared.state);
        CheckpointStats {
            runs: state.runs,
            frames_copied: state.copied,
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the thread does next.
enum Step {
    /// Paused: let the file go.
    Close,
    /// Open the connection on this file (the key is copied only for this).
    Open(SqliteOptions),
    /// Writes happened: checkpoint.
    Checkpoint,
}

/// The thread: waits for writes, lets a burst settle, checkpoints passively.
fn run(shared: &Shared) {
    let mut conn: Option<SqliteConnection> = None;
    loop {
        let step = {
            let mut state = lock(&shared.state);
            loop {
                if state.stop {
                    return;
                }
                match (&state.options, &conn) {
                    (None, Some(_)) => break Step::Close,
                    (Some(options), None) => {
                        let options = options.clone();
                        // Counted as connected from here, under the same lock that read the
                        // options, so that a `pause` from now on waits for this connection.
                        state.connected = true;
                        break Step::Open(options);
                    }
                    (Some(_), Some(_)) if state.dirty => break Step::Checkpoint,
                    _ => {}
                }
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        match step {
            Step::Close => {
                drop(conn.take());
                lock(&shared.state).connected = false;
                shared.changed.notify_all();
            }
            // A pause may come during the open: the loop looks again before checkpointing.
            Step::Open(options) => match open(&options) {
                Ok(c) => conn = Some(c),
                Err(err) => {
                    tracing::warn!(error = %err, "the checkpoint thread cannot open the store; checkpoints run at commit");
                    let mut state = lock(&shared.state);
                    state.connected = false;
                    state.last_error = Some(err);
                    // Nothing more to do until the file is opened again (a resume).
                    state.options = None;
                    state.runs += 1;
                    state.served = state.requested;
                    shared.changed.notify_all();
                }
            },
            Step::Checkpoint => {
                std::thread::sleep(SETTLE);
                let Some(c) = conn.as_mut() else { continue };
                let serves = {
                    let mut state = lock(&shared.state);
                    state.dirty = false;
                    state.requested
                };
                let outcome = checkpoint(c);
                let mut state = lock(&shared.state);
                state.runs += 1;
                state.served = state.served.max(serves);
                match outcome {
                    Ok(frames) => {
                        state.copied = state.copied.saturating_add(frames);
                        state.last_error = None;
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "a background checkpoint failed; the next write tries again");
                        state.last_error = Some(err);
                    }
                }
                shared.changed.notify_all();
            }
        }
    }
}

/// The thread's connection: the store's file as it is (never created here), its key, a busy
/// timeout.
fn open(options: &SqliteOptions) -> Result<SqliteConnection, String> {
    let path = &options.path;
    if !path.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    let url = path
        .to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", path.display()))?;
    let mut conn = SqliteConnection::establish(url).map_err(|e| e.to_string())?;
    #[cfg(feature = "encryption")]
    super::cipher::unlock(&mut conn, path, options.key.as_ref()).map_err(|e| e.to_string())?;
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {};",
        options.busy_timeout.as_millis()
    ))
    .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// One passive checkpoint; the WAL frames it copied.
fn checkpoint(conn: &mut SqliteConnection) -> Result<u64, String> {
    use diesel::sql_types::BigInt;
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        checkpointed: i64,
    }
    let rows: Vec<Row> = diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)")
        .load(conn)
        .map_err(|e| e.to_string())?;
    // -1 when the file is not in WAL mode (a re-write under way): nothing copied.
    Ok(rows
        .first()
        .map_or(0, |r| u64::try_from(r.checkpointed).unwrap_or(0)))
}
