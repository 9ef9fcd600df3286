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

/// A body of unknown length (so HTTP/1 sends it chunked, with its trailers), given chunk by
/// chunk: each `None` in `chunks` waits for `go` before the rest.
struct Paced {
    chunks: std::collections::VecDeque<Option<Bytes>>,
    go: Option<tokio::sync::oneshot::Receiver<()>>,
    trailers: Option<hyper::HeaderMap>,
}

impl Paced {
    fn new(
        chunks: &[Option<&'static str>],
        go: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> Self {
        Paced {
            chunks: chunks
                .iter()
                .map(|c| c.map(|c| Bytes::from_static(c.as_bytes())))
                .collect(),
            go,
            trailers: None,
        }
    }
    fn trailer(mut self, k: &'static str, v: &'static str) -> Self {
        self.trailers
            .get_or_insert_with(hyper::HeaderMap::new)
            .append(k, hyper::header::HeaderValue::from_static(v));
        self
    }
}

impl hyper::body::Body for Paced {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        loop {
            match self.chunks.front() {
                Some(Some(_)) => {
                    let c = self.chunks.pop_front().unwrap().unwrap();
                    return Poll::Ready(Some(Ok(hyper::body::Frame::data(c))));
                }
                Some(None) => match self.go.as_mut() {
                    Some(rx) => match std::pin::Pin::new(rx).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(_) => {
                            self.go = None;
                            self.chunks.pop_front();
                        }
                    },
                    None => {
                        self.chunks.pop_front();
                    }
                },
                None => {
                    return Poll::Ready(
                        self.trailers
                            .take()
                            .map(|t| Ok(hyper::body::Frame::trailers(t))),
                    )
                }
            }
        }
    }
}

use bytes::Bytes;
use http_body_util::BodyExt;
use std::future::Future;
use std::sync::{Arc, Mutex};

type SeenTrailers = Arc<Mutex<Vec<(String, Option<hyper::HeaderMap>)>>>;

/// An upstream that records each request's body and trailers and answers `chunks` with the
/// trailer `x-up: 1`; the answer's `None` waits for the next sender taken from `gates`.
async fn paced_upstream(
    chunks: &'static [Option<&'static str>],
    gates: Arc<Mutex<Vec<tokio::sync::oneshot::Receiver<()>>>>,
) -> (std::net::SocketAddr, SeenTrailers) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: SeenTrailers = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let (seen, gates) = (seen2.clone(), gates.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (seen, gates) = (seen.clone(), gates.clone());
                        async move {
                            let c = req.into_body().collect().await.unwrap();
                            let trailers = c.trailers().cloned();
                            let body = String::from_utf8_lossy(&c.to_bytes()).into_owned();
                            seen.lock().unwrap().push((body, trailers));
                            let go = gates.lock().unwrap().pop();
                            let body = Paced::new(chunks, go).trailer("x-up", "1");
                            // HTTP/1 sends the trailers its `trailer` header names (hyper's codec).
                            let mut r = hyper::Response::new(body);
                            r.headers_mut().insert(
                                "trailer",
                                hyper::header::HeaderValue::from_static("x-up, x-seen"),
                            );
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn h2_client(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<Paced> {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_go_both_ways_through_every_filter_in_chain_order() {
    let (up, seen) = paced_upstream(&[Some("answer")], Arc::default()).await;
    let h = probe()
        .root_id("first")
        .filter(host_harness::Plugin::wasm(guest("probe")).root_id("second"))
        .listener("127.0.0.1:0", up)
        .start()
        .await
        .unwrap();
    let mut client = h2_client(h.listener_addrs()[0]).await;
    let req = hyper::Request::builder()
        .method("POST")
        .uri("http://test.local/t")
        .header("x-probe", "trailers")
        .header("te", "trailers")
        // The upstream is HTTP/1: its codec sends the trailers this header names.
        .header("trailer", "x-client, x-seen")
        .body(Paced::new(&[Some("up"), Some("load")], None).trailer("x-client", "1"))
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let c = resp.into_body().collect().await.unwrap();
    let trailers = c
        .trailers()
        .cloned()
        .expect("response trailers reach the client");
    assert_eq!(c.to_bytes(), "answer");
    assert_eq!(trailers.get("x-up").unwrap(), "1");
    // Encoders run in reverse order: the second filter first.
    assert_eq!(trailers.get("x-seen").unwrap(), "second,first");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "upload");
    let up_trailers = seen[0]
        .1
        .clone()
        .expect("request trailers reach the upstream");
    assert_eq!(up_trailers.get("x-client").unwrap(), "1");
    assert_eq!(up_trailers.get("x-seen").unwrap(), "first,second");
    h.shutdown().await;
}

const PROTO: &str = include_str!("../guests/chain/proto.wat");

/// `guests/chain/proto.wat` tagged `tag`, in a VM of its own: it adds `x-protocol` (the
/// property `request.protocol`) and `x-order` to requests, and marks trailers with `x-seen`.
fn proto(tag: &str) -> host_harness::Plugin {
    host_harness::Plugin::wasm_bytes(PROTO)
        .config(tag)
        .vm_config(tag)
        .name(tag)
        .root_id(tag)
}

fn all<'a>(map: &'a hyper::HeaderMap, name: &str) -> Vec<&'a str> {
    map.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

/// The property `request.protocol` a filter reads, as the upstream records it. The same test on
/// Envoy: tests/tests/plugins.rs `envoy_names_the_request_protocol_to_a_filter`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_reads_the_request_protocol_as_envoy_names_it() {
    let up = upstream(|_| Reply::ok("ok")).await;
    let h = Harness::builder()
        .filter(proto("one"))
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let addr = h.listener_addrs()[0];
    assert_eq!(get(addr, "/echo", &[]).await.status, 200);
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.header("x-protocol"), Some("HTTP/1.1"));
    assert_eq!(seen.header("x-order"), Some("one"));
    let got = send_h2(addr, "GET", "/echo", &[], b"").await.unwrap();
    assert_eq!(got.status, 200);
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.header("x-protocol"), Some("HTTP/2"));
    assert_eq!(seen.header("x-order"), Some("one"));
    h.shutdown().await;
}

/// Two filters that read and add trailers: request trailers pass them in chain order, response
/// trailers in reverse; each sees what the one before it added (`x-prev`), and what they added
/// reaches the upstream and the client as separate fields. The same test on Envoy:
/// tests/tests/plugins.rs `envoy_passes_trailers_through_every_filter_both_ways`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_through_filters_that_read_and_add_them() {
    let (up, seen) = paced_upstream(&[Some("answer")], Arc::default()).await;
    let h = Harness::builder()
        .filter(proto("first"))
        .filter(proto("second"))
        .listener("127.0.0.1:0", up)
        .start()
        .await
        .unwrap();
    let mut client = h2_client(h.listener_addrs()[0]).await;
    let req = hyper::Request::builder()
        .method("POST")
        .uri("http://test.local/t")
        // The harness's upstream hop is HTTP/1, where hyper's codec sends only the request
        // trailers the `trailer` header names, and response trailers only to a request with
        // `te: trailers` (Envoy's hop in the Envoy test is h2c, which needs neither).
        .header("trailer", "x-client, x-seen, x-prev")
        .header("te", "trailers")
        .body(Paced::new(&[Some("up"), Some("load")], None).trailer("x-client", "1"))
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let c = resp.into_body().collect().await.unwrap();
    let trailers = c
        .trailers()
        .cloned()
        .expect("response trailers reach the client");
    assert_eq!(c.to_bytes(), "answer");
    assert_eq!(all(&trailers, "x-up"), ["1"]);
    // Encoders run in reverse order: the second filter first.
    assert_eq!(all(&trailers, "x-seen"), ["second", "first"]);
    assert_eq!(all(&trailers, "x-prev"), ["second"]);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "upload");
    let up_trailers = seen[0]
        .1
        .clone()
        .expect("request trailers reach the upstream");
    assert_eq!(all(&up_trailers, "x-client"), ["1"]);
    assert_eq!(all(&up_trailers, "x-seen"), ["first", "second"]);
    assert_eq!(all(&up_trailers, "x-prev"), ["first"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_streams_to_the_client_as_the_upstream_sends_it() {
    let (go_tx, go_rx) = tokio::sync::oneshot::channel();
    let gates = Arc::new(Mutex::new(vec![go_rx]));
    let (up, _) = paced_upstream(&[Some("first "), None, Some("rest")], gates).await;
    let h = probe()
        .filter(host_harness::Plugin::wasm(guest("probe")).root_id("second"))
        .listener("127.0.0.1:0", up)
        .start()
        .await
        .unwrap();
    let addr = h.listener_addrs()[0];
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri("/slow")
        .header("host", "test.local")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let mut body = resp.into_body();
    // The upstream holds the rest until told: the first chunk must arrive before that.
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), body.frame())
        .await
        .expect("the first chunk reaches the client while the upstream waits")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first ");
    go_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "rest");
    // Each filter saw the chunks as they came, the end only with the last.
    let logs: Vec<String> = h
        .logs()
        .into_iter()
        .map(|(_, l)| l)
        .filter(|l| l.contains("response body"))
        .collect();
    assert!(
        logs.iter()
            .filter(|l| l.contains("size=6 eos=false"))
            .count()
            == 2,
        "{logs:?}"
    );
    assert!(
        logs.iter().filter(|l| l.ends_with("eos=true")).count() == 2,
        "{logs:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_buffers_still_sees_the_whole_streamed_body() {
    let (go_tx, go_rx) = tokio::sync::oneshot::channel();
    let gates = Arc::new(Mutex::new(vec![go_rx]));
    let (up, _) = paced_upstream(&[Some("my secret "), None, Some("is secret")], gates).await;
    // The SDK's http_body example pauses each chunk until the end, then rewrites the whole.
    let h = Harness::builder()
        .plugin_wasm(guest("http_body"))
        .listener("127.0.0.1:0", up)
        .start()
        .await
        .unwrap();
    let addr = h.listener_addrs()[0];
    let got = tokio::spawn(async move { get(addr, "/", &[]).await });
    go_tx.send(()).unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(30), got)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.text(), "my ****** is ******");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_streams_to_the_upstream() {
    // The upstream answers once it has the whole body; the client sends the second half
    // only after the first reached the upstream's socket.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        let mut first_tx = Some(first_tx);
        loop {
            let n = s.read(&mut tmp).await.unwrap();
            assert!(n > 0, "the upstream got the whole request");
            buf.extend_from_slice(&tmp[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if text.contains("half one") {
                if let Some(tx) = first_tx.take() {
                    tx.send(text.clone()).unwrap();
                }
            }
            if text.contains("half two") {
                break;
            }
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
    });
    let h = probe().listener("127.0.0.1:0", up).start().await.unwrap();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel();
    let s = tokio::net::TcpStream::connect(h.listener_addrs()[0])
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method("POST")
        .uri("/up")
        .header("host", "test.local")
        .body(Paced::new(
            &[Some("half one;"), None, Some("half two")],
            Some(go_rx),
        ))
        .unwrap();
    let resp = tokio::spawn(async move { sender.send_request(req).await });
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), first_rx)
        .await
        .expect("the first half reaches the upstream before the client sends the rest")
        .unwrap();
    assert!(!first.contains("half two"));
    go_tx.send(()).unwrap();
    let resp = resp.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_h2_streams_on_one_connection_are_all_answered() {
    let up = upstream(|s| Reply::ok(&format!("answer to {}", s.path))).await;
    let h = probe()
        .workers(2)
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let client = h2_client(h.listener_addrs()[0]).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let req = hyper::Request::builder()
                .uri(format!("http://test.local/s{i}"))
                .body(Paced::new(&[], None))
                .unwrap();
            let resp = c.send_request(req).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (i, body)
        }));
    }
    for t in tasks {
        let (i, body) = t.await.unwrap();
        assert_eq!(body, format!("answer to /s{i}"));
    }
    assert_eq!(up.requests().len(), 20);
    h.shutdown().await;
}
