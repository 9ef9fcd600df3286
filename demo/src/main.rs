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
use crate::pool::DrainBy;
use crate::run::{run_setup, RunOptions};
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
         think {}-{} ms, seed {}; about {:.0} s per setup (drain by demand: longer).",
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
        "  Draining: the server leaves Envoy's pool (no new requests) but keeps serving and stays\n  registered with mixmode; then it deregisters, stops, and restarts as v2. Fixed: after\n  {:.2} s. By demand (mixmode setups): the last servers of v1 stay until the Envoy has not\n  needed v1 for the quiet time; the others leave after {:.2} s (v1 servers remain).",
        o.plan.drain.as_secs_f64(),
        o.plan.drain.as_secs_f64(),
    );
    let mut results = Vec::new();
    for setup in &args.setups {
        for mode in modes_for(setup.uses_mixmode(), &args.drain_modes) {
            let o = with_drain(o, mode);
            let r = run_setup_drained(*setup, &o, args.drain_modes.len() > 1).await?;
            results.push(r);
        }
    }
    println!();
    println!("== Comparison (same users, same seed, same rollout) ==");
    println!("{}", table::render(&results));
    println!();
    println!("== Drains per wave (how long the old servers stayed out of the load balancer, still serving) ==");
    println!("{}", table::render_drains(&results));
    println!();
    println!("== Step latency by kind ==");
    println!("{}", table::render_step_kinds(&results));
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
        for (i, w) in r.waves.iter().enumerate() {
            if w.why.starts_with("max wait") {
                // Not a loss, but the drain did not end quiet: say so (README.md, "Draining").
                eprintln!(
                    "NOTE: {} ({}) wave {} ended at the max wait: {}",
                    r.setup,
                    r.drain,
                    i + 1,
                    w.why
                );
            }
        }
        if r.drain.starts_with("demand") && r.failed > 0 {
            eprintln!(
                "FAIL: {} drained by demand and still lost {} transfers ({:?})",
                r.setup, r.failed, r.failures
            );
            ok = false;
        }
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

/// The drain modes a setup runs with: without mixmode there is no demand to read.
fn modes_for(mixmode: bool, modes: &[DrainBy]) -> Vec<DrainBy> {
    if mixmode {
        modes.to_vec()
    } else {
        vec![DrainBy::Fixed]
    }
}

fn with_drain(o: &RunOptions, mode: DrainBy) -> RunOptions {
    let mut o = o.clone();
    o.plan.drain_by = mode;
    o
}

async fn run_setup_drained(
    setup: Setup,
    o: &RunOptions,
    name_drain: bool,
) -> Result<run::SetupResult> {
    let key = setup.key();
    let label = if name_drain {
        format!(", {} drain", o.plan.drain_by.key())
    } else {
        String::new()
    };
    println!("-- {}{label} --", setup.describe());
    let r = run_setup(setup, o, &|m| println!("  [{key:<16}] {m}")).await?;
    println!(
        "  [{key:<16}] done: {} transfers completed, {} lost",
        r.completed, r.failed
    );
    Ok(r)
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
    let mut results = Vec::new();
    let mut ok = true;
    for mode in &args.drain_modes {
        let o = with_drain(o, *mode);
        let (r, rescues) = fleet::run_fleet(&o).await?;
        println!(
            "  [{:<13}] done ({} drain): {} transfers completed, {} lost",
            fleet::KEY,
            mode.key(),
            r.completed,
            r.failed
        );
        for (name, e) in ["A", "B"].iter().zip(&rescues) {
            println!(
                "  Envoy {name} (pid {}): {} requests rescued (re-dispatched to a peer)",
                e.pid, e.redispatched
            );
        }
        if r.lost_with_peer > 0 {
            eprintln!(
                "FAIL: the fleet lost {} transfers whose version still had a server ({:?})",
                r.lost_with_peer, r.failures
            );
            ok = false;
        }
        if r.drain.starts_with("demand") && r.failed > 0 {
            eprintln!(
                "FAIL: the fleet drained by demand and still lost {} transfers ({:?})",
                r.failed, r.failures
            );
            ok = false;
        }
        results.push(r);
    }
    println!();
    println!("{}", table::render(&results));
    println!();
    println!("{}", table::render_drains(&results));
    println!();
    println!("== Step latency by kind ==");
    println!("{}", table::render_step_kinds(&results));
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let summary = args.out.join("fleet-summary.json");
    std::fs::write(&summary, serde_json::to_vec_pretty(&results)?)?;
    println!("summary: {}", summary.display());
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    Ok(ok)
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
                    Job::Demo(args) => run(*args).await,
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
