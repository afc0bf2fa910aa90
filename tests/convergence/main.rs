//! The randomized fault suite: several client devices on their own SQLite files and one
//! sync-server, each a child process of this binary, talk through a fault proxy on
//! 127.0.0.1 that delays, cuts requests part-way, drops answers after the server sent them
//! and partitions the network; clients and the server are SIGKILLed and started again on
//! their files. Each run ends with the faults off, syncs until quiet and checks that every
//! device equals the server, nothing is left queued, no acknowledged write is lost, no
//! value appears that nobody wrote, no id is held twice and versions increase in pull order.
//!
//! - `CONVERGENCE_RUNS=N` runs N runs on SQLite (default 40);
//!   `CONVERGENCE_PG_RUNS=N` runs N more on a Postgres-backed server when
//!   `SYNC_TEST_POSTGRES_URL` is set (default 8);
//! - `SEED=S` makes run `i` use seed `S + i` (`SEED=S RUNS=1` replays one failed run's
//!   choices; `RUNS` is read when `CONVERGENCE_RUNS` is unset); `CONVERGENCE_BACKEND=postgres`
//!   replays on Postgres;
//! - `CONVERGENCE_JOBS=N` runs N runs at once (default 2).
//!
//! A failed run prints its seed, its configuration, what it found and the directory with
//! its databases and the children's logs.

#![allow(clippy::unwrap_used, unreachable_pub)]

mod child;
mod plan;
mod proxy;
mod run;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use sync_testkit::{ALICE, POSTGRES_URL_ENV};

use crate::plan::{Backend, Plan};
use crate::run::{Kind, Stats};

pub const USER: &str = ALICE.0;
pub const TOKEN: &str = ALICE.1;

/// The record every client writes.
pub use sync_testkit::Todo;

fn env_u64(names: &[&str], default: u64) -> u64 {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn main() -> ExitCode {
    match std::env::var("CONV_ROLE").as_deref() {
        Ok("client") => return role(child::client_main()),
        Ok("server") => return role(child::server_main()),
        _ => {}
    }
    // `cargo test -- --list` and filters: this suite is one test named `convergence`.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("convergence: test");
        return ExitCode::SUCCESS;
    }
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-')) {
        if !"convergence".contains(filter.as_str()) {
            return ExitCode::SUCCESS;
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("convergence: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if runtime.block_on(orchestrate()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn role(result: Result<(), child::BoxError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("child failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn orchestrate() -> bool {
    let postgres = std::env::var(POSTGRES_URL_ENV).ok();
    let replay_backend = match std::env::var("CONVERGENCE_BACKEND").as_deref() {
        Ok("postgres") => Some(Backend::Postgres),
        Ok("sqlite") => Some(Backend::Sqlite),
        _ => None,
    };
    let sqlite_runs = env_u64(&["CONVERGENCE_RUNS", "RUNS"], 40);
    let pg_runs = env_u64(&["CONVERGENCE_PG_RUNS"], 8);
    let jobs = env_u64(&["CONVERGENCE_JOBS"], 2).max(1) as usize;
    let base_seed = match std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(seed) => seed,
        None => fastrand::u64(..) >> 16,
    };
    let mut plans = Vec::new();
    let mut seed = base_seed;
    match replay_backend {
        Some(Backend::Postgres) if postgres.is_none() => {
            eprintln!("convergence: CONVERGENCE_BACKEND=postgres needs {POSTGRES_URL_ENV}");
            return false;
        }
        Some(backend) => {
            for _ in 0..sqlite_runs {
                plans.push(Plan::generate(seed, backend));
                seed = seed.wrapping_add(1);
            }
        }
        None => {
            for _ in 0..sqlite_runs {
                plans.push(Plan::generate(seed, Backend::Sqlite));
                seed = seed.wrapping_add(1);
            }
            if postgres.is_some() {
                for _ in 0..pg_runs {
                    plans.push(Plan::generate(seed, Backend::Postgres));
                    seed = seed.wrapping_add(1);
                }
            } else {
                println!(
                    "convergence: skipping the Postgres-backed runs: set {POSTGRES_URL_ENV} \
                     (e.g. postgres://postgres@127.0.0.1:5432/test) to run them"
                );
            }
        }
    }
    println!(
        "convergence: {} runs from seed {base_seed}, {jobs} at a time",
        plans.len()
    );
    let started = Instant::now();
    let postgres = Arc::new(postgres);
    let limit = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut tasks = Vec::new();
    for plan in plans {
        let limit = Arc::clone(&limit);
        let postgres = Arc::clone(&postgres);
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let begun = Instant::now();
            let outcome = run::run(&plan, postgres.as_deref()).await;
            (plan, outcome, begun.elapsed())
        }));
    }
    let mut total = Stats::default();
    let mut failed_runs = 0u64;
    let mut by_kind = std::collections::BTreeMap::<Kind, u64>::new();
    let mut runs = 0u64;
    for task in tasks {
        let Ok((plan, outcome, took)) = task.await else {
            failed_runs += 1;
            *by_kind.entry(Kind::Broken).or_default() += 1;
            continue;
        };
        runs += 1;
        total.add(&outcome.stats);
        let s = &outcome.stats;
        if outcome.problems.is_empty() {
            println!(
                "ok   {plan} in {:.1}s: {} client kills, {} server kills, {} lost responses, {} cut requests, {} conflicts, {} acked writes, slowest sync {} ms (client {})",
                took.as_secs_f64(),
                s.client_kills,
                s.server_kills,
                s.lost_responses,
                s.cut_requests,
                s.conflicts,
                s.writes_acked,
                s.slowest_sync_ms,
                s.slowest_sync_client
            );
            if s.slowest_sync_ms >= run::SLOW_SYNC_MS {
                println!(
                    "     slow sync: files and logs kept in {}",
                    outcome.dir.display()
                );
            }
        } else {
            failed_runs += 1;
            println!("FAIL {plan} in {:.1}s", took.as_secs_f64());
            for p in &outcome.problems {
                *by_kind.entry(p.kind).or_default() += 1;
                println!("     {:?}: {}", p.kind, p.text);
            }
            println!(
                "     replay: SEED={} RUNS=1 CONVERGENCE_BACKEND={} cargo test --test convergence",
                plan.seed,
                match plan.backend {
                    Backend::Sqlite => "sqlite",
                    Backend::Postgres => "postgres",
                }
            );
            println!("     files and logs: {}", outcome.dir.display());
            if let Some(schema) = &outcome.kept_schema {
                println!("     the server's data: Postgres schema {schema}");
            }
        }
    }
    let count = |k: Kind| by_kind.get(&k).copied().unwrap_or(0);
    println!(
        "convergence: {runs} runs in {:.0}s, {failed_runs} failed; {} client kills, {} server kills, \
         {} lost responses, {} cut requests, {} refused connections, {} conflicts, {} acked writes, \
         {} writes in flight at a kill, slowest sync {} ms; problems: {} divergent, {} lost, {} duplicates, {} left queued, {} broken",
        started.elapsed().as_secs_f64(),
        total.client_kills,
        total.server_kills,
        total.lost_responses,
        total.cut_requests,
        total.refused_connections,
        total.conflicts,
        total.writes_acked,
        total.writes_in_flight_at_kill,
        total.slowest_sync_ms,
        count(Kind::Divergent),
        count(Kind::Lost),
        count(Kind::Duplicate),
        count(Kind::LeftQueued),
        count(Kind::Broken),
    );
    failed_runs == 0
}
