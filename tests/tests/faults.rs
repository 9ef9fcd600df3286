//! Faults and hostile input on the real Envoy 1.40 (the matrix is tests/FAULTS.md):
//! the scenarios of `mixmode_tests::scenarios::faults`, plus what only a real Envoy process can
//! show (a restart). Needs `envoy` on the PATH and the built filter, as tests/tests/envoy.rs.

use std::time::Duration;

use mixmode_tests::app::{AppConfig, AppServer, Registration, SessionStore};
use mixmode_tests::client::Req;
use mixmode_tests::envoy::EnvoyHost;
use mixmode_tests::host::Host;
use mixmode_tests::scenarios::faults::assert_no_crash;
use mixmode_tests::scenarios::{show, Fixture};
use serde_json::json;

mixmode_tests::scenario_tests!(EnvoyHost:
    faults::chain_of_failing_peers,
    faults::heartbeats_stop_during_load,
    faults::hostile_heartbeat_fields_refused,
    faults::heartbeat_flood_past_the_cap,
    faults::client_sent_internal_headers_steer_nothing,
    faults::hung_peer_then_recovery,
);

/// Envoy restarts (a new process: every VM and the shared data are new). FAIL_RELOAD (the
/// example's `failure_policy`) reloads a VM only after a crash, and mixmode has no crash path
/// to trigger, so a restart is the reload a test can cause: the new Envoy knows no peer
/// (`no-peer`, nothing stale carried over), and the servers' next heartbeats rebuild the
/// registry, after which sessions are rescued again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_restart_rebuilds_registry_from_heartbeats() {
    let store = SessionStore::new();
    let v1 = AppServer::start(AppConfig::new("v1", "1", &store))
        .await
        .unwrap();
    let v2 = AppServer::start(AppConfig::new("v2", "2", &store))
        .await
        .unwrap();
    let f = Fixture::<EnvoyHost>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;
    let cookie = f.session("2");
    let r = Req::get(f.url("/echo"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    assert_no_crash(&f.host.logs());
    drop(f);

    let f = Fixture::<EnvoyHost>::start(&store, &[&v1], json!({})).await;
    assert!(f.hb.list().await.unwrap().is_empty());
    let r = Req::get(f.url("/echo"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", show(&r));
    assert_eq!(r.header("x-mixmode").as_deref(), Some("no-peer"));
    let beat =
        f.hb.spawn_periodic(Registration::of(&v2), Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let r = Req::get(f.url("/echo"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", show(&r));
        assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    }
    beat.abort();
    assert_eq!(f.hb.list().await.unwrap().len(), 1);
    f.expect_counters(&[
        ("mismatch_detected", 6),
        ("no_peer", 1),
        ("redispatch_ok", 5),
    ])
    .await;
    // No wasm VM failed in either process (Envoy's own counters).
    let stats = f.host.envoy.stats("wasm").await.unwrap();
    for (k, v) in &stats {
        if k.contains("fail") || k.contains("crash") {
            assert_eq!(*v, 0, "{k}: {stats:?}");
        }
    }
    assert_no_crash(&f.host.logs());
}
