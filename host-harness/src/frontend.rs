//! The HTTP front end: one hyper server per listener (HTTP/1.1 and h2c). Each request runs
//! through the filter chain on the worker its connection was given to (Envoy assigns
//! connections to workers): the filters in order, then the listener's upstream; the answer runs back through
//! the filters in reverse order, as Envoy runs decoder and encoder filters.
//!
//! Each filter of each direction is a task fed by the one before it (`stages`): bodies
//! stream both ways unless a filter holds them, as Envoy streams.

use crate::body::OutBody;
use crate::calls::{connect_failure_reply, envoy_reply, Endpoint, Forwarded, UpstreamBody};
use crate::host::StreamProps;
use crate::pool::{encode_host, Pick, UpstreamPool};
pub(crate) use crate::stages::FilterSlot;
use crate::stages::{
    chain_headers, request_stage, response_stage, store, Encoding, FilterStream, Interrupt, Source,
    StageInput, StageResult,
};
use crate::types::Headers;
use crate::worker::LocalReply;
use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc::unbounded_channel;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub(crate) struct FrontOptions {
    /// Per filter of the chain, in order.
    pub allow_on_headers_stop_iteration: Vec<bool>,
    pub route_timeout: Duration,
    pub stream_idle_timeout: Duration,
}

pub(crate) struct ListenerCtx {
    /// `workers[w][f]`: filter `f`'s VM instance on worker `w`, and its slot in that VM.
    pub workers: Arc<Vec<Vec<FilterSlot>>>,
    pub next_worker: AtomicUsize,
    /// `None`: no route (Envoy's 404).
    pub upstream: Option<Arc<UpstreamPool>>,
    pub cluster_name: String,
    /// See [`crate::ListenerSpec::response_headers_removed`].
    pub response_headers_removed: Vec<String>,
    /// See [`crate::ListenerSpec::connect_failure_retries`].
    pub connect_failure_retries: u32,
    pub opts: Arc<FrontOptions>,
    pub conn_ids: Arc<AtomicU64>,
}

struct Conn {
    /// The filter chain on this connection's worker, in order: VM instance and slot.
    chain: Vec<FilterSlot>,
    listener: Arc<ListenerCtx>,
    source: SocketAddr,
    destination: SocketAddr,
    id: u64,
}

/// The stream was reset (by the filter, the client or the upstream): hyper drops the
/// connection without an answer.
#[derive(Debug)]
pub(crate) struct StreamReset;

impl std::fmt::Display for StreamReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stream reset")
    }
}

impl std::error::Error for StreamReset {}

pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<ListenerCtx>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, source)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let destination = stream.local_addr().unwrap_or(source);
        let n = ctx.workers.len().max(1);
        let idx = ctx.next_worker.fetch_add(1, Ordering::Relaxed) % n;
        let Some(chain) = ctx.workers.get(idx).cloned() else {
            continue;
        };
        let conn = Arc::new(Conn {
            chain,
            listener: ctx.clone(),
            source,
            destination,
            id: ctx.conn_ids.fetch_add(1, Ordering::Relaxed) + 1,
        });
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, conn.clone()));
            // HTTP/1.x, or h2c with prior knowledge (the connection preface tells them apart),
            // as an Envoy listener with `codec_type: AUTO` serves both.
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let served = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = served => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

/// `request.protocol` as Envoy spells it (`Http::Utility::getProtocolString`).
fn protocol_name(version: hyper::Version) -> &'static str {
    match version {
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_2 => "HTTP/2",
        hyper::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn request_id() -> String {
    let s = std::collections::hash_map::RandomState::new();
    let mut a = s.build_hasher();
    a.write_u64(1);
    let mut b = s.build_hasher();
    b.write_u64(2);
    let (a, b) = (a.finish(), b.finish());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// The request headers as Envoy's HTTP/1 codec and connection manager hand them to filters.
fn request_headers(parts: &hyper::http::request::Parts) -> Headers {
    let mut h: Headers = Vec::with_capacity(parts.headers.len() + 6);
    let authority = parts
        .headers
        .get(hyper::header::HOST)
        .map(|v| v.as_bytes().to_vec())
        .or_else(|| {
            parts
                .uri
                .authority()
                .map(|a| a.as_str().as_bytes().to_vec())
        })
        .unwrap_or_default();
    h.push((b":authority".to_vec(), authority));
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    h.push((b":path".to_vec(), path.as_bytes().to_vec()));
    h.push((
        b":method".to_vec(),
        parts.method.as_str().as_bytes().to_vec(),
    ));
    h.push((b":scheme".to_vec(), b"http".to_vec()));
    for (k, v) in &parts.headers {
        if k == hyper::header::HOST {
            continue;
        }
        h.push((k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()));
    }
    if !parts.headers.contains_key("x-forwarded-proto") {
        h.push((b"x-forwarded-proto".to_vec(), b"http".to_vec()));
    }
    if !parts.headers.contains_key("x-request-id") {
        h.push((b"x-request-id".to_vec(), request_id().into_bytes()));
    }
    h
}

const HOP_BY_HOP: [&[u8]; 5] = [
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"proxy-connection",
    b"upgrade",
];

/// The headers of a local reply as Envoy builds them: the filter's headers (duplicates
/// kept), its `content-length` ignored and recomputed, `content-type: text/plain` when a body
/// has none.
fn local_reply_headers(lr: &LocalReply) -> Headers {
    let mut h: Headers = vec![(b":status".to_vec(), lr.status.to_string().into_bytes())];
    let mut has_type = false;
    for (k, v) in &lr.headers {
        let k = k.to_ascii_lowercase();
        if k == b"content-length" || k.starts_with(b":") || HOP_BY_HOP.contains(&k.as_slice()) {
            continue;
        }
        has_type |= k == b"content-type";
        h.push((k, v.clone()));
    }
    h.push((
        b"content-length".to_vec(),
        lr.body.len().to_string().into_bytes(),
    ));
    if !lr.body.is_empty() && !has_type {
        h.push((b"content-type".to_vec(), b"text/plain".to_vec()));
    }
    h
}

/// The client's response: the codec drops hop-by-hop headers. A whole body gets its
/// `content-length` computed; a streamed one keeps the `content-length` the filters left
/// (Envoy's codec sends what the headers say) or goes chunked over HTTP/1 without one.
fn client_response(headers: &Headers, body: ClientBody) -> Response<ClientBody> {
    let keep_length = body.size_hint().exact().is_none();
    let status = crate::abi::headers::get_value(headers, b":status")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u16>().ok())
        .unwrap_or(200);
    let mut resp = Response::new(body);
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let map = resp.headers_mut();
    for (k, v) in headers {
        if k.starts_with(b":")
            || (k == b"content-length" && !keep_length)
            || HOP_BY_HOP.contains(&k.as_slice())
        {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(k),
            hyper::header::HeaderValue::from_bytes(v),
        ) {
            map.append(name, value);
        }
    }
    resp
}

/// Envoy's body when a cluster has no member to send to.
pub(crate) const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";

/// What Envoy answers when the filter's VM has crashed: 503 with an empty body.
fn vm_failed() -> Response<ClientBody> {
    let mut r = Response::new(ClientBody::full(Bytes::new()));
    *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
    r
}

fn envoy_response(status: u16, body: &str) -> Response<ClientBody> {
    let (h, b) = envoy_reply(status, body);
    client_response(&h, ClientBody::full(b))
}

/// The body the client gets; it holds the stages still producing it, which are aborted when
/// the client goes away (their filters then get `on_done`/`on_log` as the stream is reset).
type ClientBody = OutBody<JoinSet<StageResult>>;

/// The router: the request to the host picked, and on a connect failure to other hosts as the
/// listener's retry policy allows, all within the route timeout. Returns the host that gave
/// the final answer.
async fn route(
    listener: &ListenerCtx,
    pool: &UpstreamPool,
    pick: &Pick,
    headers: &Headers,
    mut body: Option<UpstreamBody>,
) -> (Arc<Endpoint>, Forwarded) {
    let timeout = listener.opts.route_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut endpoint = pick.endpoint.clone();
    let mut tried = vec![endpoint.addr];
    let mut forwarded = endpoint.forward(headers, &mut body, timeout).await;
    for _ in 0..listener.connect_failure_retries {
        if !matches!(forwarded, Forwarded::ConnectFailure) {
            break;
        }
        let Some(next) = pool.pick_retry(&tried) else {
            break;
        };
        endpoint = next;
        tried.push(endpoint.addr);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        forwarded = endpoint.forward(headers, &mut body, left).await;
    }
    (endpoint, forwarded)
}

async fn handle(
    req: Request<Incoming>,
    conn: Arc<Conn>,
) -> Result<Response<ClientBody>, StreamReset> {
    if req.version() == hyper::Version::HTTP_10 {
        // Envoy's HTTP/1 codec refuses HTTP/1.0 unless the listener sets `accept_http_10`
        // (off by default): 426 with no body, before any filter runs.
        let mut r = Response::new(ClientBody::full(Bytes::new()));
        *r.status_mut() = hyper::StatusCode::UPGRADE_REQUIRED;
        return Ok(r);
    }
    let listener = conn.listener.clone();
    let opts = listener.opts.clone();
    let idle = opts.stream_idle_timeout;
    let props = StreamProps {
        source: Some(conn.source),
        destination: Some(conn.destination),
        cluster_name: listener.cluster_name.clone(),
        connection_id: conn.id,
        upstream_address: None,
        response_code: None,
        protocol: protocol_name(req.version()),
    };
    let (parts, body) = req.into_parts();
    let request_eos = body.is_end_stream();
    let mut input = StageInput::Direct {
        headers: request_headers(&parts),
        eos: request_eos,
        source: Source::Incoming(body),
    };
    // Decoder filters in order, each a task fed by the one before: a pause holds the rest of
    // the chain, data goes on as each lets it through, a local reply ends the chain.
    let n = conn.chain.len();
    let mut tasks = JoinSet::new();
    for (i, slot) in conn.chain.iter().enumerate() {
        let allow = opts
            .allow_on_headers_stop_iteration
            .get(i)
            .copied()
            .unwrap_or(false);
        let (tx, rx) = unbounded_channel();
        tasks.spawn(request_stage(
            i,
            slot.clone(),
            props.clone(),
            allow,
            idle,
            input,
            tx,
        ));
        input = StageInput::Chained(rx);
    }
    let mut filters: Vec<Option<FilterStream>> = (0..n).map(|_| None).collect();
    let mut request_reply: Option<(usize, LocalReply)> = None;
    let upstream_request = match chain_headers(input, &mut tasks, &mut filters).await {
        Ok(r) => r,
        Err((i, Interrupt::LocalReply(lr))) => {
            request_reply = Some((i, lr));
            None
        }
        Err((_, Interrupt::Failed)) => return Ok(vm_failed()),
        Err((_, Interrupt::IdleTimeout)) => return Ok(envoy_response(408, "stream timeout")),
        Err((_, Interrupt::Reset)) => return Err(StreamReset),
    };

    let mut release = None;
    let mut upstream = None;
    let (resp_headers, resp_source, resp_eos) = match (request_reply.as_ref(), upstream_request) {
        (Some((_, lr)), _) => {
            // A reply from the request phase runs through the encoder filters that saw the
            // request, from the one that sent it back to the first (Envoy sends it through the
            // encoder chain); the sender's own second reply is ignored.
            let h = local_reply_headers(lr);
            let eos = lr.body.is_empty();
            (h, Source::Fixed(Some(Bytes::from(lr.body.clone()))), eos)
        }
        // No stage let the headers through and none said why (the client went away).
        (None, None) => return Err(StreamReset),
        (None, Some((mut headers, eos, source))) => match &listener.upstream {
            // No route: Envoy's router answers 404 with no body.
            None => (
                vec![
                    (b":status".to_vec(), b"404".to_vec()),
                    (b"content-length".to_vec(), b"0".to_vec()),
                ],
                Source::Fixed(None),
                true,
            ),
            Some(pool) => match pool.pick(&headers) {
                None => {
                    let (h, b) = envoy_reply(503, NO_HEALTHY_UPSTREAM);
                    (h, Source::Fixed(Some(Bytes::from(b))), false)
                }
                Some(pick) => {
                    let body = match source {
                        _ if eos => UpstreamBody::full(Bytes::new()),
                        Source::Incoming(b) => UpstreamBody::incoming(b),
                        Source::Chained(rx) => UpstreamBody::channel(rx, None),
                        Source::Fixed(b) => UpstreamBody::full(b.unwrap_or_default()),
                    };
                    headers.push((
                        b"x-envoy-expected-rq-timeout-ms".to_vec(),
                        opts.route_timeout.as_millis().to_string().into_bytes(),
                    ));
                    let (endpoint, forwarded) =
                        route(&listener, pool, &pick, &headers, Some(body)).await;
                    let addr = endpoint.addr;
                    upstream = Some(addr.to_string());
                    let (mut headers, source, eos) = match forwarded {
                        Forwarded::Upstream {
                            mut headers,
                            body,
                            sender,
                        } => {
                            // The stateful session filter (after the wasm filters) names the
                            // host that answered when the request's header did not.
                            if let Some(name) = pool.session_header() {
                                if pick.requested != Some(addr) {
                                    headers
                                        .retain(|(k, _)| !k.eq_ignore_ascii_case(name.as_bytes()));
                                    headers.push((
                                        name.as_bytes().to_vec(),
                                        encode_host(addr).into_bytes(),
                                    ));
                                }
                            }
                            release = Some((sender, endpoint.clone()));
                            let eos = body.is_end_stream();
                            (headers, Source::Incoming(body), eos)
                        }
                        Forwarded::Envoy { headers, body } => {
                            let eos = body.is_empty();
                            (headers, Source::Fixed(Some(Bytes::from(body))), eos)
                        }
                        Forwarded::ConnectFailure => {
                            let (headers, body) = connect_failure_reply();
                            (headers, Source::Fixed(Some(Bytes::from(body))), false)
                        }
                    };
                    // A header_mutation after the wasm filters: they never see these.
                    for name in &listener.response_headers_removed {
                        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name.as_bytes()));
                    }
                    (headers, source, eos)
                }
            },
        },
    };
    // The decoder filters are over before their encoders run (their request bodies have
    // gone upstream by the time it answered).
    while let Some(joined) = tasks.join_next().await {
        match store(joined, &mut filters) {
            Ok(()) => {}
            Err((_, Interrupt::LocalReply(lr))) if request_reply.is_none() => {
                let h = local_reply_headers(&lr);
                return Ok(client_response(&h, ClientBody::full(lr.body)));
            }
            Err((_, Interrupt::LocalReply(_))) => {}
            Err((_, Interrupt::Failed)) => return Ok(vm_failed()),
            Err((_, Interrupt::IdleTimeout)) => return Ok(envoy_response(408, "stream timeout")),
            Err((_, Interrupt::Reset)) => return Err(StreamReset),
        }
    }

    // Encoder filters in reverse order, each a task fed by the one after it. A local reply
    // from the response phase goes straight to the client, past the filters before it
    // (Envoy's `sendDirectLocalReply`), as long as nothing has reached the client yet.
    let replied_by = request_reply.as_ref().map(|(i, _)| *i);
    let mut input = StageInput::Direct {
        headers: resp_headers,
        eos: resp_eos,
        source: resp_source,
    };
    let mut rtasks = JoinSet::new();
    let mut release = release;
    let encoding = Arc::new(Encoding { idle, upstream });
    for (i, filter) in filters.iter_mut().enumerate().rev() {
        let Some(filter) = filter.take() else {
            continue;
        };
        let (tx, rx) = unbounded_channel();
        rtasks.spawn(response_stage(
            i,
            filter,
            replied_by != Some(i),
            encoding.clone(),
            input,
            tx,
            release.take(),
        ));
        input = StageInput::Chained(rx);
    }
    let mut closed: Vec<Option<FilterStream>> = (0..n).map(|_| None).collect();
    match chain_headers(input, &mut rtasks, &mut closed).await {
        Ok(Some((headers, eos, source))) => {
            let body = match source {
                _ if eos => ClientBody::full(Bytes::new()),
                Source::Incoming(b) => ClientBody::incoming(b),
                Source::Fixed(b) => ClientBody::full(b.unwrap_or_default()),
                Source::Chained(rx) => ClientBody::channel(rx, Some(rtasks)),
            };
            Ok(client_response(&headers, body))
        }
        Ok(None) => Err(StreamReset),
        Err((_, Interrupt::LocalReply(lr))) => {
            let h = local_reply_headers(&lr);
            Ok(client_response(&h, ClientBody::full(lr.body)))
        }
        Err((_, Interrupt::Failed)) => Ok(vm_failed()),
        Err((_, Interrupt::IdleTimeout)) | Err((_, Interrupt::Reset)) => Err(StreamReset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn local_reply_headers_follow_envoy() {
        let lr = LocalReply {
            status: 409,
            details: String::new(),
            headers: h(&[
                ("set-cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("content-length", "999"),
                ("connection", "close"),
            ]),
            body: b"hello".to_vec(),
        };
        let out = local_reply_headers(&lr);
        assert_eq!(
            out,
            h(&[
                (":status", "409"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("content-length", "5"),
                ("content-type", "text/plain"),
            ])
        );
        let resp = client_response(&out, ClientBody::full(lr.body.clone()));
        assert_eq!(resp.status(), 409);
        assert_eq!(resp.headers().get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn request_ids_differ() {
        assert_ne!(request_id(), request_id());
        assert_eq!(request_id().len(), 36);
    }
}
