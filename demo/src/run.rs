//! One setup, start to finish: a fresh v1 pool, its Envoy, the users, the rollout, then what
//! happened, counted from the users' side and from Envoy's and the servers'.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use mixmode_register::DemandSource;
use mixmode_tests::app::HeartbeatClient;
use serde::Serialize;

use crate::envoy;
use crate::pool::{deploy, DrainBy, Plan, Pool, PoolView, WaveTimes};
use crate::setup::{plugin_config, render_yaml, Render, Setup, HEARTBEAT_PATH, TOKEN};
use crate::users::{run_user, Live, Step, Tx, Workload};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub servers: usize,
    pub workload: Workload,
    pub plan: Plan,
    pub wasm: PathBuf,
    pub envoy_workers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetupResult {
    pub setup: String,
    pub description: String,
    /// How old servers were drained: "fixed 0.75 s" or "demand (quiet 590 ms)".
    pub drain: String,
    pub completed: usize,
    pub failed: usize,
    pub failure_rate: f64,
    /// Failures by reason ("409 version", "409 no-peer", "503", ...).
    pub failures: BTreeMap<String, usize>,
    /// Failed transactions whose session's version still had a registered server (mixmode can
    /// rescue those); the rest ended `no-peer`.
    pub lost_with_peer: usize,
    /// 409s the servers answered (Envoy's per-status upstream counters, pool and peers).
    pub mismatches: u64,
    /// Requests sent again: Envoy's retries, or mixmode's re-dispatch attempts.
    pub resends: u64,
    /// Steps a peer answered after a rescue.
    pub rescued_steps: usize,
    /// Transactions with at least one rescued step.
    pub rescued_sessions: usize,
    pub steps_sent: usize,
    /// App requests the servers received beyond the users' steps.
    pub extra_upstream: usize,
    pub p50_step_ms: f64,
    pub p99_step_ms: f64,
    /// The step latencies by kind (`plain`, `cookie`, `rescued`, `cookie+rescued`): where a
    /// setup's p99 comes from (a rescued step is two upstream requests; a `cookie` step was
    /// hinted by mixmode+affinity).
    pub step_kinds: BTreeMap<String, KindStats>,
    /// Every step (when, how long, its kind), for analyses the table does not make.
    pub steps: Vec<Step>,
    pub mixmode_metrics: BTreeMap<String, u64>,
    pub waves: Vec<WaveTimes>,
    pub duration_s: f64,
    pub transactions: Vec<Tx>,
}

/// Runs `setup`; `say` prints a progress line.
pub async fn run_setup(
    setup: Setup,
    o: &RunOptions,
    say: &(dyn Fn(String) + Sync),
) -> Result<SetupResult> {
    let dir = tempfile::Builder::new().prefix("mixmode-demo-").tempdir()?;
    let eds = dir.path().join("pool.json");
    let mut pool = Pool::start(o.servers, "1", eds.clone()).await?;
    let cfg = plugin_config(TOKEN, setup)?;
    let yaml = render_yaml(&Render {
        setup,
        wasm: &o.wasm,
        plugin_config: &cfg,
        upstreams: &pool.addrs(),
        eds_path: &eds,
    })?;
    let envoy = envoy::start(&yaml, o.envoy_workers)
        .await
        .with_context(|| format!("start Envoy for {}", setup.key()))?;
    say(format!(
        "Envoy pid {} on {} ({} servers v1)",
        envoy.pid(),
        envoy.public_url(),
        o.servers
    ));
    if setup.uses_mixmode() {
        pool.register_all(HeartbeatClient::new(
            envoy.heartbeat_url(HEARTBEAT_PATH),
            TOKEN,
        ))
        .await?;
        pool.read_demand_from(vec![DemandSource::parse(
            &envoy.heartbeat_url(HEARTBEAT_PATH),
            TOKEN,
        )?]);
    }

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(Live::default());
    let mut users = Vec::new();
    for u in 0..o.workload.users {
        users.push(tokio::spawn(run_user(
            envoy.public_url(),
            u,
            o.workload.clone(),
            t0,
            stop.clone(),
            live.clone(),
        )));
    }
    let view = Arc::new(Mutex::new(PoolView::default()));
    let progress = spawn_progress(setup.key(), 16, t0, view.clone(), live.clone());
    let key = setup.key();
    let deployed = deploy(&mut pool, &o.plan, t0, view, |m| {
        println!("  [{key:<16}] t={:5.1}s  {m}", t0.elapsed().as_secs_f64())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut txs = Vec::new();
    let mut steps = Vec::new();
    for u in users {
        if let Ok(log) = u.await {
            txs.extend(log.txs);
            steps.extend(log.steps);
        }
    }
    progress.abort();
    let duration_s = t0.elapsed().as_secs_f64();
    let waves = deployed?;

    let pool_stats = envoy.counters("cluster.app.").await.unwrap_or_default();
    let peer_stats = envoy
        .counters("cluster.mixmode_peers.")
        .await
        .unwrap_or_default();
    let mixmode_metrics: BTreeMap<String, u64> = envoy
        .counters("wasmcustom.mixmode.")
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("wasmcustom.")?.to_string(), v)))
        .collect();
    let stat = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    // Envoy counts the 409s it retried apart from the final answers.
    let mismatches = stat(&pool_stats, "cluster.app.upstream_rq_409")
        + stat(&pool_stats, "cluster.app.retry.upstream_rq_409")
        + stat(&peer_stats, "cluster.mixmode_peers.upstream_rq_409");
    let resends = stat(&pool_stats, "cluster.app.upstream_rq_retry")
        + stat(&mixmode_metrics, "mixmode.redispatch_ok")
        + stat(&mixmode_metrics, "mixmode.attempt_failed");
    let app_requests = pool.app_requests();
    pool.shutdown().await;
    drop(envoy);

    Ok(result_of(
        setup.key(),
        setup.describe(),
        drain_label(&o.plan, setup.uses_mixmode()),
        Counted {
            txs,
            steps,
            mismatches,
            resends,
            app_requests,
            mixmode_metrics,
            waves,
            duration_s,
        },
    ))
}

/// The steps of one kind.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KindStats {
    pub steps: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// Of the setup's slowest 1% of steps (those at or above its p99), how many are this kind.
    pub in_top_1pct: usize,
}

fn kind_of(s: &Step) -> &'static str {
    match (s.cookie, s.rescued) {
        (false, false) => "plain",
        (true, false) => "cookie",
        (false, true) => "rescued",
        (true, true) => "cookie+rescued",
    }
}

/// Latency percentiles per step kind, and which kinds make the overall tail.
pub fn step_kinds(steps: &[Step]) -> BTreeMap<String, KindStats> {
    let mut all: Vec<u64> = steps.iter().map(|s| s.us).collect();
    all.sort_unstable();
    let p99_us = (percentile_ms(&all, 0.99) * 1000.0).round() as u64;
    let mut by: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for s in steps {
        by.entry(kind_of(s)).or_default().push(s.us);
    }
    by.into_iter()
        .map(|(k, mut us)| {
            us.sort_unstable();
            let stats = KindStats {
                steps: us.len(),
                p50_ms: percentile_ms(&us, 0.50),
                p90_ms: percentile_ms(&us, 0.90),
                p99_ms: percentile_ms(&us, 0.99),
                in_top_1pct: us.iter().filter(|u| **u >= p99_us).count(),
            };
            (k.to_string(), stats)
        })
        .collect()
}

/// What a run counted, from the users' side and from Envoy's and the servers'.
pub struct Counted {
    pub txs: Vec<Tx>,
    pub steps: Vec<Step>,
    pub mismatches: u64,
    pub resends: u64,
    pub app_requests: usize,
    pub mixmode_metrics: BTreeMap<String, u64>,
    pub waves: Vec<WaveTimes>,
    pub duration_s: f64,
}

/// The table's name for how a run drained (setups without mixmode have no demand to read).
pub fn drain_label(plan: &Plan, mixmode: bool) -> String {
    match plan.drain_by {
        DrainBy::Demand(p) if mixmode => format!("demand (quiet {} ms)", p.quiet_ms),
        _ => format!("fixed {:.2} s", plan.drain.as_secs_f64()),
    }
}

pub fn result_of(key: &str, description: &str, drain: String, c: Counted) -> SetupResult {
    let Counted {
        txs,
        steps,
        mismatches,
        resends,
        app_requests,
        mixmode_metrics,
        waves,
        duration_s,
    } = c;
    let steps_sent = steps.len();
    let mut step_us: Vec<u64> = steps.iter().map(|s| s.us).collect();
    let completed = txs.iter().filter(|t| t.failure.is_none()).count();
    let failed = txs.len() - completed;
    let mut failures = BTreeMap::new();
    let mut lost_with_peer = 0;
    for f in txs.iter().filter_map(|t| t.failure.as_ref()) {
        *failures.entry(f.reason()).or_insert(0) += 1;
        if f.mixmode.as_deref() != Some("no-peer") {
            lost_with_peer += 1;
        }
    }
    step_us.sort_unstable();
    SetupResult {
        setup: key.to_string(),
        description: description.to_string(),
        drain,
        completed,
        failed,
        failure_rate: if txs.is_empty() {
            0.0
        } else {
            failed as f64 / txs.len() as f64
        },
        failures,
        lost_with_peer,
        mismatches,
        resends,
        rescued_steps: txs.iter().map(|t| t.rescued_steps).sum(),
        rescued_sessions: txs.iter().filter(|t| t.rescued_steps > 0).count(),
        steps_sent,
        extra_upstream: app_requests.saturating_sub(steps_sent),
        p50_step_ms: percentile_ms(&step_us, 0.50),
        p99_step_ms: percentile_ms(&step_us, 0.99),
        step_kinds: step_kinds(&steps),
        steps,
        mixmode_metrics,
        waves,
        duration_s,
        transactions: txs,
    }
}

fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * q).round() as usize;
    sorted_us[i.min(sorted_us.len() - 1)] as f64 / 1000.0
}

/// Prints the pool's state and the transfer counts once a second, under `key` padded to `width`,
/// until the task is aborted. Shared by the four-setup run and the fleet run.
pub(crate) fn spawn_progress(
    key: &'static str,
    width: usize,
    t0: Instant,
    view: Arc<Mutex<PoolView>>,
    live: Arc<Live>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let v = view.lock().map(|g| g.clone()).unwrap_or_default();
            println!(
                "  [{key:<width$}] t={:5.1}s  wave {}  pool v1:{:<2} v2:{:<2} draining:{} down:{}  transfers ok {:>5}  lost {:>4}",
                t0.elapsed().as_secs_f64(),
                v.wave,
                v.v1,
                v.v2,
                v.draining,
                v.down,
                live.completed.load(Ordering::Relaxed),
                live.failed.load(Ordering::Relaxed),
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(us: u64, cookie: bool, rescued: bool) -> Step {
        Step {
            at_ms: 0,
            us,
            cookie,
            rescued,
        }
    }

    #[test]
    fn step_kinds_split_the_latencies_and_name_the_tail() {
        // 100 steps: 90 plain at 1 ms, 8 hinted at 2 ms, 2 rescued at 9 ms.
        let mut steps: Vec<Step> = (0..90).map(|_| step(1000, false, false)).collect();
        steps.extend((0..8).map(|_| step(2000, true, false)));
        steps.extend([step(9000, false, true), step(9000, true, true)]);
        let k = step_kinds(&steps);
        let names: Vec<&str> = k.keys().map(String::as_str).collect();
        assert_eq!(names, ["cookie", "cookie+rescued", "plain", "rescued"]);
        assert_eq!(k["plain"].steps, 90);
        assert_eq!(k["plain"].p99_ms, 1.0);
        assert_eq!(k["cookie"].p50_ms, 2.0);
        assert_eq!(k["rescued"].p99_ms, 9.0);
        // The run's p99 (the 99th of 100 steps) is 9 ms: only the rescued steps reach it.
        assert_eq!(
            k["rescued"].in_top_1pct + k["cookie+rescued"].in_top_1pct,
            2
        );
        assert_eq!(k["plain"].in_top_1pct + k["cookie"].in_top_1pct, 0);
    }
}
