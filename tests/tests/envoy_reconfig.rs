//! mixmode's configuration changed while Envoy runs (docs/envoy-versions.md): the listeners come from a
//! watched LDS file (`dynamic_resources`, no control plane), and a test rewrites it as a control
//! plane would. What an operator must be able to count on: the registry survives (it lives in
//! shared data, keyed by `vm_id`), new requests get the new settings, requests in flight finish,
//! no wasm VM fails, and a bad configuration is refused while the last good one keeps serving.
#![cfg(test)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mixmode_tests::app::{Canned, HeartbeatClient, Mode, Registration, SessionStore};
use mixmode_tests::client::{Req, Resp};
use mixmode_tests::envoy::{wasm_path, Envoy, EnvoyOptions, LdsOutcome};
use mixmode_tests::scenarios::faults::assert_no_crash;
use mixmode_tests::scenarios::{dead_address, plugin_config, server, show, TOKEN};
use serde_json::{json, Value};

fn session_cookie(store: &SessionStore, version: &str) -> String {
    let data = [("recipient".to_string(), "bob".to_string())].into();
    format!("session={}", store.create(version, &data).unwrap())
}

async fn get(envoy: &Envoy, cookie: &str) -> Resp {
    Req::get(format!("{}/echo", envoy.public_url()))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

fn assert_outcome(r: &Resp, status: u16, mixmode: Option<&str>) {
    assert_eq!(
        (r.status, r.header("x-mixmode").as_deref()),
        (status, mixmode),
        "{}",
        show(r)
    );
}

async fn counter(envoy: &Envoy, name: &str) -> u64 {
    envoy
        .mixmode_metrics()
        .await
        .unwrap()
        .get(&format!("mixmode.{name}"))
        .copied()
        .unwrap_or(0)
}

/// No wasm VM failed or reloaded, nothing crashed (Envoy's own `wasm.*` counters, not the
/// filter's `wasmcustom.*`, and the log).
async fn assert_no_wasm_failure(envoy: &Envoy) {
    let stats = envoy.stats("^wasm\\.").await.unwrap();
    assert!(!stats.is_empty());
    for (k, v) in &stats {
        if k.contains("fail") || k.contains("crash") || k.ends_with("vm_reload") {
            assert_eq!(*v, 0, "{k}: {stats:?}");
        }
    }
    assert_no_crash(&envoy.logs());
}

fn config(overrides: Value) -> String {
    plugin_config(overrides).to_string()
}

/// Two updates and a refused one, with traffic running throughout on two workers:
/// 1. `max_attempts` 1 → 2: the dead peer (freshest, tried first) no longer exhausts the
///    attempts, the live peer behind it answers — with no heartbeat since the start (the
///    registry survived the update), and a request held by a slow server across the update
///    finishes with the settings it started with;
/// 2. `detect.statuses` [409] → [409, 425]: a 425 carrying the signal, passed through before,
///    is rescued after;
/// 3. `max_attempts: 0`: refused (Envoy's LDS update_rejected, the field named in its log),
///    and the configuration of step 2 keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_config_updates_without_restart() {
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let base = json!({"redispatch": {"selection": "freshest", "max_attempts": 1}});
    let mut opts = EnvoyOptions::new(wasm_path().unwrap(), &plugin_config(base), vec![v1.addr()]);
    opts.file_lds = true;
    opts.concurrency = 2;
    let mut envoy = Envoy::start(&opts).await.unwrap();
    let hb = HeartbeatClient::new(
        format!(
            "{}/.well-known/mixmode/heartbeat",
            envoy.heartbeat_base_url()
        ),
        TOKEN,
    );
    // The only heartbeats of the test: the live peer, then a dead one (fresher: tried first).
    hb.register(&Registration::of(&v2)).await.unwrap();
    let mut dead = Registration::of(&v2);
    dead.address = dead_address().to_string();
    hb.register(&dead).await.unwrap();
    let v2_session = session_cookie(&store, "2");

    let r = get(&envoy, &v2_session).await;
    assert_outcome(&r, 409, Some("exhausted"));

    // A request in flight across the update: the pool's server holds it 1.5 s.
    v1.set_mode(Mode::Slow(Duration::from_millis(1500)));
    let held = {
        let url = format!("{}/echo", envoy.public_url());
        let cookie = v2_session.clone();
        tokio::spawn(async move { Req::get(url).header("cookie", cookie).send().await })
    };
    while v1.request_count() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    v1.set_mode(Mode::Normal);

    // Traffic on new connections throughout the updates: every answer is complete and either
    // setting's, never `no-peer`, never an error of Envoy's own.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let url = format!("{}/echo", envoy.public_url());
        let cookie = v2_session.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = Req::get(&url).header("cookie", &cookie).send().await;
                seen.push(
                    r.map(|r| (r.status, r.header("x-mixmode")))
                        .map_err(|e| e.to_string()),
                );
            }
            seen
        })
    };

    let update1 = config(json!({"redispatch": {"selection": "freshest", "max_attempts": 2}}));
    assert_eq!(
        envoy.push_plugin_config(&update1).await.unwrap(),
        LdsOutcome::Applied
    );
    for _ in 0..5 {
        let r = get(&envoy, &v2_session).await;
        assert_outcome(&r, 200, Some("redispatched"));
        assert_eq!(r.json().unwrap()["server"], "v2");
    }
    let r = held.await.unwrap().unwrap();
    assert_outcome(&r, 409, Some("exhausted"));
    assert!(
        r.text().contains("session"),
        "the held 409's body: {}",
        show(&r)
    );

    // Step 2: a status the filter ignored so far.
    let signal_425 = Canned::new(
        425,
        &[("x-session-version", "2"), ("x-app-version", "1")],
        "too early for this version",
    );
    v1.set_mode(Mode::Respond(signal_425));
    let r = get(&envoy, &v2_session).await;
    assert_outcome(&r, 425, None);
    let update2 = config(json!({
        "redispatch": {"selection": "freshest", "max_attempts": 2},
        "detect": {"statuses": [409, 425]},
    }));
    assert_eq!(
        envoy.push_plugin_config(&update2).await.unwrap(),
        LdsOutcome::Applied
    );
    for _ in 0..5 {
        let r = get(&envoy, &v2_session).await;
        assert_outcome(&r, 200, Some("redispatched"));
    }

    // Step 3: refused; step 2's settings serve on.
    let bad = config(json!({"redispatch": {"max_attempts": 0}}));
    assert_eq!(
        envoy.push_plugin_config(&bad).await.unwrap(),
        LdsOutcome::Rejected
    );
    let logs = envoy.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("invalid configuration") && l.contains("redispatch.max_attempts")),
        "the refusal does not name the field: {}",
        logs.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    for _ in 0..5 {
        let r = get(&envoy, &v2_session).await;
        assert_outcome(&r, 200, Some("redispatched"));
    }

    stop.store(true, Ordering::Relaxed);
    let seen = traffic.await.unwrap();
    assert!(seen.len() >= 3, "the traffic loop barely ran: {seen:?}");
    for s in &seen {
        match s {
            Ok((409, Some(m))) if m == "exhausted" => {}
            Ok((200, Some(m))) if m == "redispatched" => {}
            Ok((425, None)) => {}
            other => panic!("during the updates: {other:?} (all: {seen:?})"),
        }
    }

    assert_eq!(counter(&envoy, "no_peer").await, 0);
    assert_eq!(
        hb.list().await.unwrap().len(),
        2,
        "the registry lost records"
    );
    assert_eq!(counter(&envoy, "heartbeat_accepted").await, 2);
    assert_no_wasm_failure(&envoy).await;
    let lds = envoy
        .stats("^listener_manager\\.lds\\.update_(success|rejected)$")
        .await
        .unwrap();
    assert_eq!(lds["listener_manager.lds.update_rejected"], 1, "{lds:?}");
}
