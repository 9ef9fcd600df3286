//! The front end's protocols (HTTP/1.0, HTTP/1.1, h2c), trailers and streaming, as Envoy's
//! connection manager offers them to filters and clients.
#![cfg(test)] // helpers included: see clippy.toml

mod common;
use common::*;
use host_harness::{Harness, HarnessBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn probe() -> HarnessBuilder {
    Harness::builder().plugin_wasm(guest("probe"))
}

fn protocol_line(text: &str) -> Option<&str> {
    text.lines().find(|l| l.starts_with("request.protocol="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_and_http1_on_one_listener_with_envoys_protocol_names() {
    let up = upstream(|s| Reply::ok(&format!("upstream saw {}", s.path))).await;
    let h = probe()
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let addr = h.listener_addrs()[0];

    // Forwarded over h2c: the client gets the upstream's answer.
    let got = send_h2(addr, "POST", "/h2?x=1", &[], b"hello")
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "upstream saw /h2?x=1");
    assert_eq!(up.requests()[0].body, b"hello");
    assert_eq!(up.requests()[0].header("host"), Some("test.local"));

    // The property a filter reads, as Envoy spells it per protocol.
    let got = send_h2(addr, "GET", "/p", &[("x-probe", "props")], b"")
        .await
        .unwrap();
    assert_eq!(
        protocol_line(&got.text()),
        Some("request.protocol=0:HTTP/2")
    );
    assert!(
        got.text().contains("request.host=0:test.local"),
        "{}",
        got.text()
    );
    let got = get(addr, "/p", &[("x-probe", "props")]).await;
    assert_eq!(
        protocol_line(&got.text()),
        Some("request.protocol=0:HTTP/1.1")
    );

    // HTTP/1.0: Envoy's codec answers 426 (`accept_http_10` is off by default), no filter runs.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /p HTTP/1.0\r\nhost: test.local\r\nx-probe: props\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(
        raw.starts_with("HTTP/1.1 426") || raw.starts_with("HTTP/1.0 426"),
        "{raw}"
    );
    assert!(!raw.contains("request.protocol"), "{raw}");
    h.shutdown().await;
}
