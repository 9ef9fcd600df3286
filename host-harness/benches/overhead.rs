//! Per-request overhead of the harness: a GET on a kept-alive connection, straight to the
//! upstream, through the harness with a module that exports no callbacks, and through the
//! harness with a no-op SDK filter (every callback runs and continues).
// A bench (harness = false) is not compiled with cfg(test), so clippy.toml's test exemptions
// do not reach it; it panics on a broken setup like a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

const NO_CALLBACKS: &str = r#"(module (memory (export "memory") 1)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024))"#;

async fn client(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn one(sender: &mut SendRequest<Full<Bytes>>) {
    sender.ready().await.unwrap();
    let req = hyper::Request::builder()
        .uri("/bench")
        .header("host", "bench")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let up = rt.block_on(common::upstream(|_| common::Reply::ok("hello")));
    let noop = common::guest("noop");
    let start = |wasm: Vec<u8>| {
        rt.block_on(
            host_harness::Harness::builder()
                .plugin_wasm_bytes(wasm)
                .listener("127.0.0.1:0", up.addr)
                .start(),
        )
        .unwrap()
    };
    let bare = start(NO_CALLBACKS.as_bytes().to_vec());
    let filtered = start(std::fs::read(noop).unwrap());

    let mut g = c.benchmark_group("per_request");
    for (name, addr) in [
        ("direct_to_upstream", up.addr),
        ("harness_module_without_callbacks", bare.listener_addrs()[0]),
        ("harness_noop_sdk_filter", filtered.listener_addrs()[0]),
    ] {
        let mut sender = rt.block_on(client(addr));
        g.bench_function(name, |b| b.iter(|| rt.block_on(one(&mut sender))));
    }
    g.finish();
    drop(bare);
    drop(filtered);
}

criterion_group!(benches, overhead);
criterion_main!(benches);
