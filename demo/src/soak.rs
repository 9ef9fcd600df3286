//! `demo --soak`: rolling deploys back and forth (v1 -> v2 -> v1 ...) under steady load, with
//! faults injected on the peers mixmode re-dispatches to, for a configurable time.
//!
//! Faults, on servers that are registered with mixmode but not in Envoy's pool (so that a loss
//! can only come from a rescue):
//! - `killed` (v2, answers after 100 ms so dispatches are in flight): up 4 s, then killed
//!   without deregistering (its record stays fresh up to 15 s), down 3 s, back.
//! - `slow` (v1): answers every request 250 ms late (under the 5 s attempt timeout).
//! - `flapper`: restarts every 3 s as the other version and re-registers only 300 ms later,
//!   so for a while it is registered as one version and answers as the other.
//!
//! Accounting. A transaction is lost at its first step that does not answer 200. It counts
//! against mixmode when a server of its session's version was registered and answering for the
//! whole 0.25 s before the failure (the pool's servers from registration to deregistration, the
//! fault servers while up and registered under the version they run); other losses (no live
//! server of that version) are listed apart. Pass: no loss against mixmode, no failure before
//! a session existed, no crash in Envoy's log (`panicked`, `RuntimeError`, `Uncaught`), no wasm
//! VM created after start-up (a reload after a crash would add one), and Envoy's RSS at the end no more than the stated bound above its
//! RSS after the first deploy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use mixmode_tests::app::{AppConfig, AppServer, HeartbeatClient, Mode, Registration, SessionStore};

use crate::envoy;
use crate::liveness::Liveness;
use crate::pool::{deploy_to, wave_sizes, waves_of, DrainBy, Plan, Pool, PoolView};
use crate::setup::{plugin_config, render_yaml, Render, Setup, HEARTBEAT_PATH, TOKEN};
use crate::users::{run_user, Live, Workload};

/// How much Envoy's resident memory may grow from the end of the first deploy to the end.
pub const RSS_BOUND_MIB: u64 = 32;
/// How long a server of the version must have been live before a failure for it to count.
const LIVE_BEFORE_S: f64 = 0.25;

#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub duration: Duration,
    pub servers: usize,
    pub users: usize,
    pub seed: u64,
    pub wasm: PathBuf,
    pub envoy_workers: usize,
}

/// Envoy's resident set, from /proc.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A fault server's life: registered with heartbeats while up.
struct FaultServer {
    app: AppServer,
    hb: HeartbeatClient,
    beat: Option<tokio::task::JoinHandle<()>>,
    live: Liveness,
}

impl FaultServer {
    async fn start(
        store: &SessionStore,
        name: &str,
        version: &str,
        mode: Mode,
        hb: &HeartbeatClient,
        live: &Liveness,
    ) -> Result<Self> {
        let app = AppServer::start(AppConfig::new(name, version, store)).await?;
        app.set_mode(mode);
        Ok(FaultServer {
            app,
            hb: hb.clone(),
            beat: None,
            live: live.clone(),
        })
    }

    async fn register(&mut self) -> Result<()> {
        let reg = Registration::of(&self.app);
        self.hb.register(&reg).await?;
        self.beat = Some(self.hb.spawn_periodic(reg, Duration::from_millis(1000)));
        self.live.up(self.app.addr(), &self.app.version());
        Ok(())
    }

    /// Stops heartbeats and marks it not live; its record stays in the registry.
    fn silence(&mut self) {
        if let Some(b) = self.beat.take() {
            b.abort();
        }
        self.live.down(self.app.addr());
    }
}

/// The fault loops; each returns how many times it struck.
fn spawn_faults(
    mut killed: FaultServer,
    mut slow: FaultServer,
    mut flapper: FaultServer,
    stop: Arc<AtomicBool>,
    kills: Arc<AtomicUsize>,
    flaps: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Result<()>>> {
    let s1 = stop.clone();
    let kill = tokio::spawn(async move {
        while !s1.load(Ordering::Relaxed) {
            killed.register().await?;
            tokio::time::sleep(Duration::from_secs(4)).await;
            // Killed: no deregistration, connections and in-flight dispatches cut.
            killed.silence();
            killed.app.stop().await;
            kills.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(3)).await;
            let v = killed.app.version();
            killed.app.restart(&v).await?;
        }
        killed.silence();
        Ok(())
    });
    let s2 = stop.clone();
    let slow_task = tokio::spawn(async move {
        slow.register().await?;
        while !s2.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        slow.silence();
        Ok(())
    });
    let s3 = stop;
    let flap = tokio::spawn(async move {
        while !s3.load(Ordering::Relaxed) {
            flapper.register().await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            flapper.silence();
            let next = if flapper.app.version() == "1" {
                "2"
            } else {
                "1"
            };
            flapper.app.restart(next).await?;
            flaps.fetch_add(1, Ordering::Relaxed);
            // Registered as the old version while it answers as the new one.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        flapper.silence();
        Ok(())
    });
    vec![kill, slow_task, flap]
}

pub async fn soak(o: &SoakOptions) -> Result<bool> {
    let started = Instant::now();
    let dir = tempfile::Builder::new().prefix("mixmode-soak-").tempdir()?;
    let eds = dir.path().join("pool.json");
    let mut pool = Pool::start(o.servers, "1", eds.clone()).await?;
    let t0 = Instant::now();
    let live = Liveness::new(t0);
    pool.track(live.clone());
    let cfg = plugin_config(TOKEN, Setup::Mixmode)?;
    let yaml = render_yaml(&Render {
        setup: Setup::Mixmode,
        wasm: &o.wasm,
        plugin_config: &cfg,
        upstreams: &pool.addrs(),
        eds_path: &eds,
    })?;
    let envoy = envoy::start(&yaml, o.envoy_workers)
        .await
        .context("start Envoy")?;
    let pid = envoy.pid();
    // A VM that failed and was reloaded (FAIL_RELOAD) shows as one more VM created.
    let created = |stats: &BTreeMap<String, u64>| {
        stats
            .iter()
            .filter(|(k, _)| k.ends_with(".created"))
            .map(|(_, v)| *v)
            .sum::<u64>()
    };
    let vms_at_start = created(&envoy.counters("wasm.").await.unwrap_or_default());
    let hb = HeartbeatClient::new(envoy.heartbeat_url(HEARTBEAT_PATH), TOKEN);
    pool.register_all(hb.clone()).await?;
    let store = pool.store().ok_or_else(|| anyhow!("empty pool"))?;
    let killed = FaultServer::start(
        &store,
        "killed",
        "2",
        Mode::Slow(Duration::from_millis(100)),
        &hb,
        &live,
    )
    .await?;
    let slow = FaultServer::start(
        &store,
        "slow",
        "1",
        Mode::Slow(Duration::from_millis(250)),
        &hb,
        &live,
    )
    .await?;
    let flapper = FaultServer::start(&store, "flapper", "1", Mode::Normal, &hb, &live).await?;
    println!("== Soak: rolling deploys back and forth under load, with faults ==");
    println!(
        "  Envoy pid {pid} ({} workers), {} servers in the pool, {} users, {:.0} s; faults: \
         `killed` (v2, killed every 7 s without deregistering), `slow` (v1, +250 ms), \
         `flapper` (v1<->v2 every 3 s, re-registers 300 ms late)",
        o.envoy_workers,
        o.servers,
        o.users,
        o.duration.as_secs_f64()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let flaps = Arc::new(AtomicUsize::new(0));
    let faults = spawn_faults(
        killed,
        slow,
        flapper,
        stop.clone(),
        kills.clone(),
        flaps.clone(),
    );
    let users_stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Live::default());
    let workload = Workload {
        users: o.users,
        seed: o.seed,
        think_ms: (20, 60),
    };
    let mut users = Vec::new();
    for u in 0..o.users {
        users.push(tokio::spawn(run_user(
            envoy.public_url(),
            u,
            workload.clone(),
            t0,
            users_stop.clone(),
            counts.clone(),
        )));
    }
    let rss = Arc::new(Mutex::new(Vec::<(f64, u64)>::new()));
    let sampler = {
        let rss = rss.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let (Some(k), Ok(mut v)) = (rss_kib(pid), rss.lock()) {
                    v.push((t0.elapsed().as_secs_f64(), k));
                }
            }
        })
    };

    let plan = Plan {
        waves: waves_of(&wave_sizes(o.servers)),
        warmup: Duration::ZERO,
        drain: Duration::from_millis(750),
        // The soak's faults are on the peers, not the drain; its sessions are short.
        drain_by: DrainBy::Fixed,
        down: Duration::from_millis(200),
        wave_wait: Duration::from_millis(500),
        tail: Duration::from_millis(500),
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let view = Arc::new(Mutex::new(PoolView::default()));
    let mut deploys = 0usize;
    let mut after_first: Option<u64> = None;
    let mut version = "2";
    loop {
        deploy_to(&mut pool, &plan, version, t0, view.clone(), |_| {}).await?;
        deploys += 1;
        let now = t0.elapsed();
        if after_first.is_none() {
            after_first = rss_kib(pid);
        }
        println!(
            "  t={:6.1}s  deploy {deploys} to v{version} done; transfers ok {}, lost {}; \
             peer kills {}, flaps {}; Envoy RSS {} KiB",
            now.as_secs_f64(),
            counts.completed.load(Ordering::Relaxed),
            counts.failed.load(Ordering::Relaxed),
            kills.load(Ordering::Relaxed),
            flaps.load(Ordering::Relaxed),
            rss_kib(pid).unwrap_or(0),
        );
        version = if version == "2" { "1" } else { "2" };
        if now + plan.total() > o.duration {
            break;
        }
    }
    tokio::time::sleep(o.duration.saturating_sub(t0.elapsed())).await;
    users_stop.store(true, Ordering::Relaxed);
    let mut txs = Vec::new();
    for u in users {
        if let Ok(log) = u.await {
            txs.extend(log.txs);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for f in faults {
        match f.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("soak: a fault loop failed: {e:#}"),
            Err(e) => eprintln!("soak: a fault loop panicked: {e}"),
        }
    }
    sampler.abort();
    let rss_end = rss_kib(pid);
    let logs = envoy.logs();
    // Envoy's own wasm statistics (`wasm.envoy.wasm.runtime.v8.*`), not the filter's metrics.
    let stats = envoy.counters("wasm.").await.unwrap_or_default();
    let metrics = envoy
        .counters("wasmcustom.mixmode.")
        .await
        .unwrap_or_default();
    let alive = rss_end.is_some();
    pool.shutdown().await;
    drop(envoy);

    // The accounting.
    let completed = txs.iter().filter(|t| t.failure.is_none()).count();
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    let mut against = Vec::new();
    let (mut without_peer, mut before_session) = (0usize, 0usize);
    for t in &txs {
        let Some(f) = &t.failure else { continue };
        *by_reason.entry(f.reason()).or_insert(0) += 1;
        match &t.version {
            None => before_session += 1,
            Some(v) if live.live(v, t.end_s - LIVE_BEFORE_S, t.end_s) => against.push(t),
            Some(_) => without_peer += 1,
        }
    }
    let rescued: usize = txs.iter().map(|t| t.rescued_steps).sum();
    let samples = rss.lock().map(|v| v.clone()).unwrap_or_default();
    let rss_max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let rss_first = samples.first().map_or(0, |s| s.1);
    let growth_kib = rss_end
        .unwrap_or(u64::MAX)
        .saturating_sub(after_first.unwrap_or(0));

    println!();
    println!(
        "== Soak accounting ({:.1} s) ==",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  transactions: {} ({completed} completed, {} failed); steps rescued by a peer: {rescued}",
        txs.len(),
        txs.len() - completed
    );
    println!(
        "  deploys: {deploys} (back and forth); peer kills: {}; version flaps: {}",
        kills.load(Ordering::Relaxed),
        flaps.load(Ordering::Relaxed)
    );
    println!("  failures by answer: {by_reason:?}");
    println!(
        "  lost while a server of the session's version was live (against mixmode): {}",
        against.len()
    );
    println!("  lost with no live server of the session's version: {without_peer}");
    println!("  lost before a session existed: {before_session}");
    for t in against.iter().take(10) {
        println!("    {t:?}");
    }
    println!("  mixmode counters: {metrics:?}");
    println!("  Envoy wasm statistics: {stats:?}");
    println!(
        "  Envoy RSS: {rss_first} KiB at start, {} KiB after the first deploy, max {rss_max} KiB, \
         {} KiB at the end (growth {growth_kib} KiB, bound {RSS_BOUND_MIB} MiB)",
        after_first.unwrap_or(0),
        rss_end.unwrap_or(0)
    );

    let mut ok = true;
    let mut fail = |why: String| {
        eprintln!("FAIL: {why}");
        ok = false;
    };
    if !alive {
        fail("Envoy is gone".into());
    }
    if !against.is_empty() {
        fail(format!(
            "{} transactions lost with a live peer",
            against.len()
        ));
    }
    if before_session > 0 {
        fail(format!(
            "{before_session} transactions lost before a session existed"
        ));
    }
    for needle in ["panicked", "RuntimeError", "Uncaught"] {
        let hits: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(needle))
            .take(3)
            .collect();
        if !hits.is_empty() {
            fail(format!("Envoy log has {needle}: {hits:?}"));
        }
    }
    for (k, v) in &stats {
        if (k.contains("fail") || k.contains("crash")) && *v > 0 {
            fail(format!("{k} = {v}"));
        }
    }
    if created(&stats) != vms_at_start {
        fail(format!(
            "wasm VMs created during the soak: {} at start, {} at the end (a VM was reloaded)",
            vms_at_start,
            created(&stats)
        ));
    }
    if growth_kib > RSS_BOUND_MIB * 1024 {
        fail(format!(
            "Envoy RSS grew {growth_kib} KiB (bound {RSS_BOUND_MIB} MiB)"
        ));
    }
    let stat = |k: &str| metrics.get(k).copied().unwrap_or(0);
    if rescued == 0 || stat("wasmcustom.mixmode.attempt_failed") == 0 {
        fail("the faults were not exercised (no rescue or no failed attempt)".into());
    }
    if kills.load(Ordering::Relaxed) == 0 || flaps.load(Ordering::Relaxed) == 0 || deploys < 2 {
        fail("too short: no kill, no flap or fewer than two deploys".into());
    }
    if ok {
        println!("soak: PASS");
    }
    Ok(ok)
}
