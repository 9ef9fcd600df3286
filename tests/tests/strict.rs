//! What the real Envoy 1.40 refuses or restricts, shown with the WAT guests of
//! `host-harness/guests/strict/` that `host-harness/tests/strict.rs` loads into the harness:
//! each refusal is Envoy's log line, which the harness's `Error` repeats word for word.
//! Needs `envoy` on the PATH (or `ENVOY_BIN`); no mixmode .wasm.
#![cfg(test)]

use mixmode_tests::app::{AppConfig, AppServer, SessionStore};
use mixmode_tests::client::Req;
use mixmode_tests::envoy::{Envoy, EnvoyOptions, StartError};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The guest `name`, compiled to a .wasm file in `dir`.
fn guest(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    let wat = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../host-harness/guests/strict")
        .join(format!("{name}.wat"));
    let wasm = wat::parse_file(&wat).unwrap_or_else(|e| panic!("{}: {e}", wat.display()));
    let path = dir.path().join(format!("{name}.wasm"));
    std::fs::write(&path, wasm).unwrap();
    path
}

async fn start(
    name: &str,
    upstreams: Vec<SocketAddr>,
) -> (tempfile::TempDir, Result<Envoy, StartError>) {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest(&dir, name);
    let mut opts = EnvoyOptions::new(wasm, &json!({}), upstreams);
    opts.log_level = "info".into();
    let r = Envoy::start(&opts).await;
    (dir, r)
}

/// Envoy refuses the module: it exits during start-up, its log naming the reason.
async fn refused_with(name: &str, line: &str) {
    let (_dir, r) = start(name, vec![]).await;
    match r {
        Ok(envoy) => panic!("Envoy loaded {name}:\n{}", envoy.logs()),
        Err(e) => {
            let wasm_line = e
                .logs
                .lines()
                .find(|l| l.contains("[error][wasm]") && l.contains(line));
            assert!(
                wasm_line.is_some(),
                "no `{line}` in Envoy's log:\n{}",
                e.logs
            );
            assert!(
                e.logs.contains("Unable to create Wasm plugin"),
                "{}",
                e.logs
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_refuses_a_module_without_an_abi_marker() {
    refused_with("no_abi_marker", "Missing or unknown Proxy-Wasm ABI version").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_refuses_an_import_it_does_not_provide() {
    refused_with(
        "unknown_import",
        "Failed to load Wasm module due to a missing import: env.proxy_function_from_the_future",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_refuses_a_module_without_an_allocator() {
    refused_with("no_allocator", "Wasm module is missing malloc function.").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_refuses_a_callback_with_a_wrong_signature() {
    refused_with(
        "bad_callback_signature",
        "Bad function signature for: proxy_on_request_headers, want: i32 i32 i32 -> i32, \
         but the module exports: i32 i32 -> i32",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_traps_a_host_call_outside_the_start_up_allow_list() {
    refused_with(
        "restricted_start",
        "Function: _initialize failed: Uncaught Error: restricted_callback",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_traps_proc_exit_during_start_up() {
    refused_with(
        "proc_exit_start",
        "Function: _start failed: Uncaught Error: restricted_callback",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_allows_logging_clock_and_stdout_during_start_up() {
    let (_dir, r) = start("allowed_start", vec![]).await;
    let envoy = r.unwrap();
    let logs = envoy.logs();
    assert!(
        logs.contains("wasm log: proxy_log during _initialize"),
        "{logs}"
    );
    assert!(
        logs.contains("wasm log: stdout during _initialize"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_runs_an_abi_0_1_0_filter() {
    let store = SessionStore::new();
    let app = AppServer::start(AppConfig::new("v1", "1", &store))
        .await
        .unwrap();
    let (_dir, r) = start("abi_0_1_0", vec![app.addr()]).await;
    let envoy = r.unwrap();
    let resp = Req::get(format!("{}/echo", envoy.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(resp.text(), "denied by an ABI 0.1.0 filter");
}

/// `proc_exit` in a callback: Envoy logs `wasi_unstable proc_exit` at trace and returns; the
/// filter logs its next line and the request reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_returns_from_proc_exit_in_a_callback() {
    let store = SessionStore::new();
    let app = AppServer::start(AppConfig::new("v1", "1", &store))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = EnvoyOptions::new(guest(&dir, "proc_exit"), &json!({}), vec![app.addr()]);
    opts.log_level = "trace".into();
    let envoy = Envoy::start(&opts).await.unwrap();
    let resp = Req::get(format!("{}/echo", envoy.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let logs = envoy.logs();
    let exit = logs.find("[trace][wasm]").and_then(|_| {
        logs.lines()
            .position(|l| l.ends_with("wasi_unstable proc_exit"))
    });
    let after = logs
        .lines()
        .position(|l| l.contains("[info][wasm]") && l.ends_with("still running after proc_exit"));
    match (exit, after) {
        (Some(e), Some(a)) => assert!(e < a, "proc_exit logged after the next line"),
        _ => panic!("proc_exit or the line after it missing from Envoy's log:\n{logs}"),
    }
}

/// Histograms in `/stats`: "No recorded values" until a stats flush saw samples, then the
/// quantiles the harness shows for the same samples (host-harness `src/histogram.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_shows_histograms_as_the_harness_does() {
    let store = SessionStore::new();
    let app = AppServer::start(AppConfig::new("v1", "1", &store))
        .await
        .unwrap();
    let (_dir, r) = start("histogram", vec![app.addr()]).await;
    let envoy = r.unwrap();
    let resp = Req::get(format!("{}/echo", envoy.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let want = "wasmcustom.hist_test: P0(5.05,5.05) P25(5.05,5.05) P50(10.5,10.5) P75(105,105) \
                P90(1250,1250) P95(1250,1250) P99(1250,1250) P99.5(1250,1250) P99.9(1250,1250) \
                P100(1250,1250)";
    // Envoy computes quantiles at its stats flush (every 5 s by default): poll, no fixed wait.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let stats = envoy.admin_get("/stats?filter=hist_test").await.unwrap();
        if stats.lines().any(|l| l == want) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `{want}` in:\n{stats}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
