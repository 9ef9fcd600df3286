//! The harness runs filters equivalent to the proxy-wasm Rust SDK's examples.

mod common;
use common::*;
use host_harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_headers_answers_hello_and_forwards_the_rest() {
    let up = upstream(|_| Reply::ok("from upstream")).await;
    let h = Harness::builder()
        .plugin_wasm(guest("http_headers"))
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let addr = h.listener_addrs()[0];

    let hello = get(addr, "/hello", &[]).await;
    assert_eq!(hello.status, 200);
    assert_eq!(hello.text(), "Hello, World!\n");
    assert_eq!(hello.header("hello"), Some("World"));
    assert_eq!(hello.header("powered-by"), Some("proxy-wasm"));
    assert!(
        up.requests().is_empty(),
        "a local reply never reaches the upstream"
    );

    let other = get(addr, "/other", &[("x-mine", "1")]).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.text(), "from upstream");
    assert_eq!(up.requests().len(), 1);
    assert_eq!(up.requests()[0].header("x-mine"), Some("1"));

    let logs = h.logs();
    assert!(
        logs.iter().any(|(_, l)| l.ends_with("-> :path: /other")),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|(_, l)| l.ends_with("<- :status: 200")),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|(_, l)| l.ends_with("completed.")),
        "{logs:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_body_rewrites_the_buffered_response() {
    let up = upstream(|_| Reply::ok("my secret is secret")).await;
    let h = Harness::builder()
        .plugin_wasm(guest("http_body"))
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/", &[]).await;
    assert_eq!(got.text(), "my ****** is ******");
    // The filter removed the length and continued the headers before the body: the body
    // streams (chunked), as from Envoy.
    assert_eq!(got.header("content-length"), None);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_config_puts_the_configuration_in_a_header() {
    let up = upstream(|_| Reply::ok("x")).await;
    let h = Harness::builder()
        .plugin_wasm(guest("http_config"))
        .plugin_config(b"hello from config".to_vec())
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/", &[]).await;
    assert_eq!(got.header("custom-header"), Some("hello from config"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_auth_random_dispatches_and_decides_on_the_answer() {
    // The "random" byte comes from our httpbin: even for /even clients, odd otherwise.
    let httpbin_even = upstream(|_| Reply::ok("\u{2}")).await;
    let httpbin_odd = upstream(|_| Reply::ok("\u{3}")).await;
    let up = upstream(|_| Reply::ok("secret stuff")).await;
    for (httpbin, allowed) in [(&httpbin_even, true), (&httpbin_odd, false)] {
        let h = Harness::builder()
            .plugin_wasm(guest("http_auth_random"))
            .listener("127.0.0.1:0", up.addr)
            .cluster("httpbin", httpbin.addr)
            .start()
            .await
            .unwrap();
        let got = get(h.listener_addrs()[0], "/", &[]).await;
        if allowed {
            assert_eq!(got.status, 200);
            assert_eq!(got.text(), "secret stuff");
        } else {
            assert_eq!(got.status, 403);
            assert_eq!(got.text(), "Access forbidden.\n");
        }
        assert_eq!(got.header("powered-by"), Some("proxy-wasm"));
        let call = httpbin.requests().pop().unwrap();
        assert_eq!(call.path, "/bytes/1");
        assert_eq!(call.header("host"), Some("httpbin.org"));
        assert_eq!(call.header("x-envoy-internal"), Some("true"));
        assert_eq!(call.header("x-envoy-expected-rq-timeout-ms"), Some("5000"));
        h.shutdown().await;
    }
}
