//! Replay memory under many concurrent uploads, on the real Envoy (docs/design.md#registry-invariants,
//! the replay budget `redispatch.max_buffered_bytes`). Hundreds of large POSTs are in flight at
//! once, half over one HTTP/2 connection in 1 KiB DATA frames, half over HTTP/1.1 connections;
//! the v1 server holds every answer until it has received every body, so at that moment each
//! request's replay copy is either held by the VM or was refused: the budget is tested at its
//! fullest, not by luck of timing. What a user checks: every request answered (rescued, or the
//! server's own 409 untouched), no VM failure, the refusals counted, the budget back after.
//!
//! The sizes keep the whole upload phase well inside Envoy's default 15 s route timeout (the
//! first answer waits for the last body) on a loaded 2-core machine: 25 MiB in all.
//!
//! Envoy's memory is printed (`cargo test --test uploads -- --nocapture`).
#![cfg(test)] // helpers included: see clippy.toml

use std::time::{Duration, Instant};

use bytes::Bytes;
use mixmode_tests::app::{sha256_hex, Gate, Mode, SessionStore};
use mixmode_tests::client::{Conn, Req, Resp};
use mixmode_tests::envoy::EnvoyHost;
use mixmode_tests::scenarios::faults::assert_no_crash;
use mixmode_tests::scenarios::{binary_body, server, show, Fixture};
use serde_json::json;

const UPLOADS_H2: usize = 100;
const UPLOADS_H1: usize = 100;
const BODY: usize = 128 << 10;

/// Envoy's resident memory in KiB (`VmRSS`), or its peak (`VmHWM`).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The body of upload `n`: its own bytes, so an answer that crossed streams is seen.
fn upload(n: usize) -> Vec<u8> {
    let mut b = binary_body(BODY);
    b[..8].copy_from_slice(&(n as u64).to_be_bytes());
    b
}

/// Rescued by v2 with its own body, or v1's own 409 passed through (its replay copy was past
/// the budget). Returns whether it was rescued.
fn check_answer(n: usize, r: &Resp) -> bool {
    match r.status {
        200 => {
            assert_eq!(
                r.header("x-mixmode").as_deref(),
                Some("redispatched"),
                "upload {n}: {}",
                show(r)
            );
            let echo = r.json().unwrap();
            assert_eq!(echo["server"], "v2", "upload {n}: {}", show(r));
            assert_eq!(
                echo["body_sha256"],
                sha256_hex(&upload(n)),
                "upload {n} was not replayed byte for byte"
            );
            true
        }
        409 => {
            assert_eq!(
                r.header("x-mixmode"),
                None,
                "upload {n}: a refused replay passes v1's answer untouched: {}",
                show(r)
            );
            assert_eq!(r.header("x-session-version").as_deref(), Some("2"));
            false
        }
        _ => panic!("upload {n}: {}", show(r)),
    }
}

/// 4 MiB: at most 32 of the 200 copies fit; the rest pass v1's answer through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_stay_within_the_replay_budget() {
    let rescued = uploads(4 << 20).await;
    assert!(rescued >= 1, "no upload was rescued");
}

/// 64 MiB (the default): all 200 copies (25 MiB) fit, so every upload is rescued: the budget
/// charges what the copies hold, not the frames they came in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_within_the_default_budget_are_all_rescued() {
    let rescued = uploads(64 << 20).await;
    assert_eq!(rescued, UPLOADS_H2 + UPLOADS_H1);
}

/// Sends the uploads with a budget of `budget` bytes; checks every answer, the counters and
/// the VM's health; returns how many were rescued.
async fn uploads(budget: usize) -> usize {
    let budget_bytes = budget;
    let store = SessionStore::new();
    let v1 = server(&store, "v1", "1").await;
    let v2 = server(&store, "v2", "2").await;
    let gate = Gate::new();
    v1.set_mode(Mode::Gated(gate.clone()));
    let f = Fixture::<EnvoyHost>::start(
        &store,
        &[&v1],
        json!({"redispatch": {
            "max_buffered_bytes": budget_bytes,
            "max_replay_body_bytes": 1 << 20,
            // Answers are held until every body arrived: no deadline may run out meanwhile.
            "deadline_ms": 120_000,
        }}),
    )
    .await;
    f.register(&v2).await;
    let pid = f.host.envoy.pid();
    let rss_before = memory_kib(pid, "VmRSS:");
    let cookie = f.session("2");
    let total = UPLOADS_H2 + UPLOADS_H1;
    let long = Duration::from_secs(300);

    let h2_url = f.host.envoy.public_url().replacen("http://", "h2c://", 1);
    let h2 = Conn::open_url(&h2_url).await.unwrap();
    let h2_reqs: Vec<Req> = (0..UPLOADS_H2)
        .map(|n| {
            let chunks = upload(n).chunks(1024).map(Bytes::copy_from_slice).collect();
            Req::post(f.url(&format!("/echo/up/{n}")), Vec::new())
                .chunked(chunks, &[])
                .header("cookie", &cookie)
                .header("content-type", "application/octet-stream")
                .timeout(long)
        })
        .collect();
    let h2_task = tokio::spawn(async move { h2.send_concurrent(h2_reqs).await });
    let mut h1_tasks = Vec::new();
    for n in UPLOADS_H2..total {
        let req = Req::post(f.url(&format!("/echo/up/{n}")), upload(n))
            .header("cookie", &cookie)
            .header("content-type", "application/octet-stream")
            .timeout(long);
        h1_tasks.push(tokio::spawn(req.send()));
    }

    // Every body has passed the filter once v1 has them all; nothing has been answered yet.
    let start = Instant::now();
    while v1.request_count() < total {
        // Nothing is answered before the gate opens: a request that ended is an error, shown
        // now instead of as a timeout.
        if h2_task.is_finished() || h1_tasks.iter().any(|t| t.is_finished()) {
            let h1_done: Vec<usize> = (0..h1_tasks.len())
                .filter(|i| h1_tasks[*i].is_finished())
                .collect();
            if h2_task.is_finished() {
                let r = h2_task.await.unwrap();
                panic!(
                    "the h2 connection ended before any answer: {:?}",
                    r.map(|v| v.len())
                );
            }
            let first = h1_tasks.swap_remove(h1_done[0]).await.unwrap();
            panic!(
                "{} h1 uploads ended before any answer, the first with {:?}",
                h1_done.len(),
                first.map(|r| show(&r))
            );
        }
        if start.elapsed() > Duration::from_secs(180) {
            let active = f
                .host
                .envoy
                .stats("downstream_rq_active|upstream_rq_active|upstream_cx_active")
                .await;
            panic!(
                "v1 got {} of {total} uploads in {:?}; Envoy: {active:?}",
                v1.request_count(),
                start.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_held = memory_kib(pid, "VmRSS:");
    gate.open();

    let mut rescued = 0;
    let h2_answers = h2_task.await.unwrap().unwrap();
    for (n, r) in h2_answers.into_iter().enumerate() {
        let r = r.unwrap_or_else(|e| panic!("upload {n} (h2): {e:#}"));
        rescued += usize::from(check_answer(n, &r));
    }
    for (i, t) in h1_tasks.into_iter().enumerate() {
        let n = UPLOADS_H2 + i;
        let r = t
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("upload {n} (h1): {e:#}"));
        rescued += usize::from(check_answer(n, &r));
    }
    let refused = total - rescued;
    let rss_peak = memory_kib(pid, "VmHWM:");
    println!(
        "uploads: {total} x {} KiB in flight ({UPLOADS_H2} h2 in 1 KiB frames, {UPLOADS_H1} h1), \
         budget {} MiB: {rescued} rescued, {refused} refused past the budget; Envoy RSS {} MiB \
         before, {} MiB with every body in flight (+{} MiB), peak {} MiB",
        BODY >> 10,
        budget_bytes >> 20,
        rss_before >> 10,
        rss_held >> 10,
        rss_held.saturating_sub(rss_before) >> 10,
        rss_peak >> 10,
    );

    // The copies held at once fit the budget: at most budget / BODY of them.
    assert!(
        rescued <= budget_bytes / BODY,
        "{rescued} replay copies of {BODY} bytes held at once within {budget_bytes}"
    );
    assert_eq!(v2.request_count(), rescued);
    f.expect_counters(&[
        ("mismatch_detected", total as u64),
        ("redispatch_ok", rescued as u64),
        ("replay_too_large", refused as u64),
        ("heartbeat_accepted", 1),
    ])
    .await;

    // The budget is whole again once the requests are done: the next upload is rescued.
    v1.set_mode(Mode::Normal);
    let r = Req::post(f.url("/echo/up/after"), upload(total))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(check_answer(total, &r), "{}", show(&r));

    let wasm = f.host.envoy.stats("^wasm\\.").await.unwrap();
    let failed: Vec<_> = wasm
        .iter()
        .filter(|(k, v)| (k.contains("fail") || k.contains("crash")) && **v > 0)
        .collect();
    assert!(failed.is_empty(), "wasm failures: {failed:?}");
    assert_no_crash(&f.host.envoy.logs());
    rescued
}
