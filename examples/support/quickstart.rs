//! The quickstart's flow, shared by `examples/quickstart.rs` (which prints it)
//! and `tests/quickstart.rs` (which checks the final states it returns), so the
//! example cannot rot.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use offline_sync_kit::prelude::*;
use offline_sync_kit::store::Resolution;
use offline_sync_kit::ManualConnectivity;
use serde::{Deserialize, Serialize};
use sync_server::SyncServer;
use tokio::sync::broadcast;

/// Any failure of the quickstart, as one line of text.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one model of the quickstart.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "todos")]
#[serde(rename_all = "camelCase")]
pub struct Todo {
    /// Record id.
    #[sync(id)]
    pub id: String,
    /// What to do.
    pub title: String,
    /// Done yet?
    pub done: bool,
    /// Higher is more urgent.
    #[sync(index)]
    pub priority: i32,
}

/// The record as each side has it at the end.
#[derive(Debug, Clone, PartialEq)]
pub struct QuickstartOutcome {
    /// Every record in client A's store.
    pub a: Vec<Todo>,
    /// Every record in client B's store.
    pub b: Vec<Todo>,
    /// Every live record on the server, read over HTTP.
    pub server: Vec<Todo>,
}

const USER: &str = "alice";
const TOKEN: &str = "alice-secret-token";
const ID: &str = "todo-1";
/// Longest wait for anything the quickstart expects to happen.
const WAIT: Duration = Duration::from_secs(10);

/// Awaits `fut`, or fails with "timed out ... waiting for `what`".
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> Result<T, BoxError> {
    tokio::time::timeout(WAIT, fut)
        .await
        .map_err(|_| format!("timed out after {WAIT:?} waiting for {what}").into())
}

/// Waits for an event of `kind` about record `id`.
async fn event(
    events: &mut broadcast::Receiver<SyncEvent>,
    kind: SyncEventType,
    id: &str,
) -> Result<SyncEvent, BoxError> {
    within(&format!("a {kind:?} event for {id}"), async {
        loop {
            match events.recv().await {
                Ok(e) if e.kind() == kind && e.id() == Some(id) => return Ok(e),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(BoxError::from("the client's event channel closed"))
                }
            }
        }
    })
    .await?
}

async fn get(sync: &SyncManager, who: &str) -> Result<Todo, BoxError> {
    sync.get::<Todo>(ID)
        .await?
        .ok_or_else(|| format!("{who} has no record {ID}").into())
}

/// Every live record on the server (one page is plenty here).
async fn server_records(base: &str) -> Result<Vec<Todo>, BoxError> {
    let page: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/todos?limit=1000"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let items = page["items"]
        .as_array()
        .ok_or("the server's page has no `items` array")?;
    let mut out = Vec::new();
    for item in items {
        if item.get("deleted") != Some(&serde_json::Value::Bool(true)) {
            out.push(serde_json::from_value(item.clone())?);
        }
    }
    Ok(out)
}

fn show(t: &Todo) -> String {
    format!(
        "{{title: {:?}, done: {}, priority: {}}}",
        t.title, t.done, t.priority
    )
}

fn time_of(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%H:%M:%S%.3f").to_string()
}

/// Runs the whole loop on one machine and narrates it to `out`.
pub async fn run_quickstart(out: &mut dyn Write) -> Result<QuickstartOutcome, BoxError> {
    let dir = tempfile::tempdir()?;

    // The reference backend, in process, on an embedded SQLite file.
    let server_db = dir.path().join("server.db");
    let server = SyncServer::builder()
        .database(format!("sqlite://{}", server_db.display()))
        .token(USER, TOKEN)
        .build()
        .await?
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await?)?;
    let base = server.url();
    writeln!(out, "offline-sync-kit quickstart")?;
    writeln!(
        out,
        "  server: sync-server at {base} on {}",
        server_db.display()
    )?;

    // Both clients sync only when told to, so the order of events below is the
    // order you read. (Apps usually leave `auto_sync` on.)
    let mut options = SyncOptions::default();
    options.auto_sync = false;
    options.conflict_strategy = ConflictStrategy::MergeFields;

    let net_a = ManualConnectivity::new(false);
    let a = SyncManager::builder()
        .base_url(&base)
        .store(DieselStore::open_sqlite(dir.path().join("a.db")).await?)
        .bearer_token(TOKEN)
        .model::<Todo>()
        .options(options.clone())
        .connectivity(net_a.clone())
        .build()
        .await?;
    let b = SyncManager::builder()
        .base_url(&base)
        .store(DieselStore::open_sqlite(dir.path().join("b.db")).await?)
        .bearer_token(TOKEN)
        .model::<Todo>()
        .options(options)
        .websocket(WebSocketConfig::new(server.ws_url()))
        .build()
        .await?;
    // The server confirms each subscription; wait for it so nothing is missed.
    let (subscribed_tx, mut subscribed) = tokio::sync::watch::channel(false);
    let subscribed_tx = Arc::new(subscribed_tx);
    b.realtime()?.on_message("subscribed", move |_| {
        subscribed_tx.send_replace(true);
    });
    let mut b_events = b.events();
    b.realtime()?.connect()?;
    within(
        "B's WebSocket subscription",
        subscribed.wait_for(|done| *done),
    )
    .await??;
    writeln!(
        out,
        "  clients: A and B, each with its own SQLite file, same user; B listens on {}",
        server.ws_url()
    )?;

    // 1. Offline first.
    writeln!(out, "\n1. A saves while offline")?;
    let todo = Todo {
        id: ID.into(),
        title: "Buy milk".into(),
        done: false,
        priority: 1,
    };
    a.save(&todo).await?;
    let pending = a.status().borrow().pending_changes;
    writeln!(
        out,
        "   A (offline): saved {} -> pending changes: {pending}",
        show(&todo)
    )?;
    if pending != 1 {
        return Err(format!("expected 1 pending change on A, found {pending}").into());
    }
    let mut a_status = a.status();
    net_a.set_online(true);
    within(
        "A's reconnect sync",
        a_status.wait_for(|s| s.pending_changes == 0 && s.last_sync_time.is_some()),
    )
    .await??;
    writeln!(
        out,
        "   A: back online -> the reconnect sync pushed it; pending changes: {}",
        a.status().borrow().pending_changes
    )?;

    // 2. Realtime.
    writeln!(out, "\n2. B receives it in realtime")?;
    event(&mut b_events, SyncEventType::ModelAdded, ID).await?;
    writeln!(
        out,
        "   B: {} arrived over the WebSocket (ModelAdded), no sync call",
        show(&get(&b, "B").await?)
    )?;

    // 3. Different fields: both edits survive.
    writeln!(
        out,
        "\n3. Both edit the record, different fields (ConflictStrategy::MergeFields)"
    )?;
    let mut eb = get(&b, "B").await?;
    eb.done = true;
    b.save(&eb).await?;
    writeln!(out, "   B: marks it done (not synced yet)")?;
    let mut ea = get(&a, "A").await?;
    ea.priority = 3;
    a.save(&ea).await?;
    a.sync_all().await?;
    writeln!(out, "   A: raises priority to 3 and syncs first")?;
    event(&mut b_events, SyncEventType::ConflictResolved, ID).await?;
    let merged = get(&b, "B").await?;
    writeln!(
        out,
        "   B: A's update arrives while B's edit is pending -> conflict, merged per field: {}",
        show(&merged)
    )?;
    b.sync_all().await?;
    a.sync_all().await?;
    let on_a = get(&a, "A").await?;
    writeln!(
        out,
        "   B syncs its merged edit (pending changes: {}), A pulls -> A has {}",
        b.status().borrow().pending_changes,
        show(&on_a)
    )?;
    if !(on_a.done && on_a.priority == 3) {
        return Err(format!("MergeFields lost an edit: A has {}", show(&on_a)).into());
    }

    // 4. Same field: the strategy's tie-break decides.
    writeln!(out, "\n4. Both rename it (same field)")?;
    let mut eb = get(&b, "B").await?;
    eb.title = "Buy oat milk".into();
    b.save(&eb).await?;
    let b_time = chrono::Utc::now();
    writeln!(
        out,
        "   B: renames it to {:?} at {} (not synced yet)",
        eb.title,
        time_of(b_time)
    )?;
    // Keep the two writes apart on the millisecond clock the tie-break compares.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut ea = get(&a, "A").await?;
    ea.title = "Buy soy milk".into();
    a.save(&ea).await?;
    let a_time = chrono::Utc::now();
    a.sync_all().await?;
    writeln!(
        out,
        "   A: renames it to {:?} at {} and syncs",
        ea.title,
        time_of(a_time)
    )?;
    let resolved = event(&mut b_events, SyncEventType::ConflictResolved, ID).await?;
    b.sync_all().await?;
    a.sync_all().await?;
    let title = get(&b, "B").await?.title;
    let how = match resolved {
        SyncEvent::ConflictResolved { resolution, .. } => match resolution {
            Resolution::TakeRemote => "take_remote",
            Resolution::KeepLocal => "keep_local",
            Resolution::Merged(_) => "merged",
        },
        _ => "resolved",
    };
    let winner = if title == ea.title {
        "A's rename won: it is the later write (it reached the server after B's local edit)"
    } else if title == eb.title {
        "B's rename won: it is the later write"
    } else {
        return Err(
            format!("the same-field conflict produced an unexpected title {title:?}").into(),
        );
    };
    writeln!(
        out,
        "   B: conflict on `title` ({how}). Both sides changed it, so MergeFields falls back to its tie-break, the last writer:\n   {winner}."
    )?;

    // 5. Everyone agrees.
    writeln!(out, "\n5. Final state")?;
    let outcome = QuickstartOutcome {
        a: a.all::<Todo>().await?,
        b: b.all::<Todo>().await?,
        server: server_records(&base).await?,
    };
    for (who, records) in [
        ("A", &outcome.a),
        ("B", &outcome.b),
        ("server", &outcome.server),
    ] {
        let shown: Vec<String> = records.iter().map(show).collect();
        writeln!(out, "   {who:<7} {}", shown.join(", "))?;
    }
    if outcome.a != outcome.b || outcome.a != outcome.server {
        return Err("the final states differ (see above)".into());
    }
    writeln!(out, "   identical on A, B and the server.")?;

    a.shutdown().await?;
    b.shutdown().await?;
    server.shutdown().await?;
    Ok(outcome)
}
