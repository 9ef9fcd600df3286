//! Envoy behaviours a filter can observe, reproduced by the harness (README, "Quirks").
//! Driven through the `probe` guest filter.
#![cfg(test)] // helpers included: see clippy.toml

mod common;
use common::*;
use host_harness::{Error, Harness, HarnessBuilder, CONNECT_FAILURE_BODY, TIMEOUT_BODY};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn probe() -> HarnessBuilder {
    Harness::builder().plugin_wasm(guest("probe"))
}

fn log_index(h: &host_harness::RunningHarness, needle: &str) -> Option<usize> {
    h.logs().iter().position(|(_, l)| l.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_are_gone_in_the_response_phase() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let h = probe()
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/late", &[("x-probe", "late-read")]).await;
    assert_eq!(
        got.header("x-probe-single"),
        Some("2"),
        "single read: BadArgument"
    );
    assert_eq!(got.header("x-probe-pairs"), Some("0:0"), "pairs: Ok, empty");
    assert_eq!(
        got.header("x-probe-prop"),
        Some("1"),
        "request.path: NotFound"
    );
    assert_eq!(
        got.header("x-probe-upstream"),
        Some(format!("0:{}", up.addr).as_str())
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_is_back_in_on_log() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let h = probe()
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    get(h.listener_addrs()[0], "/logged", &[]).await;
    for _ in 0..100 {
        if log_index(&h, "on_log path=0:/logged").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        log_index(&h, "on_log path=0:/logged").is_some(),
        "{:?}",
        h.logs()
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_from_request_headers_holds_the_body_back() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let side = upstream(|_| Reply::ok("side")).await;
    let h = probe()
        .listener("127.0.0.1:0", up.addr)
        .cluster("side", side.addr)
        .start()
        .await
        .unwrap();
    let got = send(
        h.listener_addrs()[0],
        "POST",
        "/p",
        &[("x-probe", "pause-headers")],
        b"abc",
    )
    .await
    .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(up.requests()[0].body, b"abc");
    let call = log_index(&h, "call response").unwrap();
    let body = log_index(&h, "request body size=3 eos=true").unwrap();
    assert!(
        call < body,
        "no body callback before the resume: {:?}",
        h.logs()
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_allow_on_headers_stop_iteration_a_body_waiting_filter_hangs() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let side = upstream(|_| Reply::ok("side")).await;
    let h = probe()
        .listener("127.0.0.1:0", up.addr)
        .cluster("side", side.addr)
        .stream_idle_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let got = send(
        h.listener_addrs()[0],
        "POST",
        "/p",
        &[("x-probe", "pause-headers-buffer")],
        b"abc",
    )
    .await
    .unwrap();
    assert_eq!(got.status, 408);
    assert!(up.requests().is_empty());
    assert!(log_index(&h, "request body").is_none());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_allow_on_headers_stop_iteration_the_body_arrives_while_headers_are_held() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let side = upstream(|_| Reply::ok("side")).await;
    let h = probe()
        .listener("127.0.0.1:0", up.addr)
        .cluster("side", side.addr)
        .allow_on_headers_stop_iteration(true)
        .start()
        .await
        .unwrap();
    let got = send(
        h.listener_addrs()[0],
        "POST",
        "/p",
        &[("x-probe", "pause-headers-buffer")],
        b"abcdef",
    )
    .await
    .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(up.requests()[0].body, b"abcdef");
    let body = log_index(&h, "request body size=6 eos=true").unwrap();
    let call = log_index(&h, "call response").unwrap();
    assert!(body < call);
    h.shutdown().await;
}

/// Sends a chunked request by hand, one chunk at a time, and returns the raw response.
async fn chunked_request(addr: std::net::SocketAddr, probe_mode: &str, chunks: &[&str]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /chunks HTTP/1.1\r\nhost: t\r\nx-probe: {probe_mode}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for c in chunks {
        s.write_all(format!("{:x}\r\n{c}\r\n", c.len()).as_bytes())
            .await
            .unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        out.extend_from_slice(&buf[..n]);
        if n == 0 || String::from_utf8_lossy(&out).contains("\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_body_callbacks_see_the_cumulative_size() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let h = probe()
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let raw = chunked_request(h.listener_addrs()[0], "buffer-body", &["aaa", "bbb", "ccc"]).await;
    let sizes_line = raw
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-probe-sizes:"))
        .unwrap_or_else(|| panic!("{raw}"));
    let sizes: Vec<usize> = sizes_line
        .split(':')
        .nth(1)
        .unwrap()
        .trim()
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(*sizes.last().unwrap(), 9, "{sizes:?}");
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    assert_eq!(up.requests()[0].body, b"AAABBBCCC");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_reply_from_the_request_phase() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let h = probe()
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/", &[("x-probe", "local-request")]).await;
    assert_eq!(got.status, 418);
    assert_eq!(got.text(), "teapot");
    assert_eq!(got.all("set-cookie"), vec!["a=1", "b=2"]);
    assert_eq!(got.header("content-length"), Some("6"));
    assert_eq!(got.header("content-type"), Some("text/plain"));
    // Envoy runs its own local reply through the filter's response callbacks.
    assert_eq!(got.header("x-probe-saw-response"), Some("418"));
    assert!(up.requests().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_reply_from_the_response_phase_after_a_call() {
    let up = upstream(|_| Reply::ok("original").status(409)).await;
    let side = upstream(|_| Reply::ok("side")).await;
    let h = probe()
        .listener("127.0.0.1:0", up.addr)
        .cluster("side", side.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/", &[("x-probe", "local-response")]).await;
    assert_eq!(got.status, 299);
    assert_eq!(got.text(), "replaced");
    assert_eq!(got.header("x-from"), Some("call"));
    assert_eq!(got.header("x-envoy-upstream-service-time"), None);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_from_response_headers_holds_the_response_body() {
    let up = upstream(|_| Reply::ok("payload")).await;
    let side = upstream(|_| Reply::ok("side")).await;
    let h = probe()
        .listener("127.0.0.1:0", up.addr)
        .cluster("side", side.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/", &[("x-probe", "pause-response")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "payload");
    assert_eq!(got.header("x-probe"), Some("resumed"));
    let resumed = log_index(&h, "resuming response").unwrap();
    let body = log_index(&h, "response body size=7").unwrap();
    assert!(resumed < body, "{:?}", h.logs());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_answers_carry_service_time_and_envoy_request_headers() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let h = probe()
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/x?y=1", &[]).await;
    assert!(got.header("x-envoy-upstream-service-time").is_some());
    let seen = &up.requests()[0];
    assert_eq!(seen.path, "/x?y=1");
    assert_eq!(seen.header("host"), Some("test.local"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert!(seen.header("x-request-id").is_some());
    assert_eq!(seen.header("x-envoy-expected-rq-timeout-ms"), Some("15000"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_gets_envoys_503() {
    let dead = dead_addr().await;
    let h = probe().listener("127.0.0.1:0", dead).start().await.unwrap();
    let got = get(h.listener_addrs()[0], "/", &[]).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.text(), CONNECT_FAILURE_BODY);
    assert_eq!(got.header("x-envoy-upstream-service-time"), None);
    h.shutdown().await;
}

async fn dispatch_harness(extra: &[(&str, std::net::SocketAddr)]) -> host_harness::RunningHarness {
    let up = upstream(|_| Reply::ok("never")).await;
    let mut b = probe()
        .listener("127.0.0.1:0", up.addr)
        .original_dst_cluster("peers");
    for (name, addr) in extra {
        b = b.cluster(*name, *addr);
    }
    b.start().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_to_an_unreachable_peer_gets_envoys_503() {
    let dead = dead_addr().await;
    let h = dispatch_harness(&[("dead", dead)]).await;
    let got = get(
        h.listener_addrs()[0],
        "/",
        &[("x-probe", "dispatch"), ("x-probe-cluster", "dead")],
    )
    .await;
    assert_eq!(got.header("x-call-status"), Some("503"));
    assert_eq!(
        got.header("x-call-header-names"),
        Some(":status,content-length,content-type")
    );
    assert_eq!(got.header("x-call-service-time"), Some("absent"));
    assert_eq!(got.text(), CONNECT_FAILURE_BODY);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_timeout_gets_envoys_504() {
    let slow = upstream(|_| Reply::ok("late").delay(Duration::from_secs(3))).await;
    let h = dispatch_harness(&[("slow", slow.addr)]).await;
    let got = get(
        h.listener_addrs()[0],
        "/",
        &[
            ("x-probe", "dispatch"),
            ("x-probe-cluster", "slow"),
            ("x-probe-timeout-ms", "200"),
        ],
    )
    .await;
    assert_eq!(got.header("x-call-status"), Some("504"));
    assert_eq!(got.text(), TIMEOUT_BODY);
    assert_eq!(got.header("x-call-service-time"), Some("absent"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_refusals_come_back_at_once() {
    let peer = upstream(|_| Reply::ok("peer")).await;
    let h = dispatch_harness(&[("known", peer.addr)]).await;
    let addr = h.listener_addrs()[0];
    let unknown = get(
        addr,
        "/",
        &[("x-probe", "dispatch"), ("x-probe-cluster", "nope")],
    )
    .await;
    assert_eq!(unknown.header("x-dispatch-error"), Some("BadArgument"));
    let no_authority = get(
        addr,
        "/",
        &[
            ("x-probe", "dispatch"),
            ("x-probe-cluster", "known"),
            ("x-probe-authority", "none"),
        ],
    )
    .await;
    assert_eq!(no_authority.header("x-dispatch-error"), Some("BadArgument"));
    let no_target = get(
        addr,
        "/",
        &[("x-probe", "dispatch"), ("x-probe-cluster", "peers")],
    )
    .await;
    assert_eq!(
        no_target.header("x-dispatch-error"),
        Some("InternalFailure")
    );
    let bad_target = get(
        addr,
        "/",
        &[
            ("x-probe", "dispatch"),
            ("x-probe-cluster", "peers"),
            ("x-probe-target", "nowhere"),
        ],
    )
    .await;
    assert_eq!(
        bad_target.header("x-dispatch-error"),
        Some("InternalFailure")
    );
    assert!(peer.requests().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_dst_cluster_follows_the_header_and_keeps_peer_headers() {
    let peer = upstream(|_| {
        Reply::ok("from peer")
            .status(201)
            .header("set-cookie", "a")
            .header("set-cookie", "b")
    })
    .await;
    let h = dispatch_harness(&[]).await;
    let target = peer.addr.to_string();
    let got = get(
        h.listener_addrs()[0],
        "/",
        &[
            ("x-probe", "dispatch"),
            ("x-probe-cluster", "peers"),
            ("x-probe-target", &target),
        ],
    )
    .await;
    assert_eq!(got.header("x-call-status"), Some("201"));
    assert_eq!(got.header("x-call-service-time"), Some("present"));
    assert!(got
        .header("x-call-header-names")
        .unwrap()
        .contains("set-cookie,set-cookie"));
    assert_eq!(got.text(), "from peer");
    let seen = &peer.requests()[0];
    assert_eq!(
        seen.header("x-envoy-original-dst-host"),
        Some(target.as_str())
    );
    assert_eq!(seen.header("x-envoy-internal"), Some("true"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_reset_mid_answer_has_no_headers() {
    // A peer that promises 100 bytes, sends 5 and closes.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello")
                .await;
            drop(s);
        }
    });
    let h = dispatch_harness(&[("broken", peer)]).await;
    let got = get(
        h.listener_addrs()[0],
        "/",
        &[("x-probe", "dispatch"), ("x-probe-cluster", "broken")],
    )
    .await;
    assert_eq!(got.header("x-call-headers"), Some("0"));
    assert_eq!(got.header("x-call-status"), Some("none(2)"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_data_is_one_store_across_workers_with_cas() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let h = probe()
        .workers(2)
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let addr = h.listener_addrs()[0];
    // Fresh connections go round robin: these two land on different workers.
    let first = get(addr, "/", &[("x-probe", "shared"), ("x-probe-value", "v1")]).await;
    assert_eq!(first.text(), "old=- cas=0 set=Ok(()) stale=Ok(())");
    let second = get(addr, "/", &[("x-probe", "shared"), ("x-probe-value", "v2")]).await;
    assert!(
        second.text().starts_with("old=v1 cas="),
        "{}",
        second.text()
    );
    assert!(
        second.text().ends_with("set=Ok(()) stale=Err(CasMismatch)"),
        "{}",
        second.text()
    );
    assert_eq!(h.shared_data("k").unwrap().0, b"v2");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_ticks_and_cas_loses_no_update() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let h = probe()
        .workers(2)
        .plugin_config(b"tick_ms=10;max_ticks=20".to_vec())
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let mut instances = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        instances = h
            .log_lines()
            .into_iter()
            .filter(|l| l.message == "tick")
            .map(|l| l.instance)
            .collect();
        if instances.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Envoy ticks on the main thread and on every worker: N + 1 root contexts.
    assert_eq!(
        instances.into_iter().collect::<Vec<_>>(),
        vec!["main", "worker 0", "worker 1"]
    );
    // Each of the 3 instances ticks exactly 20 times and then stops, so both counters come to
    // rest: wait for the metric to reach its final value (bounded generously for a loaded
    // machine), then compare values that no longer move.
    // The guest bumps the metric before its CAS write, so wait for both.
    let shared = || -> u64 {
        h.shared_data("ticks")
            .and_then(|(v, _)| String::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (h.metric("probe.ticks").unwrap() < 60 || shared() < 60)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        h.metric("probe.ticks").unwrap(),
        60,
        "3 instances x 20 ticks"
    );
    assert_eq!(shared(), 60, "every tick's CAS increment landed");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_refusal_is_an_error_with_the_plugin_log() {
    let err = probe()
        .plugin_config(b"refuse please".to_vec())
        .start()
        .await
        .err()
        .unwrap();
    match &err {
        Error::Refused {
            callback, instance, ..
        } => {
            assert_eq!(*callback, "proxy_on_configure");
            assert_eq!(instance, "canary");
        }
        other => panic!("{other}"),
    }
    assert!(err
        .logs()
        .iter()
        .any(|l| l.message == "bad configuration: refuse please"));
    assert!(err.to_string().contains("bad configuration: refuse please"));

    let err = probe()
        .vm_config(b"refuse".to_vec())
        .start()
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::Refused {
                callback: "proxy_on_vm_start",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_shared_across_workers() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let h = probe()
        .workers(2)
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let addr = h.listener_addrs()[0];
    for _ in 0..4 {
        get(addr, "/", &[]).await;
    }
    get(addr, "/", &[("x-probe", "gauge"), ("x-probe-value", "7")]).await;
    assert_eq!(h.metric("probe.requests"), Some(5));
    assert_eq!(h.metric("probe.gauge"), Some(7));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_items_reach_the_registering_instance() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let h = probe()
        .workers(2)
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let addr = h.listener_addrs()[0];
    get(addr, "/", &[("x-probe", "enqueue")]).await;
    get(addr, "/", &[("x-probe", "enqueue")]).await;
    for _ in 0..200 {
        if h.metric("probe.queue_items") == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.metric("probe.queue_items"), Some(2));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_filter_takes_its_worker_down_like_envoy() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let h = probe()
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let addr = h.listener_addrs()[0];
    let crashed = get(addr, "/", &[("x-probe", "panic")]).await;
    assert_eq!(crashed.status, 503);
    assert!(crashed.body.is_empty());
    let after = get(addr, "/", &[]).await;
    assert_eq!(after.status, 503, "the VM stays down (FAIL_CLOSED)");
    assert!(h
        .logs()
        .iter()
        .any(|(l, m)| *l == host_harness::LogLevel::Critical && m.contains("RuntimeError")));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_envoy_offers() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let h = probe()
        .name("probe-plugin")
        .root_id("root1")
        .vm_id("vm1")
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/props?q=1", &[("x-probe", "props")]).await;
    let text = got.text();
    for line in [
        "plugin_name=0:probe-plugin",
        "plugin_root_id=0:root1",
        "plugin_vm_id=0:vm1",
        "request.path=0:/props?q=1",
        "request.method=0:GET",
        "request.host=0:test.local",
        "cluster_name=0:upstream",
        "upstream.address=1:",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    assert!(text.contains("source.address=0:127.0.0.1:"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_listeners_share_one_plugin() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let h = probe()
        .listener("127.0.0.1:0", up.addr)
        .listener_without_upstream("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let (public, internal) = (h.listener_addrs()[0], h.listener_addrs()[1]);
    get(
        public,
        "/",
        &[("x-probe", "shared"), ("x-probe-value", "from-public")],
    )
    .await;
    let seen = get(
        internal,
        "/",
        &[("x-probe", "shared"), ("x-probe-value", "x")],
    )
    .await;
    assert!(
        seen.text().starts_with("old=from-public"),
        "{}",
        seen.text()
    );
    let no_route = get(internal, "/", &[]).await;
    assert_eq!(no_route.status, 404);
    h.shutdown().await;
}
