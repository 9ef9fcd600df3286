//! `--fleet`: the mixmode rolling deploy with two Envoys in front of one pool, both mirroring
//! one real etcd where the servers register with leases, the way a fleet runs it:
//! no heartbeats pushed to an Envoy, a revoked lease before a server stops, a new registration
//! with the new version after it restarts. The users are split between the two Envoys, so a
//! session started through one is often continued through the other.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use mixmode_register::DemandSource;
use mixmode_tests::envoy::config::with_clusters;
use mixmode_tests::etcd::Etcd;
use serde_json::json;

use crate::envoy::{self, Envoy};
use crate::pool::{deploy, Pool, PoolView};
use crate::run::{drain_label, result_of, spawn_progress, Counted, RunOptions, SetupResult};
use crate::setup::{plugin_config, render_yaml, Render, Setup, HEARTBEAT_PATH, TOKEN};
use crate::users::{run_user, Live};

pub const KEY: &str = "mixmode-fleet";

/// How often each Envoy reads etcd.
const POLL_MS: u64 = 500;

/// How long a change in etcd may take to reach both Envoys: one poll and a margin. The deploy
/// waits this long after revoking a wave's leases and after registering it again.
pub const MIRROR_LAG: Duration = Duration::from_millis(POLL_MS + 250);

/// One Envoy of the fleet: its PID and the sessions its filter re-dispatched.
pub struct EnvoyRescues {
    pub pid: u32,
    pub redispatched: u64,
}

pub async fn run_fleet(o: &RunOptions) -> Result<(SetupResult, Vec<EnvoyRescues>)> {
    let say = |m: String| println!("  [{KEY:<13}] {m}");
    let etcd = Etcd::start()
        .await
        .context("start etcd (needs /usr/bin/etcd, Debian's etcd-server)")?;
    say(format!(
        "etcd pid {} on {}",
        etcd.pid().unwrap_or(0),
        etcd.url()
    ));
    let dir = tempfile::Builder::new()
        .prefix("mixmode-demo-fleet-")
        .tempdir()?;
    let eds = dir.path().join("pool.json");
    let mut pool = Pool::start(o.servers, "1", eds.clone()).await?;
    let mut cfg = plugin_config(TOKEN, Setup::Mixmode)?;
    // A mirror polled every 500 ms; records not refreshed for 3 s (etcd unreachable) go stale.
    cfg["registry"]["etcd"] = json!({"cluster": "etcd", "poll_interval_ms": POLL_MS});
    cfg["registry"]["stale_after_ms"] = json!(3000);
    let yaml = render_yaml(&Render {
        setup: Setup::Mixmode,
        wasm: &o.wasm,
        plugin_config: &cfg,
        upstreams: &pool.addrs(),
        eds_path: &eds,
    })?;
    let yaml = with_clusters(&yaml, &[("etcd".to_string(), etcd.client_addr())])?;
    // Registered before the Envoys start: their first poll finds the whole pool.
    pool.register_all_etcd(&etcd.url(), MIRROR_LAG).await?;
    let (a, b) = tokio::join!(
        envoy::start(&yaml, o.envoy_workers),
        envoy::start(&yaml, o.envoy_workers)
    );
    let envoys = [
        a.context("start Envoy A of the fleet")?,
        b.context("start Envoy B of the fleet")?,
    ];
    for (name, e) in ["A", "B"].iter().zip(&envoys) {
        say(format!(
            "Envoy {name} pid {} on {} ({} workers)",
            e.pid(),
            e.public_url(),
            o.envoy_workers
        ));
    }
    wait_mirrored(&envoys, o.servers).await?;
    // Draining by demand asks both Envoys: a session may continue through either.
    pool.read_demand_from(
        envoys
            .iter()
            .map(|e| DemandSource::parse(&e.heartbeat_url(HEARTBEAT_PATH), TOKEN))
            .collect::<Result<_, _>>()?,
    );
    say(format!(
        "{} servers v1 registered in etcd (lease TTL 2 s), mirrored by both Envoys",
        o.servers
    ));

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(Live::default());
    let mut users = Vec::new();
    for u in 0..o.workload.users {
        // Even users through A, odd through B.
        let e = &envoys[u % envoys.len()];
        users.push(tokio::spawn(run_user(
            e.public_url(),
            u,
            o.workload.clone(),
            t0,
            stop.clone(),
            live.clone(),
        )));
    }
    let view = Arc::new(Mutex::new(PoolView::default()));
    let progress = spawn_progress(KEY, 13, t0, view.clone(), live.clone());
    let deployed = deploy(&mut pool, &o.plan, t0, view, |m| {
        println!("  [{KEY:<13}] t={:5.1}s  {m}", t0.elapsed().as_secs_f64())
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

    let mut mismatches = 0;
    let mut resends = 0;
    let mut mixmode_metrics: BTreeMap<String, u64> = BTreeMap::new();
    let mut rescues = Vec::new();
    for e in &envoys {
        let pool_stats = e.counters("cluster.app.").await.unwrap_or_default();
        let peer_stats = e
            .counters("cluster.mixmode_peers.")
            .await
            .unwrap_or_default();
        let metrics: BTreeMap<String, u64> = e
            .counters("wasmcustom.mixmode.")
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("wasmcustom.")?.to_string(), v)))
            .collect();
        let stat = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
        mismatches += stat(&pool_stats, "cluster.app.upstream_rq_409")
            + stat(&peer_stats, "cluster.mixmode_peers.upstream_rq_409");
        resends +=
            stat(&metrics, "mixmode.redispatch_ok") + stat(&metrics, "mixmode.attempt_failed");
        rescues.push(EnvoyRescues {
            pid: e.pid(),
            redispatched: stat(&metrics, "mixmode.redispatch_ok"),
        });
        // Counters add up across the fleet; gauges (registry_records) add up too, read as
        // "records held by the fleet".
        for (k, v) in metrics {
            *mixmode_metrics.entry(k).or_insert(0) += v;
        }
    }
    let app_requests = pool.app_requests();
    // Servers deregister (revoke) before they stop; then the Envoys, then etcd (its Drop).
    pool.shutdown().await;
    drop(envoys);
    drop(etcd);

    let result = result_of(
        KEY,
        "two Envoys + mixmode, servers registered in etcd",
        drain_label(&o.plan, true),
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
    );
    Ok((result, rescues))
}

/// Waits until both Envoys' filters hold a record for every server (they poll etcd every
/// 500 ms), so the first rescue of the run cannot find an empty mirror.
async fn wait_mirrored(envoys: &[Envoy], servers: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut all = true;
        for e in envoys {
            let held = e
                .counters("wasmcustom.mixmode.registry_records")
                .await
                .ok()
                .and_then(|m| m.get("wasmcustom.mixmode.registry_records").copied())
                .unwrap_or(0);
            all &= held >= servers as u64;
        }
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            // Not fatal: the run itself shows whether rescues found their peers.
            eprintln!(
                "  warning: the Envoys did not report {servers} mirrored records within 10 s"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
