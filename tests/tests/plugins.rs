//! Several wasm plugins in the real Envoy 1.40, with the WAT guests of
//! `host-harness/guests/chain/` that `host-harness/tests/chain.rs` runs in the harness: the
//! filter chain's order both ways, a local reply going back through the filters before it,
//! shared data keyed by `vm_id`, and a singleton service sharing the store of its `vm_id`; and
//! with `proto.wat` (which `host-harness/tests/protocols.rs` runs), the property
//! `request.protocol` and trailers through a chain.
//! Needs `envoy` on the PATH (or `ENVOY_BIN`); no mixmode .wasm.
#![cfg(test)]

use mixmode_tests::app::{AppConfig, AppServer, SessionStore};
use mixmode_tests::client::Req;
use mixmode_tests::envoy::{Envoy, RunOptions};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The guest `name`, compiled to a .wasm file in `dir`.
fn guest(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    let wat = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../host-harness/guests/chain")
        .join(format!("{name}.wat"));
    let wasm = wat::parse_file(&wat).unwrap_or_else(|e| panic!("{}: {e}", wat.display()));
    let path = dir.path().join(format!("{name}.wasm"));
    std::fs::write(&path, wasm).unwrap();
    path
}

fn text(value: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.protobuf.StringValue", "value": value})
}

/// A `PluginConfig` whose plugin configuration is `config`, with this VM configuration.
/// Envoy runs plugins of the same vm_id, code and VM configuration in one VM, where these
/// guests' globals are shared; most tests give each plugin a VM configuration of its own so
/// that each gets its own VM even under a shared `vm_id`, as host-harness/tests/chain.rs does.
fn plugin(wasm: &Path, config: &str, vm_id: &str, vm_config: &str) -> Value {
    json!({
        "name": config,
        "root_id": config,
        "configuration": text(config),
        "vm_config": {
            "vm_id": vm_id,
            "runtime": "envoy.wasm.runtime.v8",
            "configuration": text(vm_config),
            "code": {"local": {"filename": wasm}},
        },
    })
}

fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        },
    })
}

fn listener(name: &str, routes: Value, mut http_filters: Vec<Value>) -> Value {
    http_filters.push(router());
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{
                    "name": name, "domains": ["*"], "routes": routes,
                }]},
                "http_filters": http_filters,
            },
        }]}],
    })
}

/// Envoy with the `filters` (`filter_guest`.wat, (configuration, vm_id)) in this order in front
/// of `app`, and the `services` (ticker.wat) as singleton bootstrap extensions; each plugin in
/// a VM of its own unless `one_vm_per_vm_id`.
async fn envoy(
    dir: &tempfile::TempDir,
    filter_guest: &str,
    filters: &[(&str, &str)],
    services: &[(&str, &str)],
    app: SocketAddr,
    one_vm_per_vm_id: bool,
) -> Envoy {
    let config = envoy_config(dir, filter_guest, filters, services, app, one_vm_per_vm_id);
    run(&config).await
}

async fn run(config: &Value) -> Envoy {
    Envoy::run_yaml(&config.to_string(), &RunOptions::new(1))
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// The configuration [`envoy`] runs. Its listener's `codec_type` is the default, AUTO: HTTP/1.1
/// and h2c (prior knowledge) on one port; its cluster `app` speaks HTTP/1.1.
fn envoy_config(
    dir: &tempfile::TempDir,
    filter_guest: &str,
    filters: &[(&str, &str)],
    services: &[(&str, &str)],
    app: SocketAddr,
    one_vm_per_vm_id: bool,
) -> Value {
    let vm_config = |config: &str, vm_id: &str| {
        if one_vm_per_vm_id {
            vm_id.to_string()
        } else {
            config.to_string()
        }
    };
    let tag = guest(dir, filter_guest);
    let ticker = guest(dir, "ticker");
    let http_filters = filters
        .iter()
        .map(|(config, vm_id)| {
            json!({
                "name": config,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": plugin(&tag, config, vm_id, &vm_config(config, vm_id)),
                },
            })
        })
        .collect();
    let bootstrap_extensions: Vec<Value> = services
        .iter()
        .map(|(config, vm_id)| {
            json!({
                "name": "envoy.bootstrap.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.wasm.v3.WasmService",
                    "singleton": true,
                    "config": plugin(&ticker, config, vm_id, &vm_config(config, vm_id)),
                },
            })
        })
        .collect();
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "bootstrap_extensions": bootstrap_extensions,
        "static_resources": {
            "listeners": [
                listener(
                    "public",
                    json!([{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]),
                    http_filters,
                ),
                // Envoy::run_yaml waits for a listener of this name too.
                listener(
                    "heartbeat",
                    json!([{"match": {"prefix": "/"}, "direct_response": {"status": 404}}]),
                    vec![],
                ),
            ],
            "clusters": [{
                "name": "app",
                "connect_timeout": "1s",
                "type": "STATIC",
                "load_assignment": {"cluster_name": "app", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {
                        "address": app.ip().to_string(), "port_value": app.port(),
                    }}},
                }]}]},
            }],
        },
    })
}

async fn app() -> AppServer {
    AppServer::start(AppConfig::new("v1", "1", &SessionStore::new()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_runs_requests_through_the_filters_in_order_responses_in_reverse() {
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    let envoy = envoy(
        &dir,
        "tag",
        &[("one", "v1"), ("two", "v2"), ("three", "v3")],
        &[],
        app.addr(),
        false,
    )
    .await;
    let resp = Req::get(format!("{}/echo", envoy.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header_all("x-order"), ["three", "two", "one"]);
    // Three vm_ids, three stores: each filter reads back its own write.
    assert_eq!(resp.header_all("x-saw"), ["three", "two", "one"]);
    let seen = app.requests().pop().unwrap();
    let order: Vec<String> = seen
        .headers
        .iter()
        .filter(|(k, _)| k == "x-order")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(order, ["one", "two", "three"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sends_a_local_reply_back_through_the_filters_before_it() {
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    let envoy = envoy(
        &dir,
        "tag",
        &[("first", "v"), ("!stop", "v"), ("never", "v")],
        &[],
        app.addr(),
        false,
    )
    .await;
    let resp = Req::get(format!("{}/echo", envoy.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(resp.text(), "!stop");
    assert_eq!(resp.header_all("x-order"), ["!stop", "first"]);
    assert!(app.requests().is_empty());
}

/// A local reply from an encoder goes straight to the client (`sendDirectLocalReply`): the
/// filters whose encoders were still to run see nothing of it, and the response headers the
/// filter after it added are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sends_a_response_phase_local_reply_past_the_filters_still_to_run() {
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    let envoy = envoy(
        &dir,
        "tag",
        &[("first", "v"), ("?late", "v"), ("last", "v")],
        &[],
        app.addr(),
        false,
    )
    .await;
    let resp = Req::get(format!("{}/echo", envoy.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 418, "{}", resp.text());
    assert_eq!(resp.text(), "?late");
    assert_eq!(resp.header_all("x-order"), Vec::<String>::new());
    assert_eq!(app.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_shares_a_store_per_vm_id_with_filters_and_a_service() {
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    let envoy = envoy(
        &dir,
        "tag",
        &[("a", "shared"), ("b", "shared"), ("other", "elsewhere")],
        &[("from the service", "shared")],
        app.addr(),
        false,
    )
    .await;
    let url = format!("{}/echo", envoy.public_url());
    // Until the service has ticked once; the entry stays, so the next request sees it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = Req::get(&url).send().await.unwrap();
        if !resp.header_all("x-tick").is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the service never ticked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = Req::get(&url).send().await.unwrap();
    assert_eq!(resp.status, 200);
    // The response passes `other` (its own store), then b and a, which share theirs (b wrote
    // last) with the service.
    assert_eq!(resp.header_all("x-saw"), ["other", "b", "b"]);
    assert_eq!(
        resp.header_all("x-tick"),
        ["from the service", "from the service"]
    );
}

/// Plugins of one vm_id, code and VM configuration run in one VM (each its own root context):
/// the guest's globals are the plugins' common memory, so here the second filter's
/// `on_configure` overwrote the tag the first one kept. The harness does the same
/// (host-harness `chain::plugins_of_one_vm_key_share_one_vm`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_runs_plugins_of_one_vm_id_code_and_vm_configuration_in_one_vm() {
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    let envoy = envoy(
        &dir,
        "tag",
        &[("a", "same"), ("b", "same")],
        &[],
        app.addr(),
        true,
    )
    .await;
    let resp = Req::get(format!("{}/echo", envoy.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header_all("x-order"), ["b", "b"]);
}

/// Queues are registered under the registrant's vm_id: a plugin of another vm_id does not find
/// it in its own, one of the same vm_id (in a VM of its own) does and fills it, and the
/// registrant is told (host-harness `chain::queues_are_found_in_their_vm_id_only`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_finds_a_queue_in_its_vm_id_only() {
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    let envoy = envoy(
        &dir,
        "queue",
        &[("ra", "a"), ("ub", "b"), ("ua", "a")],
        &[],
        app.addr(),
        false,
    )
    .await;
    let resp = Req::get(format!("{}/echo", envoy.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = app.requests().pop().unwrap();
    let resolved: Vec<String> = seen
        .headers
        .iter()
        .filter(|(k, _)| k == "x-resolve")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(resolved, ["0", "1", "0"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = envoy.logs();
        let dequeued: Vec<&str> = logs.lines().filter(|l| l.ends_with(": dequeued")).collect();
        if dequeued.len() == 2 {
            assert!(
                dequeued.iter().all(|l| l.contains("wasm log ra ")),
                "{dequeued:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "dequeued: {dequeued:?}\n{logs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The harness's `protocols::a_response_streams_to_the_client_as_the_upstream_sends_it` on
/// Envoy: with a wasm filter that lets body chunks through, the client reads the upstream's first
/// chunk while the upstream still holds the rest (it sends the rest only once the client has the
/// first, so the test waits on the order of events, never on a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_streams_a_response_through_a_filter_that_lets_chunks_pass() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let (seen_first, first_seen) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request ended before its head");
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .await
            .unwrap();
        first_seen.await.unwrap();
        s.write_all(b"4\r\nrest\r\n0\r\n\r\n").await.unwrap();
        s.flush().await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let envoy = envoy(&dir, "tag", &[("one", "v1")], &[], upstream_addr, false).await;
    let front = envoy.public_url();
    let front = front.trim_start_matches("http://");
    let mut c = tokio::net::TcpStream::connect(front).await.unwrap();
    c.write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let until = |got: &Vec<u8>, what: &[u8]| got.windows(what.len()).any(|w| w == what);
    let read_until = async |c: &mut tokio::net::TcpStream, got: &mut Vec<u8>, what: &[u8]| {
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(30);
        while !until(got, what) {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, c.read(&mut buf))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {:?} within 30 s; got {:?}",
                        String::from_utf8_lossy(what),
                        String::from_utf8_lossy(got)
                    )
                })
                .unwrap();
            assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(got));
            got.extend_from_slice(&buf[..n]);
        }
    };
    read_until(&mut c, &mut got, b"first").await;
    assert!(!until(&got, b"rest"), "the rest came before it was sent");
    seen_first.send(()).unwrap();
    read_until(&mut c, &mut got, b"rest").await;
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    // The filter saw the response (its tag), so the chunks went through it.
    assert!(text.contains("x-order: one"), "{text}");
    server.await.unwrap();
}

/// The harness's HTTP/1.0 rule (`protocols::h2c_and_http1_on_one_listener_with_envoys_protocol_names`)
/// on Envoy: with `accept_http_10` at its default (off), an HTTP/1.0 request gets 426 from the
/// codec and no filter runs (the tag filter would have added `x-order` to the response).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_answers_http_1_0_with_426_before_any_filter() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    let envoy = envoy(&dir, "tag", &[("one", "v1")], &[], app.addr(), false).await;
    let front = envoy.public_url();
    let mut c = tokio::net::TcpStream::connect(front.trim_start_matches("http://"))
        .await
        .unwrap();
    c.write_all(b"GET /echo HTTP/1.0\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut got))
        .await
        .expect("Envoy closes an HTTP/1.0 connection after its answer")
        .unwrap();
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(text.starts_with("http/1.1 426"), "{text}");
    assert!(!text.contains("x-order"), "a filter ran: {text}");
    assert!(app.requests().is_empty(), "the app was reached");
}

/// The property `request.protocol` as Envoy gives it to a filter, for an HTTP/1.1 and an h2c
/// request on one listener; the filter copies it into `x-protocol`, which the app records. The
/// harness: host-harness `protocols::a_filter_reads_the_request_protocol_as_envoy_names_it`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_names_the_request_protocol_to_a_filter() {
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    let envoy = envoy(&dir, "proto", &[("one", "v1")], &[], app.addr(), false).await;
    let http1 = envoy.public_url();
    let h2c = http1.replacen("http://", "h2c://", 1);
    for (base, protocol) in [(http1, "HTTP/1.1"), (h2c, "HTTP/2")] {
        let resp = Req::get(format!("{base}/echo")).send().await.unwrap();
        assert_eq!(resp.status, 200, "{base}: {}", resp.text());
        let seen = app.requests().pop().unwrap();
        assert_eq!(
            seen.header("x-protocol").as_deref(),
            Some(protocol),
            "{base}"
        );
        assert_eq!(seen.header("x-order").as_deref(), Some("one"), "{base}");
    }
}

/// What an upstream got: the body and every trailer (name, value) in order.
type Received = Arc<Mutex<Vec<(Bytes, Vec<(String, String)>)>>>;

/// An h2c (prior knowledge) upstream: records each request's body and trailers, and answers
/// `answer` with the trailer `x-up: 1`.
async fn h2c_upstream() -> (SocketAddr, Received) {
    use http_body_util::{BodyExt, Full};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let received: Received = Arc::default();
    let record = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let record = record.clone();
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let record = record.clone();
                async move {
                    let c = req.into_body().collect().await?;
                    let trailers = c
                        .trailers()
                        .map(|t| {
                            t.iter()
                                .map(|(k, v)| {
                                    let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                                    (k.to_string(), v)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    record.lock().unwrap().push((c.to_bytes(), trailers));
                    let mut up = hyper::HeaderMap::new();
                    up.insert("x-up", hyper::header::HeaderValue::from_static("1"));
                    let body = Full::new(Bytes::from_static(b"answer"))
                        .with_trailers(async move { Some(Ok(up)) });
                    Ok::<_, hyper::Error>(hyper::Response::new(body))
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    (addr, received)
}

fn values(pairs: &[(String, String)], name: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

/// Trailers through two filters that read and add them (proto.wat, "first" then "second"):
/// request trailers pass them in `http_filters` order, response trailers in reverse; each filter
/// reads what the one before it added (`x-prev`); what they add reaches the upstream and the
/// client as separate fields. Client and upstream speak h2c (Envoy's HTTP/1 codec drops trailers
/// unless `enable_trailers`). The harness: host-harness
/// `protocols::trailers_pass_through_filters_that_read_and_add_them`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_passes_trailers_through_every_filter_both_ways() {
    let (up, received) = h2c_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = envoy_config(
        &dir,
        "proto",
        &[("first", "v1"), ("second", "v2")],
        &[],
        up,
        false,
    );
    config["static_resources"]["clusters"][0]["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        },
    });
    let envoy = run(&config).await;
    let url = envoy.public_url().replacen("http://", "h2c://", 1);
    let resp = Req::post(format!("{url}/t"), "")
        .chunked(
            vec![Bytes::from_static(b"up"), Bytes::from_static(b"load")],
            &[("x-client", "1")],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "answer");
    assert_eq!(resp.trailer_all("x-up"), ["1"], "{:?}", resp.trailers);
    // Encoders run in reverse order: the second filter first.
    assert_eq!(resp.trailer_all("x-seen"), ["second", "first"]);
    assert_eq!(resp.trailer_all("x-prev"), ["second"]);

    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (body, trailers) = &received[0];
    assert_eq!(body, "upload");
    assert_eq!(values(trailers, "x-client"), ["1"], "{trailers:?}");
    assert_eq!(values(trailers, "x-seen"), ["first", "second"]);
    assert_eq!(values(trailers, "x-prev"), ["first"]);
}
