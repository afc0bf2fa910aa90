//! What encryption costs (issue 15), in one run, each figure next to its baseline:
//!
//! - (a) local saves through `SyncManager` (one save per transaction; `save_all` batches of
//!   500) on a store opened without a key vs the same build's SQLCipher store with a raw key;
//! - (b) reads on both: `get` by id, an indexed filtered query (`limit 50`), and `all()`
//!   over the whole table; plus the time to open each file, and a `rekey`;
//! - (c) end-to-end encrypted fields: a model with one `#[sync(encrypted)]` field vs the same
//!   model without it. Field encryption happens at the remote boundary (push and pull), not on
//!   `save`, so this part measures a local save of both models (which should not differ),
//!   `seal_value` / `open_value` per value, and a push and a pull of N records each to and from
//!   a real `sync-server` on 127.0.0.1.
//!
//! ```text
//! cargo bench --bench encryption --features encryption
//! SYNC_BENCH_SECS=5 cargo bench --bench encryption --features encryption   # longer cases
//! SYNC_BENCH_PUSH_N=20000 ...        # records per push round (3 rounds per variant)
//! SYNC_BENCH_QUERY_N=50000 ...       # records in the stores the reads run on
//! ```
//!
//! Cargo unifies features: in this build every SQLite file (the "plain" store here and the
//! server's database) goes through SQLCipher; "plain" is SQLCipher opened without a key,
//! which reads and writes ordinary SQLite files.
//!
//! Both variants of a case do the same number of operations, in alternating rounds (the
//! leader of a round runs for its share of the time budget, the other then does as many
//! operations), so the stores grow alike and drifts of a shared machine hit both.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use offline_sync_kit::envelope::{open_value, seal_value};
use offline_sync_kit::prelude::*;
use offline_sync_kit::StoreKey;
use offline_sync_kit::{FieldKey, StaticKeys};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sync_server::{RunningServer, SyncServer};

const USER: &str = "alice";
const TOKEN: &str = "alice-secret-token";
const ROUNDS: u32 = 3;
const BATCH: usize = 500;
const STORE_KEY: [u8; 32] = [0x5a; 32];
const PASSPHRASE: &str = "correct horse battery staple";

/// The record of every case: about 190 bytes of JSON, one indexed field.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(model_type = "note", endpoint = "notes")]
struct Note {
    #[sync(id)]
    id: String,
    title: String,
    body: String,
    done: bool,
    #[sync(index)]
    priority: i32,
}

/// The same record with its `body` end-to-end encrypted.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(model_type = "secret_note", endpoint = "secret_notes")]
struct SecretNote {
    #[sync(id)]
    id: String,
    title: String,
    #[sync(encrypted)]
    body: String,
    done: bool,
    #[sync(index)]
    priority: i32,
}

fn body(n: u64) -> String {
    format!(
        "Note {n}: call the plumber about the kitchen tap, then pay the invoice from March \
         and ask about the boiler service."
    )
}

fn note(prefix: &str, n: u64) -> Note {
    Note {
        id: format!("{prefix}-{n:09}"),
        title: format!("Note number {n}"),
        body: body(n),
        done: n.is_multiple_of(3),
        priority: (n % 10) as i32,
    }
}

fn secret_note(prefix: &str, n: u64) -> SecretNote {
    let Note {
        id,
        title,
        body,
        done,
        priority,
    } = note(prefix, n);
    SecretNote {
        id,
        title,
        body,
        done,
        priority,
    }
}

fn field_keys() -> StaticKeys {
    StaticKeys::new("bench-1", FieldKey::new([7; 32]))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// Clients and stores.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Lock {
    /// Opened without a key (SQLCipher linked, no encryption).
    None,
    /// SQLCipher with a raw 256-bit key.
    Raw,
}

async fn open_store(path: &Path, lock: Lock) -> DieselStore {
    let options = DieselStore::sqlite(path);
    match lock {
        Lock::None => options.open().await,
        Lock::Raw => options.key(StoreKey::raw(STORE_KEY)).open().await,
    }
    .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

fn local_options() -> SyncOptions {
    let mut options = SyncOptions::default();
    options.auto_sync = false;
    options
}

/// A client of `Note` only: no field keys, so no encryption layer on its remote.
async fn client(url: &str, store: DieselStore, options: SyncOptions) -> SyncManager {
    SyncManager::builder()
        .base_url(url)
        .store(store)
        .bearer_token(TOKEN)
        .model::<Note>()
        .options(options)
        .build()
        .await
        .expect("building the client")
}

/// A client of `SecretNote` with its field keys.
async fn secret_client(url: &str, store: DieselStore, options: SyncOptions) -> SyncManager {
    SyncManager::builder()
        .base_url(url)
        .store(store)
        .bearer_token(TOKEN)
        .model::<SecretNote>()
        .field_keys(field_keys())
        .options(options)
        .build()
        .await
        .expect("building the client")
}

/// One side of a paired case: a client and its own id counter.
struct Side {
    sync: SyncManager,
    prefix: String,
    next: u64,
    /// Records in the store the reads run on.
    query_n: u64,
}

#[derive(Debug, Clone, Copy)]
enum Case {
    SaveOne,
    SaveBatch,
    SaveOneSecret,
    Get,
    Filtered,
    All,
}

impl Side {
    fn new(sync: SyncManager, prefix: &str) -> Side {
        Side {
            sync,
            prefix: prefix.to_owned(),
            next: 0,
            query_n: 0,
        }
    }

    /// One operation of `case`; returns how many records it wrote or read.
    async fn op(&mut self, case: Case) -> u64 {
        let sync = &self.sync;
        match case {
            Case::SaveOne => {
                self.next += 1;
                sync.save(&note(&self.prefix, self.next)).await.unwrap();
                1
            }
            Case::SaveOneSecret => {
                self.next += 1;
                sync.save(&secret_note(&self.prefix, self.next))
                    .await
                    .unwrap();
                1
            }
            Case::SaveBatch => {
                let batch: Vec<Note> = (0..BATCH as u64)
                    .map(|i| note(&self.prefix, self.next + 1 + i))
                    .collect();
                self.next += BATCH as u64;
                sync.save_all(&batch).await.unwrap();
                BATCH as u64
            }
            Case::Get => {
                self.next += 1;
                let n = (self.next * 7919) % self.query_n;
                let found = sync.get::<Note>(&note(&self.prefix, n).id).await.unwrap();
                assert!(found.is_some(), "record {n} missing");
                1
            }
            Case::Filtered => {
                self.next += 1;
                let f = Note::fields();
                let rows = sync
                    .query(
                        Query::new()
                            .filter(f.priority.eq((self.next % 10) as i32))
                            .order_by(f.title.desc())
                            .limit(50),
                    )
                    .await
                    .unwrap();
                rows.len() as u64
            }
            Case::All => sync.all::<Note>().await.unwrap().len() as u64,
        }
    }
}

/// Operations, records and seconds of one side.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ops: u64,
    records: u64,
    secs: f64,
}

impl Tally {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

/// Runs `cases[i]` on side `i`, in alternating rounds with equal operation counts.
async fn paired(cases: [Case; 2], sides: &mut [Side; 2], budget: Duration) -> [Tally; 2] {
    let share = budget / ROUNDS;
    let mut tallies = [Tally::default(); 2];
    for round in 0..ROUNDS {
        let (lead, follow) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
        let started = Instant::now();
        let mut ops = 0u64;
        while started.elapsed() < share {
            tallies[lead].records += sides[lead].op(cases[lead]).await;
            ops += 1;
        }
        tallies[lead].secs += started.elapsed().as_secs_f64();
        tallies[lead].ops += ops;
        let started = Instant::now();
        for _ in 0..ops {
            tallies[follow].records += sides[follow].op(cases[follow]).await;
        }
        tallies[follow].secs += started.elapsed().as_secs_f64();
        tallies[follow].ops += ops;
    }
    tallies
}

fn cost(base: f64, other: f64) -> String {
    // Both are rates: the slowdown of `other` against `base`.
    format!("{:.2}x the time", base / other)
}

// ---------------------------------------------------------------------------------------------
// Parts.

async fn start_server(dir: &Path) -> RunningServer {
    let db = format!("sqlite://{}", dir.join("server.db").display());
    SyncServer::builder()
        .database(db)
        .token(USER, TOKEN)
        .build()
        .await
        .expect("building the server")
        .spawn(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("binding 127.0.0.1"),
        )
        .expect("starting the server")
}

async fn part_a(url: &str, dir: &Path, budget: Duration) {
    println!("(a) local saves through SyncManager (record + outbox op per save, WAL, synchronous=NORMAL)");
    let plain = client(
        url,
        open_store(&dir.join("a-plain.db"), Lock::None).await,
        local_options(),
    )
    .await;
    let cipher = client(
        url,
        open_store(&dir.join("a-cipher.db"), Lock::Raw).await,
        local_options(),
    )
    .await;
    let mut sides = [Side::new(plain, "a"), Side::new(cipher, "a")];
    println!(
        "  {:<34} {:>14} {:>14} {:>16}",
        "case", "no key", "SQLCipher key", "cost"
    );
    let t = paired([Case::SaveOne; 2], &mut sides, budget).await;
    println!(
        "  {:<34} {:>10.0} /s {:>10.0} /s {:>16}",
        "save, one per transaction",
        t[0].records_per_sec(),
        t[1].records_per_sec(),
        cost(t[0].records_per_sec(), t[1].records_per_sec())
    );
    let t = paired([Case::SaveBatch; 2], &mut sides, budget).await;
    println!(
        "  {:<34} {:>10.0} /s {:>10.0} /s {:>16}",
        format!("save_all, batches of {BATCH}"),
        t[0].records_per_sec(),
        t[1].records_per_sec(),
        cost(t[0].records_per_sec(), t[1].records_per_sec())
    );
    println!(
        "  (records in each store at the end: {}; each save also refreshes the outbox counts)",
        sides[0].next
    );
    for side in &sides {
        side.sync.shutdown().await.unwrap();
    }
}

async fn fill(sync: &SyncManager, prefix: &str, n: u64) {
    let mut start = 0;
    while start < n {
        let end = (start + 1000).min(n);
        let batch: Vec<Note> = (start..end).map(|i| note(prefix, i)).collect();
        sync.save_all(&batch).await.unwrap();
        start = end;
    }
}

/// Median time to open the store at `path` (and check it, for an encrypted file).
async fn open_time(path: &Path, key: Option<StoreKey>) -> f64 {
    let mut times = Vec::new();
    for _ in 0..5 {
        let mut options = DieselStore::sqlite(path);
        if let Some(key) = key.clone() {
            options = options.key(key);
        }
        let started = Instant::now();
        let store = options.open().await.unwrap();
        times.push(started.elapsed().as_secs_f64() * 1e3);
        drop(store);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

async fn part_b(url: &str, dir: &Path, budget: Duration, query_n: u64) {
    println!("(b) reads through SyncManager, {query_n} records in each store");
    let plain_path = dir.join("b-plain.db");
    let cipher_path = dir.join("b-cipher.db");
    let plain = client(
        url,
        open_store(&plain_path, Lock::None).await,
        local_options(),
    )
    .await;
    let cipher = client(
        url,
        open_store(&cipher_path, Lock::Raw).await,
        local_options(),
    )
    .await;
    fill(&plain, "b", query_n).await;
    fill(&cipher, "b", query_n).await;
    let mut sides = [Side::new(plain, "b"), Side::new(cipher, "b")];
    for side in &mut sides {
        side.query_n = query_n;
    }
    println!(
        "  {:<34} {:>14} {:>14} {:>16}",
        "case", "no key", "SQLCipher key", "cost"
    );
    let t = paired([Case::Get; 2], &mut sides, budget).await;
    println!(
        "  {:<34} {:>10.0} /s {:>10.0} /s {:>16}",
        "get by id",
        t[0].ops_per_sec(),
        t[1].ops_per_sec(),
        cost(t[0].ops_per_sec(), t[1].ops_per_sec())
    );
    let t = paired([Case::Filtered; 2], &mut sides, budget).await;
    println!(
        "  {:<34} {:>10.0} /s {:>10.0} /s {:>16}",
        "query priority = p, limit 50",
        t[0].ops_per_sec(),
        t[1].ops_per_sec(),
        cost(t[0].ops_per_sec(), t[1].ops_per_sec())
    );
    let t = paired([Case::All; 2], &mut sides, budget).await;
    println!(
        "  {:<34} {:>10.0} /s {:>10.0} /s {:>16}",
        "all() (records read per second)",
        t[0].records_per_sec(),
        t[1].records_per_sec(),
        cost(t[0].records_per_sec(), t[1].records_per_sec())
    );
    for side in &sides {
        side.sync.shutdown().await.unwrap();
    }
    drop(sides);

    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let plain_ms = open_time(&plain_path, None).await;
    let raw_ms = open_time(&cipher_path, Some(StoreKey::raw(STORE_KEY))).await;
    println!(
        "  open (median of 5, {:.1} MB file): no key {plain_ms:.1} ms; raw key {raw_ms:.1} ms \
         (an encrypted file is checked page by page at open)",
        size(&cipher_path)
    );
    let store = open_store(&cipher_path, Lock::Raw).await;
    let started = Instant::now();
    store
        .rekey(StoreKey::passphrase(PASSPHRASE))
        .expect("rekey to a passphrase");
    let rekey_ms = started.elapsed().as_secs_f64() * 1e3;
    drop(store);
    let pass_ms = open_time(&cipher_path, Some(StoreKey::passphrase(PASSPHRASE))).await;
    println!(
        "  rekey of that file: {rekey_ms:.0} ms; open with a passphrase (PBKDF2-HMAC-SHA512, \
         256,000 iterations): {pass_ms:.1} ms"
    );
}

/// Seals and opens `value` for `budget`; (seal, open) in µs per value.
fn seal_open_micros(value: &Value, budget: Duration) -> (f64, f64) {
    let keys = field_keys();
    let started = Instant::now();
    let mut n = 0u64;
    let mut last = Value::Null;
    while started.elapsed() < budget / 2 {
        last =
            std::hint::black_box(seal_value(&keys, "secret_note", "id-1", "body", value).unwrap());
        n += 1;
    }
    let seal = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    let opened = open_value(&keys, "secret_note", "id-1", "body", &last).unwrap();
    assert_eq!(&opened, value);
    let started = Instant::now();
    let mut m = 0u64;
    while started.elapsed() < budget / 2 {
        std::hint::black_box(open_value(&keys, "secret_note", "id-1", "body", &last).unwrap());
        m += 1;
    }
    (seal, started.elapsed().as_secs_f64() * 1e6 / m as f64)
}

async fn part_c(url: &str, dir: &Path, budget: Duration, push_n: u64) {
    println!(
        "(c) end-to-end encrypted fields: `SecretNote` (body #[sync(encrypted)]) vs the same `Note`"
    );
    println!("  stores without a key here, to isolate the field encryption");
    let plain = client(
        url,
        open_store(&dir.join("c-local-plain.db"), Lock::None).await,
        local_options(),
    )
    .await;
    let secret = secret_client(
        url,
        open_store(&dir.join("c-local-secret.db"), Lock::None).await,
        local_options(),
    )
    .await;
    let mut sides = [Side::new(plain, "c"), Side::new(secret, "c")];
    let t = paired([Case::SaveOne, Case::SaveOneSecret], &mut sides, budget).await;
    println!(
        "  {:<34} {:>14} {:>14} {:>16}",
        "case", "Note", "SecretNote", "cost"
    );
    println!(
        "  {:<34} {:>10.0} /s {:>10.0} /s {:>16}",
        "local save, one per transaction",
        t[0].records_per_sec(),
        t[1].records_per_sec(),
        cost(t[0].records_per_sec(), t[1].records_per_sec())
    );
    for side in &sides {
        side.sync.shutdown().await.unwrap();
    }
    drop(sides);

    let value = Value::String(body(1));
    let (seal, open) = seal_open_micros(&value, budget);
    let big = Value::String("x".repeat(4096));
    let (seal_big, open_big) = seal_open_micros(&big, budget);
    println!(
        "  seal_value / open_value per value: {}-byte string {seal:.2} / {open:.2} µs; \
         4 KiB string {seal_big:.2} / {open_big:.2} µs",
        body(1).len()
    );

    // Push: each round seeds N records of each model in its own store (untimed), then times
    // `sync_all` (push only, batches of 500) of one model, then of the other.
    let mut push_options = local_options();
    push_options.direction = SyncDirection::PushOnly;
    push_options.batch_size = BATCH;
    let plain = client(
        url,
        open_store(&dir.join("c-push-plain.db"), Lock::None).await,
        push_options.clone(),
    )
    .await;
    let secret = secret_client(
        url,
        open_store(&dir.join("c-push-secret.db"), Lock::None).await,
        push_options,
    )
    .await;
    let mut push = [Tally::default(); 2];
    let mut bytes = [0u64; 2];
    for round in 0..u64::from(ROUNDS) {
        let first = (0..push_n).map(|i| round * push_n + i);
        let notes: Vec<Note> = first.clone().map(|i| note("p", i)).collect();
        let secrets: Vec<SecretNote> = first.map(|i| secret_note("p", i)).collect();
        for chunk in notes.chunks(1000) {
            plain.save_all(chunk).await.unwrap();
        }
        for chunk in secrets.chunks(1000) {
            secret.save_all(chunk).await.unwrap();
        }
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let sync = if i == 0 { &plain } else { &secret };
            let started = Instant::now();
            let report = sync.sync_all().await.unwrap();
            push[i].secs += started.elapsed().as_secs_f64();
            assert_eq!(report.pushed, push_n, "{report:?}");
            assert_eq!(report.failed, 0, "{report:?}");
            push[i].records += report.pushed;
            bytes[i] += report.bytes_sent;
        }
    }
    plain.shutdown().await.unwrap();
    secret.shutdown().await.unwrap();
    println!(
        "  {:<34} {:>10.0} /s {:>10.0} /s {:>16}",
        format!("push to sync-server ({} records)", push[0].records),
        push[0].records_per_sec(),
        push[1].records_per_sec(),
        cost(push[0].records_per_sec(), push[1].records_per_sec())
    );
    let per_record_us = |t: &Tally| t.secs * 1e6 / t.records.max(1) as f64;
    println!(
        "  {:<34} {:>11.1} µs {:>11.1} µs {:>13.1} µs",
        "  per record pushed",
        per_record_us(&push[0]),
        per_record_us(&push[1]),
        per_record_us(&push[1]) - per_record_us(&push[0])
    );
    println!(
        "  {:<34} {:>12.0} B {:>12.0} B {:>15.0} B",
        "  request bytes per record",
        bytes[0] as f64 / push[0].records.max(1) as f64,
        bytes[1] as f64 / push[1].records.max(1) as f64,
        (bytes[1] as f64 - bytes[0] as f64) / push[1].records.max(1) as f64
    );

    // Pull everything pushed into fresh stores, twice each, alternating.
    let mut pull = [Tally::default(); 2];
    let mut pull_options = local_options();
    pull_options.batch_size = 1000;
    for run in 0..2u32 {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let path = dir.join(format!("c-pull-{i}-{run}.db"));
            let store = open_store(&path, Lock::None).await;
            let sync = if i == 0 {
                client(url, store, pull_options.clone()).await
            } else {
                secret_client(url, store, pull_options.clone()).await
            };
            let started = Instant::now();
            let report = if i == 0 {
                sync.pull::<Note>().await.unwrap()
            } else {
                sync.pull::<SecretNote>().await.unwrap()
            };
            pull[i].secs += started.elapsed().as_secs_f64();
            pull[i].records += report.pulled;
            if i == 1 {
                let n = (push_n * u64::from(ROUNDS)) / 2;
                let got = sync
                    .get::<SecretNote>(&secret_note("p", n).id)
                    .await
                    .unwrap();
                assert_eq!(got, Some(secret_note("p", n)), "pulled value decrypted");
            }
            sync.shutdown().await.unwrap();
        }
    }
    println!(
        "  {:<34} {:>10.0} /s {:>10.0} /s {:>16}",
        format!("pull into a fresh store ({} records)", pull[0].records),
        pull[0].records_per_sec(),
        pull[1].records_per_sec(),
        cost(pull[0].records_per_sec(), pull[1].records_per_sec())
    );
    println!(
        "  {:<34} {:>11.1} µs {:>11.1} µs {:>13.1} µs",
        "  per record pulled",
        per_record_us(&pull[0]),
        per_record_us(&pull[1]),
        per_record_us(&pull[1]) - per_record_us(&pull[0])
    );
}

async fn run() {
    let secs: f64 = env_or("SYNC_BENCH_SECS", 1.5);
    let budget = Duration::from_secs_f64(secs);
    let push_n: u64 = env_or("SYNC_BENCH_PUSH_N", 5_000);
    let query_n: u64 = env_or("SYNC_BENCH_QUERY_N", 10_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = start_server(dir.path()).await;
    let url = server.url();
    println!(
        "encryption: {secs} s per variant per case (SYNC_BENCH_SECS), {ROUNDS} alternating rounds \
         with equal operation counts; release build"
    );
    println!(
        "  this build links SQLCipher for every SQLite file: \"no key\" is SQLCipher opened \
         without a key (an ordinary SQLite file), \"SQLCipher key\" a raw 256-bit key; \
         sync-server runs in this process on a SQLite file without a key, over 127.0.0.1"
    );
    println!(
        "  record: {} B of JSON ({} B of it the body)",
        serde_json::to_vec(&note("a", 1)).unwrap().len(),
        body(1).len()
    );
    let started = Instant::now();
    part_a(&url, dir.path(), budget).await;
    part_b(&url, dir.path(), budget, query_n).await;
    part_c(&url, dir.path(), budget, push_n).await;
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    server.shutdown().await.expect("stopping the server");
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run());
}
