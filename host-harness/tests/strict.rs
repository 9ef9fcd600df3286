//! Strict where Envoy is strict: the modules of `guests/strict/` that Envoy 1.40 refuses are
//! refused here with Envoy's own words, start-up host calls are restricted as in cpp-host's
//! `startVm`, and `proc_exit` returns. `tests/tests/strict.rs` (mixmode-tests) loads the same
//! files into the real Envoy and checks its log for the same lines.
#![cfg(test)]

mod common;
use common::*;
use host_harness::{Error, Harness, LoadError, LogLevel};

fn strict(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("guests/strict")
        .join(format!("{name}.wat"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn refusal(name: &str) -> Error {
    match Harness::builder()
        .plugin_wasm_bytes(strict(name))
        .listener_without_upstream("127.0.0.1:0")
        .start()
        .await
    {
        Ok(_) => panic!("{name} loaded; Envoy refuses it"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_without_an_abi_marker_is_refused() {
    let e = refusal("no_abi_marker").await;
    assert!(
        matches!(e, Error::Load(LoadError::MissingAbiVersion)),
        "{e}"
    );
    assert!(e
        .to_string()
        .contains("Missing or unknown Proxy-Wasm ABI version"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_the_host_does_not_provide_is_refused() {
    let e = refusal("unknown_import").await;
    assert!(
        e.to_string().contains(
            "Failed to load Wasm module due to a missing import: env.proxy_function_from_the_future"
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_without_an_allocator_is_refused() {
    let e = refusal("no_allocator").await;
    assert!(matches!(e, Error::Load(LoadError::MissingMalloc)), "{e}");
    assert!(e
        .to_string()
        .contains("Wasm module is missing malloc function."));
}

/// The callback is not dropped silently (its traffic would pass unfiltered): the module is
/// refused, naming the function and both signatures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_with_a_wrong_signature_is_refused() {
    let e = refusal("bad_callback_signature").await;
    assert!(
        e.to_string().contains(
            "Bad function signature for: proxy_on_request_headers, want: i32 i32 i32 -> i32, \
             but the module exports: i32 i32 -> i32"
        ),
        "{e}"
    );
}

/// The same two-argument callback under an ABI 0.1.0 marker is what that ABI wants, and it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abi_0_1_0_filter_runs_its_two_argument_header_callback() {
    let up = upstream(|_| Reply::ok("upstream")).await;
    let h = Harness::builder()
        .plugin_wasm_bytes(strict("abi_0_1_0"))
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/", &[]).await;
    assert_eq!(got.status, 403);
    assert_eq!(got.text(), "denied by an ABI 0.1.0 filter");
    assert!(up.requests().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_call_outside_the_start_up_allow_list_traps() {
    let e = refusal("restricted_start").await;
    let text = e.to_string();
    assert!(
        text.contains("Function: _initialize failed: Uncaught Error: restricted_callback"),
        "{text}"
    );
    assert!(text.contains("env.proxy_define_metric"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_clock_and_stdout_are_allowed_during_start_up() {
    let h = Harness::builder()
        .plugin_wasm_bytes(strict("allowed_start"))
        .start()
        .await
        .unwrap();
    let logs = h.logs();
    // The canary, the main-thread VM and one worker each ran `_initialize`.
    for line in ["proxy_log during _initialize", "stdout during _initialize"] {
        let n = logs
            .iter()
            .filter(|(l, m)| *l == LogLevel::Info && m == line)
            .count();
        assert_eq!(n, 3, "{line}: {logs:?}");
    }
    h.shutdown().await;
}

/// `proc_exit` during start-up is not on the allow-list either: a command module whose
/// `_start` exits (even with 0) is refused, as Envoy refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_exit_during_start_up_traps() {
    let e = refusal("proc_exit_start").await;
    assert!(
        e.to_string()
            .contains("Function: _start failed: Uncaught Error: restricted_callback"),
        "{e}"
    );
}

/// In a callback `proc_exit` is logged at trace and returns; the filter goes on and the
/// request reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_exit_in_a_callback_returns_and_the_vm_goes_on() {
    let up = upstream(|_| Reply::ok("upstream")).await;
    let h = Harness::builder()
        .plugin_wasm_bytes(strict("proc_exit"))
        .log_level(LogLevel::Trace)
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    for _ in 0..2 {
        let got = get(h.listener_addrs()[0], "/", &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "upstream");
    }
    let logs = h.logs();
    let count = |level: LogLevel, text: &str| {
        logs.iter()
            .filter(|(l, m)| *l == level && m == text)
            .count()
    };
    assert_eq!(
        count(LogLevel::Trace, "wasi_unstable proc_exit"),
        2,
        "{logs:?}"
    );
    assert_eq!(
        count(LogLevel::Info, "still running after proc_exit"),
        2,
        "{logs:?}"
    );
    h.shutdown().await;
}

/// Histograms are kept and shown as Envoy shows them (values observed on Envoy 1.40 with this
/// guest, see `src/histogram.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_are_recorded_and_shown() {
    let up = upstream(|_| Reply::ok("upstream")).await;
    let h = Harness::builder()
        .plugin_wasm_bytes(strict("histogram"))
        .listener("127.0.0.1:0", up.addr)
        .admin("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let admin = h.admin_addr().unwrap();
    assert!(get(admin, "/stats", &[])
        .await
        .text()
        .contains("wasmcustom.hist_test: No recorded values"));
    assert_eq!(get(h.listener_addrs()[0], "/", &[]).await.status, 200);
    let hist = h.histograms().remove("hist_test").unwrap();
    assert_eq!(hist.count(), 4);
    assert_eq!(hist.sum(), 5 + 10 + 100 + 1234);
    assert_eq!(hist.quantile(0.5), Some(10.5));
    assert!(!h.metrics().contains_key("hist_test"));
    let stats = get(admin, "/stats", &[]).await.text();
    assert!(
        stats.lines().any(|l| l
            == "wasmcustom.hist_test: P0(5.05,5.05) P25(5.05,5.05) P50(10.5,10.5) \
                P75(105,105) P90(1250,1250) P95(1250,1250) P99(1250,1250) P99.5(1250,1250) \
                P99.9(1250,1250) P100(1250,1250)"),
        "{stats}"
    );
    h.shutdown().await;
}
