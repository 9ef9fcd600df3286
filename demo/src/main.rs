//! `demo`: a rolling deploy (v1 -> v2, waves 1-4-4-1 for 10 servers) of the reference patent's
//! money-transfer app behind a real Envoy, under the same simulated users and seed, with five
//! setups: round robin, Envoy retries on 409, sticky sessions, mixmode, and mixmode with version
//! affinity. Prints one rescue in detail, progress, a comparison table, and writes a chart and a
//! JSON summary.

mod chart;
mod cli;
mod envoy;
mod fleet;
mod liveness;
mod pool;
mod run;
mod setup;
mod soak;
mod table;
mod users;
mod walkthrough;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser as _;

use crate::cli::{Cli, DemoArgs, Job};
use crate::run::run_setup;
use crate::setup::Setup;

fn wasm_path() -> Result<PathBuf> {
    let wasm = match std::env::var_os("MIXMODE_WASM") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/wasm32-wasip1/release/mixmode.wasm"),
    };
    if !wasm.is_file() {
        bail!(
            "mixmode.wasm not found at {}: run `just demo` (it builds it) or \
             `cargo build -p mixmode --release --target wasm32-wasip1`, or set MIXMODE_WASM",
            wasm.display()
        );
    }
    Ok(wasm.canonicalize().unwrap_or(wasm))
}

async fn run(args: DemoArgs) -> Result<bool> {
    let started = Instant::now();
    let o = &args.opts;
    if args.fleet {
        return run_fleet(&args, started).await;
    }
    if args.walkthrough {
        walkthrough::walkthrough(o).await?;
    }
    let sizes: Vec<String> = o.plan.waves.iter().map(|w| w.len().to_string()).collect();
    println!("== Rolling deploy, v1 -> v2 ==");
    println!(
        "  {} servers, waves {} (drain {:.2} s, down {:.2} s, then {:.2} s before the next wave), {} users, \
         think {}-{} ms, seed {}; about {:.0} s per setup.",
        o.servers,
        sizes.join("-"),
        o.plan.drain.as_secs_f64(),
        o.plan.down.as_secs_f64(),
        o.plan.wave_wait.as_secs_f64(),
        o.workload.users,
        o.workload.think_ms.0,
        o.workload.think_ms.1,
        o.workload.seed,
        o.plan.total().as_secs_f64(),
    );
    println!(
        "  Draining: the server leaves Envoy's pool (no new requests) but keeps serving and stays\n  registered with mixmode for one session length; then it deregisters, stops, and restarts as v2."
    );
    let mut results = Vec::new();
    for setup in &args.setups {
        println!("-- {} --", setup.describe());
        let key = setup.key();
        let r = run_setup(*setup, o, &|m| println!("  [{key:<16}] {m}")).await?;
        println!(
            "  [{key:<16}] done: {} transfers completed, {} lost",
            r.completed, r.failed
        );
        results.push(r);
    }
    println!();
    println!("== Comparison (same users, same seed, same rollout) ==");
    println!("{}", table::render(&results));
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let svg = args.out.join("failures.svg");
    chart::failures_svg(&svg, &results)?;
    let summary = args.out.join("summary.json");
    std::fs::write(&summary, serde_json::to_vec_pretty(&results)?)?;
    println!("chart: {}", svg.display());
    println!("summary: {}", summary.display());
    println!("total time {:.1} s", started.elapsed().as_secs_f64());

    let mut ok = true;
    for r in &results {
        if (r.setup == Setup::Mixmode.key() || r.setup == Setup::MixmodeAffinity.key())
            && r.lost_with_peer > 0
        {
            eprintln!(
                "FAIL: {} lost {} transfers whose version still had a server ({:?})",
                r.setup, r.lost_with_peer, r.failures
            );
            ok = false;
        }
        if r.setup == Setup::RoundRobin.key() && r.failed == 0 {
            eprintln!(
                "FAIL: round robin lost no transfer: the workload does not exercise a mixed pool"
            );
            ok = false;
        }
    }
    Ok(ok)
}

async fn run_fleet(args: &DemoArgs, started: Instant) -> Result<bool> {
    let o = &args.opts;
    let sizes: Vec<String> = o.plan.waves.iter().map(|w| w.len().to_string()).collect();
    println!("== Rolling deploy, v1 -> v2, on a fleet: two Envoys, one etcd ==");
    println!(
        "  {} servers, waves {}, {} users split between the two Envoys, seed {}; about {:.0} s.",
        o.servers,
        sizes.join("-"),
        o.workload.users,
        o.workload.seed,
        (o.plan.total() + fleet::MIRROR_LAG * 2 * o.plan.waves.len() as u32).as_secs_f64(),
    );
    println!(
        "  The servers register in etcd (lease TTL 2 s); a server revokes its lease before it\n  stops and registers again with its new version after it restarts. Each Envoy mirrors etcd."
    );
    let (r, rescues) = fleet::run_fleet(o).await?;
    println!(
        "  [{:<13}] done: {} transfers completed, {} lost",
        fleet::KEY,
        r.completed,
        r.failed
    );
    println!();
    println!("{}", table::render(std::slice::from_ref(&r)));
    for (name, e) in ["A", "B"].iter().zip(&rescues) {
        println!(
            "Envoy {name} (pid {}): {} requests rescued (re-dispatched to a peer)",
            e.pid, e.redispatched
        );
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let summary = args.out.join("fleet-summary.json");
    std::fs::write(&summary, serde_json::to_vec_pretty(&r)?)?;
    println!("summary: {}", summary.display());
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    if r.lost_with_peer > 0 {
        eprintln!(
            "FAIL: the fleet lost {} transfers whose version still had a server ({:?})",
            r.lost_with_peer, r.failures
        );
        return Ok(false);
    }
    Ok(true)
}

async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return "Ctrl-C",
                _ = term.recv() => return "SIGTERM",
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

fn main() -> ExitCode {
    // Bad flags exit 2 with clap's message; --help exits 0.
    let cli = Cli::parse();
    let job = match wasm_path().and_then(|wasm| cli.job(wasm)) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("demo: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async {
        tokio::select! {
            // Dropping the run future drops every Envoy handle it owns, which kills that Envoy.
            r = async {
                match job {
                    Job::Demo(args) => run(args).await,
                    Job::Soak(o) => soak::soak(&o).await,
                }
            } => match r {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("demo: {e:#}");
                    ExitCode::FAILURE
                }
            },
            why = interrupted() => {
                eprintln!("demo: {why}: stopping Envoy and the servers");
                ExitCode::from(130)
            }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    code
}
