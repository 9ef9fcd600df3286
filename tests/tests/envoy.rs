//! Every scenario of `mixmode_tests::scenarios` on the real Envoy 1.40, each with its own Envoy
//! process, plus what only Envoy has (Prometheus names, the process itself). Needs `envoy` on
//! the PATH and the built filter (`cargo build -p mixmode --release --target wasm32-wasip1`, or
//! `MIXMODE_WASM`).

use mixmode_tests::app::{AppConfig, AppServer, SessionStore};
use mixmode_tests::client::Req;
use mixmode_tests::envoy::EnvoyHost;
use mixmode_tests::host::{Host, HostSpec};
use mixmode_tests::scenarios::{plugin_config, Fixture};
use serde_json::json;

mixmode_tests::all_scenarios!(EnvoyHost);

/// Prometheus shows the filter's metrics as `mixmode_*` (design §3a), with the same values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_names_the_metrics_mixmode() {
    let store = SessionStore::new();
    let v1 = AppServer::start(AppConfig::new("v1", "1", &store))
        .await
        .unwrap();
    let v2 = AppServer::start(AppConfig::new("v2", "2", &store))
        .await
        .unwrap();
    let f = Fixture::<EnvoyHost>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;
    let r = Req::get(f.url("/echo"))
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let prom = f.host.envoy.admin_get("/stats/prometheus").await.unwrap();
    let value = |name: &str| {
        prom.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    assert_eq!(
        value("mixmode_redispatch_ok").as_deref(),
        Some("1"),
        "{prom}"
    );
    assert_eq!(value("mixmode_heartbeat_accepted").as_deref(), Some("1"));
    assert_eq!(value("mixmode_registry_records").as_deref(), Some("1"));
}

/// The launcher owns Envoy: dropping the handle kills the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_stops_envoy() {
    let host = EnvoyHost::start(HostSpec::new(&plugin_config(json!({})), vec![]))
        .await
        .unwrap();
    let pid = host.envoy.pid();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().contains("envoy"),
        "the PID is Envoy's: {exe:?}"
    );
    drop(host);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "Envoy {pid} still runs"
    );
}

/// The example configuration keeps the registry off the public listener: there the heartbeat
/// path is a 404 from Envoy, even with the right token, and never reaches the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_listener_does_not_serve_heartbeats() {
    let store = SessionStore::new();
    let v1 = AppServer::start(AppConfig::new("v1", "1", &store))
        .await
        .unwrap();
    let f = Fixture::<EnvoyHost>::start(&store, &[&v1], json!({})).await;
    let url = format!("{}/.well-known/mixmode/heartbeat", f.host.public_url());
    let body = json!({"app": "checkout", "version": "2", "address": "127.0.0.1:9"}).to_string();
    let r = Req::post(&url, body)
        .header(
            "authorization",
            format!("Bearer {}", mixmode_tests::scenarios::TOKEN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", mixmode_tests::scenarios::show(&r));
    let r = Req::get(&url).send().await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(v1.request_count(), 0);
    assert!(
        f.hb.list().await.unwrap().is_empty(),
        "registered through the public listener"
    );
    f.expect_counters(&[("heartbeat_accepted", 0)]).await;
}

/// envoy.yaml's advice holds: with the public listener's buffer limit raised, version errors
/// with bodies over Envoy's default 1 MiB are held whole, rescued or passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_buffer_limit_holds_large_error_bodies() {
    use mixmode_tests::app::{Canned, HeartbeatClient, Mode, Registration};
    use mixmode_tests::envoy::{wasm_path, Envoy, EnvoyOptions};
    use mixmode_tests::scenarios::{dead_address, show, TOKEN};

    let store = SessionStore::new();
    let v1 = AppServer::start(AppConfig::new("v1", "1", &store))
        .await
        .unwrap();
    let v2 = AppServer::start(AppConfig::new("v2", "2", &store))
        .await
        .unwrap();
    let mut opts = EnvoyOptions::new(
        wasm_path().unwrap(),
        &plugin_config(json!({})),
        vec![v1.addr()],
    );
    opts.public_buffer_limit = Some(16 << 20);
    let envoy = Envoy::start(&opts).await.unwrap();
    let hb = HeartbeatClient::new(
        format!(
            "{}/.well-known/mixmode/heartbeat",
            envoy.heartbeat_base_url()
        ),
        TOKEN,
    );
    let big = "e".repeat(4 << 20);
    v1.set_mode(Mode::Respond(Canned::new(
        409,
        &[("x-session-version", "2"), ("x-app-version", "1")],
        &big,
    )));

    hb.register(&Registration::of(&v2)).await.unwrap();
    for _ in 0..3 {
        let r = Req::get(format!("{}/echo", envoy.public_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", show(&r));
        assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
    }
    hb.deregister(&Registration::of(&v2)).await.unwrap();
    let mut dead = Registration::of(&v2);
    dead.address = dead_address().to_string();
    hb.register(&dead).await.unwrap();
    let r = Req::get(format!("{}/echo", envoy.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", show(&r));
    assert_eq!(r.header("x-mixmode").as_deref(), Some("exhausted"));
    assert!(r.body.as_ref() == big.as_bytes(), "{} bytes", r.body.len());
}

/// Envoy's HTTP/1 codec drops request trailers unless the listener sets `enable_trailers` (the
/// example does not): neither the filter nor the server sees them, so such a request is replayed
/// byte for byte as the server got it. (With trailers let through, it is not replayed at all:
/// `rescue::chunked_body_replayed_but_not_with_trailers`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_request_trailers_dropped_by_envoy_by_default() {
    use bytes::Bytes;
    use mixmode_tests::app::sha256_hex;
    use mixmode_tests::scenarios::{binary_body, show};

    let store = SessionStore::new();
    let v1 = AppServer::start(AppConfig::new("v1", "1", &store))
        .await
        .unwrap();
    let v2 = AppServer::start(AppConfig::new("v2", "2", &store))
        .await
        .unwrap();
    let f = Fixture::<EnvoyHost>::start(&store, &[&v1], json!({})).await;
    f.register(&v2).await;
    let body = binary_body(50_000);
    let chunks: Vec<Bytes> = body.chunks(7_001).map(Bytes::copy_from_slice).collect();
    let r = Req::post(f.url("/echo/chunked-in"), Bytes::new())
        .chunked(chunks, &[("x-checksum", "abc")])
        .header("cookie", f.session("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json().unwrap()["body_sha256"], sha256_hex(&body));
    for s in [&v1, &v2] {
        let seen = &s.requests()[0];
        assert_eq!(seen.body.as_ref(), body.as_slice());
        assert!(seen.trailers.is_empty(), "{:?}", seen.trailers);
    }
    f.expect_counters(&[("redispatch_ok", 1)]).await;
}
