//! `demo`: a rolling deploy (v1 -> v2, waves 1-4-4-1 for 10 servers) of the reference patent's
//! money-transfer app behind a real Envoy, under the same simulated users and seed, with four
//! setups: round robin, Envoy retries on 409, sticky sessions, and mixmode. Prints one rescue in
//! detail, progress, a comparison table, and writes a chart and a JSON summary.

mod chart;
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

use anyhow::{anyhow, bail, Context as _, Result};

use crate::pool::{wave_sizes, waves_of, Plan};
use crate::run::{run_setup, RunOptions};
use crate::setup::Setup;
use crate::users::Workload;

const USAGE: &str = "\
usage: demo [--quick] [--servers N] [--users N] [--seed N] [--duration SECS | --wave-wait SECS]
            [--drain SECS] [--waves 1,4,4,1] [--setups round-robin,retry-409,sticky,mixmode]
            [--envoy-workers N] [--out DIR] [--no-walkthrough] [--fleet]
       demo --soak [--duration SECS] [--servers N] [--users N] [--envoy-workers N]

  --quick        short run for CI (~25 s): shorter warm-up, downtime and waits
  --servers      app servers in the pool (default 10)
  --users        simulated users running transfers back to back (default 8)
  --seed         seed of the users' think times and recipients (default 42)
  --duration     load time per setup; sets the wait between waves to fit
  --wave-wait    wait between waves, after a wave is back up (default 1.5 s)
  --drain        how long a drained server keeps serving before it stops (default 0.75 s,
                 about one session: 4 steps with 20-60 ms think time)
  --out          where the chart and summary go (default demo-out)
  --fleet        the mixmode setup only, as a fleet: two Envoys in front of the pool, both
                 mirroring a real etcd (/usr/bin/etcd) where the servers register with leases;
                 users split between the two Envoys
Environment: MIXMODE_WASM (the filter; default target/wasm32-wasip1/release/mixmode.wasm),
ENVOY_BIN (default `envoy` on the PATH).";

struct Args {
    opts: RunOptions,
    setups: Vec<Setup>,
    out: PathBuf,
    walkthrough: bool,
    fleet: bool,
}

fn secs(v: &str) -> Result<Duration> {
    let s: f64 = v
        .parse()
        .map_err(|_| anyhow!("not a number of seconds: {v}"))?;
    if !(0.0..=3600.0).contains(&s) {
        bail!("seconds out of range: {v}");
    }
    Ok(Duration::from_secs_f64(s))
}

fn parse_args() -> Result<Option<Args>> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let quick = argv.iter().any(|a| a == "--quick");
    let mut servers = 10usize;
    let mut users = 8usize;
    let mut seed = 42u64;
    let mut duration = None;
    let mut wave_wait = None;
    let mut drain = None;
    let mut sizes = None;
    let mut setups = Setup::ALL.to_vec();
    let mut out = PathBuf::from("demo-out");
    let mut walkthrough = true;
    let mut fleet = false;
    let mut envoy_workers = 2usize;
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--quick" => {}
            "--no-walkthrough" => walkthrough = false,
            "--fleet" => fleet = true,
            "--servers" => servers = val()?.parse()?,
            "--users" => users = val()?.parse()?,
            "--seed" => seed = val()?.parse()?,
            "--envoy-workers" => envoy_workers = val()?.parse()?,
            "--duration" => duration = Some(secs(&val()?)?),
            "--wave-wait" => wave_wait = Some(secs(&val()?)?),
            "--drain" => drain = Some(secs(&val()?)?),
            "--out" => out = PathBuf::from(val()?),
            "--waves" => {
                sizes = Some(
                    val()?
                        .split(',')
                        .map(|s| s.trim().parse::<usize>())
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
            "--setups" => {
                let v = val()?;
                setups = v
                    .split(',')
                    .map(|k| {
                        Setup::ALL
                            .into_iter()
                            .find(|s| s.key() == k.trim())
                            .ok_or_else(|| anyhow!("unknown setup {k:?}"))
                    })
                    .collect::<Result<_>>()?;
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if !(2..=200).contains(&servers) || !(1..=500).contains(&users) || envoy_workers == 0 {
        bail!("need 2..=200 servers, 1..=500 users, at least one Envoy worker");
    }
    let sizes = sizes.unwrap_or_else(|| wave_sizes(servers));
    if sizes.iter().sum::<usize>() != servers || sizes.contains(&0) {
        bail!("--waves {sizes:?} must add up to --servers {servers}");
    }
    let mut plan = if quick {
        Plan {
            waves: waves_of(&sizes),
            warmup: Duration::from_millis(500),
            // As long as the default: a session cut short by a slow, busy CI machine would
            // otherwise count as mixmode's loss.
            drain: Duration::from_millis(750),
            down: Duration::from_millis(200),
            wave_wait: Duration::from_millis(500),
            tail: Duration::from_millis(500),
        }
    } else {
        Plan {
            waves: waves_of(&sizes),
            warmup: Duration::from_millis(1500),
            drain: Duration::from_millis(750),
            down: Duration::from_millis(300),
            wave_wait: Duration::from_millis(1500),
            tail: Duration::from_millis(1000),
        }
    };
    if let Some(d) = drain {
        plan.drain = d;
    }
    match (wave_wait, duration) {
        (Some(w), _) => plan.wave_wait = w,
        (None, Some(total)) => {
            let gaps = plan.waves.len().saturating_sub(1).max(1) as u32;
            plan.wave_wait = Duration::ZERO;
            let fixed = plan.total();
            plan.wave_wait = total.saturating_sub(fixed) / gaps;
        }
        (None, None) => {}
    }
    let wasm = wasm_path()?;
    Ok(Some(Args {
        opts: RunOptions {
            servers,
            workload: Workload {
                users,
                seed,
                think_ms: (20, 60),
            },
            plan,
            wasm,
            envoy_workers,
        },
        setups,
        out,
        walkthrough,
        fleet,
    }))
}

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

enum Job {
    Demo(Args),
    Soak(soak::SoakOptions),
}

fn parse_job() -> Result<Option<Job>> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--soak") {
        return Ok(soak::parse(&argv, wasm_path()?)?.map(Job::Soak));
    }
    Ok(parse_args()?.map(Job::Demo))
}

async fn run(args: Args) -> Result<bool> {
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
        let r = run_setup(*setup, o, &|m| println!("  [{key:<11}] {m}")).await?;
        println!(
            "  [{key:<11}] done: {} transfers completed, {} lost",
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
        if r.setup == Setup::Mixmode.key() && r.lost_with_peer > 0 {
            eprintln!(
                "FAIL: mixmode lost {} transfers whose version still had a server ({:?})",
                r.lost_with_peer, r.failures
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

async fn run_fleet(args: &Args, started: Instant) -> Result<bool> {
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
    let job = match parse_job() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
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
