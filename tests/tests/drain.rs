//! Draining by demand through the real Envoy 1.40 (docs/design.md#draining-by-demand): a v1
//! server out of the load balancer stays registered as a rescue target while the Envoys' demand
//! listings say v1 is needed, and is released within the quiet time after the last need. The
//! drain is `mixmode_register::wait_until_quiet`, the loop `mixmode-register
//! --drain-while-needed` runs (its command line and signals are tested in register/tests with
//! fake Envoys). Needs `envoy` on the PATH, the built filter, and etcd for the fleet.
#![cfg(test)] // helpers included: see clippy.toml

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mixmode_register::{
    wait_until_quiet, Config as RegConfig, Decision, DemandSource, Policy,
    Registration as EtcdRegistration, Target,
};
use mixmode_tests::app::{AppServer, HeartbeatClient, Registration, SessionData, SessionStore};
use mixmode_tests::client::Req;
use mixmode_tests::envoy::{wasm_path, Envoy, EnvoyOptions};
use mixmode_tests::etcd::Etcd;
use mixmode_tests::host::DEFAULT_HEARTBEAT_PATH;
use mixmode_tests::scenarios::{plugin_config, server, show, TOKEN};
use serde_json::{json, Value};

/// Long enough that a busy machine does not stall the test's user for that long between two
/// requests (100 ms apart), short enough for a quick test.
const QUIET: Duration = Duration::from_millis(1000);

async fn envoy(overrides: Value, pool: &[&AppServer], clusters: &[(&str, SocketAddr)]) -> Envoy {
    let mut opts = EnvoyOptions::new(
        wasm_path().unwrap(),
        &plugin_config(overrides),
        pool.iter().map(|s| s.addr()).collect(),
    );
    opts.extra_clusters = clusters.iter().map(|(n, a)| (n.to_string(), *a)).collect();
    match Envoy::start(&opts).await {
        Ok(e) => e,
        Err(e) => panic!("Envoy did not start: {e}"),
    }
}

fn heartbeat_url(e: &Envoy) -> String {
    format!("{}{DEFAULT_HEARTBEAT_PATH}", e.heartbeat_base_url())
}

fn v1() -> Target {
    Target {
        pool: "default".into(),
        app: "checkout".into(),
        version: "1".into(),
    }
}

/// A user in a v1 session through `base`: a request every 100 ms until `stop`, each rescued to
/// the drained v1 server. Returns when the last one was sent and how many there were.
async fn v1_user(base: String, store: SessionStore, stop: Arc<AtomicBool>) -> (Instant, usize) {
    let data = SessionData::from([("recipient".to_string(), "bob".to_string())]);
    let cookie = format!("session={}", store.create("1", &data).unwrap());
    let mut sent = 0;
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        last = Instant::now();
        let r = Req::get(format!("{base}/echo"))
            .header("cookie", cookie.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", show(&r));
        assert_eq!(
            r.header("x-mixmode").as_deref(),
            Some("redispatched"),
            "{}",
            show(&r)
        );
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (last, sent)
}

/// Runs the drain of v1 reading `sources`; the user (through `user_base`) needs v1 for 2.5 s.
/// Checks the drain is still waiting when the user stops, and ends quiet within a generous
/// bound after the last need, never before the quiet time has passed.
async fn drain_outlasts_the_need(
    sources: Vec<DemandSource>,
    user_base: String,
    store: SessionStore,
) {
    let policy = Policy {
        quiet_ms: QUIET.as_millis() as u64,
        max_wait_ms: 120_000,
    };
    let drain = tokio::spawn(async move {
        let d = wait_until_quiet(v1(), policy, &sources, |m| eprintln!("drain: {m}")).await;
        (d, Instant::now())
    });
    let stop = Arc::new(AtomicBool::new(false));
    let user = tokio::spawn(v1_user(user_base, store, stop.clone()));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    let (last_need, sent) = user.await.unwrap();
    assert!(sent >= 3, "only {sent} requests in 2.5 s");
    assert!(!drain.is_finished(), "the drain ended while v1 was needed");
    let (decision, ended) = tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .expect("drain not over 30 s after the last need")
        .unwrap();
    assert!(matches!(decision, Decision::Quiet { .. }), "{decision:?}");
    let after = ended.duration_since(last_need);
    // The need is stamped when Envoy rescues, after the request was sent: never before.
    assert!(
        after + Duration::from_millis(20) >= QUIET,
        "released {after:?} after the last need"
    );
    eprintln!("drain: {decision}; released {after:?} after the last need ({sent} rescues)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_server_stays_until_its_version_is_quiet() {
    let store = SessionStore::new();
    let s1 = server(&store, "s1", "1").await;
    let s2 = server(&store, "s2", "2").await;
    // s1 has left the load balancer (only s2 is in the pool) but is still registered.
    let e = envoy(json!({}), &[&s2], &[]).await;
    let hb = HeartbeatClient::new(heartbeat_url(&e), TOKEN);
    for s in [&s1, &s2] {
        hb.register(&Registration::of(s)).await.unwrap();
    }
    let beat = hb.spawn_periodic(Registration::of(&s1), Duration::from_secs(1));

    // The listing needs the token.
    let listing = format!("{}?demand", heartbeat_url(&e));
    let r = Req::get(&listing).send().await.unwrap();
    assert_eq!(r.status, 401, "{}", show(&r));
    let r = Req::get(&listing)
        .header("authorization", "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", show(&r));

    let sources = vec![DemandSource::parse(&heartbeat_url(&e), TOKEN).unwrap()];
    drain_outlasts_the_need(sources, e.public_url(), store.clone()).await;
    beat.abort();
}

/// Two Envoys mirroring one etcd: the user needs v1 through B only; a drain that read A alone
/// would end one quiet time after it started. The drain reads both and waits for B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_drain_waits_for_every_envoy() {
    let etcd = Etcd::start().await.unwrap();
    let store = SessionStore::new();
    let s1 = server(&store, "s1", "1").await;
    let s2 = server(&store, "s2", "2").await;
    let mut regs = Vec::new();
    for (s, v) in [(&s1, "1"), (&s2, "2")] {
        let cfg = RegConfig::new(
            &etcd.url(),
            "/mixmode/",
            "default",
            "checkout",
            v,
            &s.addr().to_string(),
            2,
        )
        .unwrap();
        regs.push(EtcdRegistration::start(cfg).await.unwrap());
    }
    let cfg = json!({"registry": {"stale_after_ms": 3000,
        "etcd": {"poll_interval_ms": 300, "timeout_ms": 400}}});
    let clusters = [("etcd", etcd.client_addr())];
    let pool = [&s2];
    let (a, b) = tokio::join!(
        envoy(cfg.clone(), &pool, &clusters),
        envoy(cfg.clone(), &pool, &clusters)
    );
    // Both mirrors hold s1 before the user starts.
    for e in [&a, &b] {
        let hb = HeartbeatClient::new(heartbeat_url(e), TOKEN);
        let start = Instant::now();
        while !hb
            .list()
            .await
            .unwrap()
            .iter()
            .any(|r| r.address == s1.addr().to_string())
        {
            assert!(start.elapsed() < Duration::from_secs(10), "s1 not mirrored");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let sources = [&a, &b]
        .iter()
        .map(|e| DemandSource::parse(&heartbeat_url(e), TOKEN).unwrap())
        .collect();
    drain_outlasts_the_need(sources, b.public_url(), store.clone()).await;
    for r in regs {
        r.stop().await.unwrap();
    }
}
