//! The HTTP front end: one hyper server per listener (HTTP/1.1 and h2c). Each request runs
//! through the filter chain on the worker its connection was given to (Envoy assigns connections to
//! workers): the filters in order, then the listener's upstream; the answer runs back through
//! the filters in reverse order, as Envoy runs decoder and encoder filters.
//!
//! Each filter of each direction is a task fed by the one before it: data goes on as the
//! filters let it through, so bodies stream both ways unless a filter holds them (Envoy
//! streams); what a filter sees, chunk by chunk and pause by pause, follows Envoy (§3a).

use crate::body::{from_header_map, Msg, OutBody};
use crate::calls::{connect_failure_reply, envoy_reply, Endpoint, Forwarded, UpstreamBody};
use crate::host::StreamProps;
use crate::pool::{encode_host, Pick, UpstreamPool};
use crate::types::{Action, Headers};
use crate::worker::{LocalReply, OpReply, StreamEvent, StreamOp, WorkerMsg};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

/// Where one filter of the chain runs on a worker: its VM instance and its slot (root context)
/// in that VM.
pub(crate) type FilterSlot = (Sender<WorkerMsg>, usize);

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

/// Sends `Close` when the request is over, however it ended (hyper drops the future when the
/// client goes away): the filter always gets `on_done`/`on_log`/`on_delete`.
struct CloseGuard {
    worker: Sender<WorkerMsg>,
    ctx: u32,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        let _ = self.worker.send(WorkerMsg::Close { ctx: self.ctx });
    }
}

#[derive(Debug)]
enum Interrupt {
    LocalReply(LocalReply),
    Reset,
    Failed,
    IdleTimeout,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

enum Frame {
    Data(Bytes, bool),
    Trailers(Headers),
    End,
    Error,
}

enum Source {
    Incoming(Incoming),
    Fixed(Option<Bytes>),
    /// What the filter before let through.
    Chained(UnboundedReceiver<Msg>),
}

impl Source {
    async fn next(&mut self) -> Frame {
        match self {
            Source::Incoming(body) => loop {
                match body.frame().await {
                    None => return Frame::End,
                    Some(Err(_)) => return Frame::Error,
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => return Frame::Data(data, body.is_end_stream()),
                        Err(frame) => {
                            if let Ok(t) = frame.into_trailers() {
                                return Frame::Trailers(from_header_map(&t));
                            }
                        }
                    },
                }
            },
            Source::Fixed(data) => match data.take() {
                Some(d) => Frame::Data(d, true),
                None => Frame::End,
            },
            Source::Chained(rx) => loop {
                match rx.recv().await {
                    Some(Msg::Data(d, end)) => return Frame::Data(d, end),
                    Some(Msg::Trailers(t)) => return Frame::Trailers(t),
                    Some(Msg::End) => return Frame::End,
                    Some(Msg::Headers(..)) => {}
                    // The stage before went away without an end: reset.
                    None => return Frame::Error,
                }
            },
        }
    }
}

struct PhaseIo<'a> {
    worker: &'a Sender<WorkerMsg>,
    ctx: u32,
    events: &'a mut UnboundedReceiver<StreamEvent>,
    accept_local_reply: bool,
    idle: Duration,
}

/// One direction of a stream as it arrives.
struct PhaseInput {
    kind: Kind,
    headers: Headers,
    source: Source,
    headers_eos: bool,
    /// `allow_on_headers_stop_iteration` (request direction only).
    allow_body_while_held: bool,
    upstream: Option<String>,
}

impl PhaseIo<'_> {
    async fn op(&self, op: StreamOp) -> Result<OpReply, Interrupt> {
        let (tx, rx) = oneshot::channel();
        self.worker
            .send(WorkerMsg::Op {
                ctx: self.ctx,
                op,
                reply: tx,
            })
            .map_err(|_| Interrupt::Failed)?;
        let r = rx.await.map_err(|_| Interrupt::Failed)?;
        if r.failed {
            return Err(Interrupt::Failed);
        }
        Ok(r)
    }

    fn on_event(&self, kind: Kind, ev: StreamEvent, resume: &mut bool) -> Result<(), Interrupt> {
        match ev {
            StreamEvent::ContinueRequest if kind == Kind::Request => *resume = true,
            StreamEvent::ContinueResponse if kind == Kind::Response => *resume = true,
            StreamEvent::ContinueRequest | StreamEvent::ContinueResponse => {}
            StreamEvent::LocalReply(lr) if self.accept_local_reply => {
                return Err(Interrupt::LocalReply(lr))
            }
            StreamEvent::LocalReply(_) => {}
            StreamEvent::Reset => return Err(Interrupt::Reset),
        }
        Ok(())
    }

    fn drain_events(&mut self, kind: Kind, resume: &mut bool) -> Result<(), Interrupt> {
        while let Ok(ev) = self.events.try_recv() {
            self.on_event(kind, ev, resume)?;
        }
        Ok(())
    }
}

fn headers_op(
    kind: Kind,
    headers: Headers,
    end_of_stream: bool,
    upstream: Option<String>,
) -> StreamOp {
    match kind {
        Kind::Request => StreamOp::RequestHeaders {
            headers,
            end_of_stream,
        },
        Kind::Response => StreamOp::ResponseHeaders {
            headers,
            end_of_stream,
            upstream,
        },
    }
}

fn body_op(kind: Kind, chunk: Bytes, end_of_stream: bool) -> StreamOp {
    match kind {
        Kind::Request => StreamOp::RequestBody {
            chunk,
            end_of_stream,
        },
        Kind::Response => StreamOp::ResponseBody {
            chunk,
            end_of_stream,
        },
    }
}

/// Runs one direction of the stream through one filter, passing on to `out` what it lets
/// through as it lets it through: the headers when they continue, each body chunk the filter
/// continues (with the `end_of_stream` it saw), whatever it buffered when it resumes. Returns
/// the trailers to pass on, if any; the caller sends them and the end.
///
/// Envoy's rules reproduced here: a Pause from the headers holds the body back (no body
/// callback) unless `allow_body_while_held`; body chunks are delivered even while the body is
/// paused, with the cumulative size; Continue from a body chunk while the headers are still
/// held drops that chunk (the upstream gets an empty body); `proxy_continue_stream` releases
/// the headers and whatever is buffered.
async fn run_phase(
    io: &mut PhaseIo<'_>,
    input: PhaseInput,
    out: &UnboundedSender<Msg>,
) -> Result<Option<Headers>, Interrupt> {
    let PhaseInput {
        kind,
        headers,
        mut source,
        headers_eos,
        allow_body_while_held,
        upstream,
    } = input;
    // A stage after this one that went away is not this stage's failure.
    let emit = |m: Msg| {
        let _ = out.send(m);
    };
    let idle = io.idle;
    let first = io
        .op(headers_op(kind, headers, headers_eos, upstream))
        .await?;
    let mut held = first.action != Some(Action::Continue);
    if !held {
        emit(Msg::Headers(first.headers.unwrap_or_default(), headers_eos));
    }
    let mut resume = false;
    io.drain_events(kind, &mut resume)?;
    let mut pending: Vec<Bytes> = Vec::new();
    let mut source_done = headers_eos;
    let mut eos_seen = headers_eos;
    let mut eos_delivered = headers_eos;
    let mut trailers: Option<Headers> = None;
    // The trailers callback ran (so the trailers, not a body chunk, end the stream).
    let mut had_trailers = false;
    let mut out_trailers: Option<Headers> = None;
    let mut body_paused = false;
    loop {
        if resume {
            resume = false;
            if held || body_paused {
                let take = match kind {
                    Kind::Request => StreamOp::TakeRequest,
                    Kind::Response => StreamOp::TakeResponse,
                };
                let t = io.op(take).await?;
                if held {
                    emit(Msg::Headers(t.headers.unwrap_or_default(), headers_eos));
                    held = false;
                }
                let last = eos_delivered && !had_trailers;
                if !t.body.is_empty() || (last && !headers_eos) {
                    emit(Msg::Data(Bytes::from(t.body), last));
                }
                if eos_delivered && had_trailers {
                    out_trailers = t.trailers;
                }
                body_paused = false;
            }
        }
        let can_deliver = !held || allow_body_while_held;
        if can_deliver
            && !eos_delivered
            && (!pending.is_empty() || (eos_seen && trailers.is_none()))
        {
            let chunk: Bytes = if pending.len() == 1 {
                pending.remove(0)
            } else {
                Bytes::from(
                    pending
                        .drain(..)
                        .flat_map(|b| b.to_vec())
                        .collect::<Vec<u8>>(),
                )
            };
            let eos = eos_seen && trailers.is_none();
            let r = io.op(body_op(kind, chunk, eos)).await?;
            eos_delivered |= eos;
            if r.action == Some(Action::Continue) {
                if !held && (!r.body.is_empty() || eos) {
                    emit(Msg::Data(Bytes::from(r.body), eos));
                }
                body_paused = false;
            } else {
                body_paused = true;
            }
            io.drain_events(kind, &mut resume)?;
            continue;
        }
        if can_deliver && !eos_delivered && pending.is_empty() {
            if let Some(t) = trailers.take() {
                let op = match kind {
                    Kind::Request => StreamOp::RequestTrailers { trailers: t },
                    Kind::Response => StreamOp::ResponseTrailers { trailers: t },
                };
                let r = io.op(op).await?;
                eos_delivered = true;
                had_trailers = true;
                if r.action == Some(Action::Continue) {
                    if !held {
                        if !r.body.is_empty() {
                            emit(Msg::Data(Bytes::from(r.body), false));
                        }
                        out_trailers = r.trailers;
                    }
                    body_paused = false;
                } else {
                    body_paused = true;
                }
                io.drain_events(kind, &mut resume)?;
                continue;
            }
        }
        if !held && eos_delivered && !body_paused {
            return Ok(out_trailers);
        }
        tokio::select! {
            ev = io.events.recv() => match ev {
                Some(ev) => io.on_event(kind, ev, &mut resume)?,
                None => return Err(Interrupt::Failed),
            },
            f = source.next(), if !source_done => match f {
                Frame::Data(b, end) => {
                    if !b.is_empty() {
                        pending.push(b);
                    }
                    if end {
                        eos_seen = true;
                        source_done = true;
                    }
                }
                Frame::Trailers(t) => {
                    trailers = Some(t);
                    eos_seen = true;
                    source_done = true;
                }
                Frame::End => {
                    eos_seen = true;
                    source_done = true;
                }
                Frame::Error => return Err(Interrupt::Reset),
            },
            _ = tokio::time::sleep(idle) => return Err(Interrupt::IdleTimeout),
        }
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

/// One filter's context on a stream: the VM instance it runs on, its context id, the events
/// it raises. Opened when the request reaches the filter, as Envoy creates a wasm filter's
/// context at its `decodeHeaders`: a filter the request never reached gets no callback at all
/// (`in_vm_context_created_`), neither for the response nor `on_done`/`on_log`.
struct FilterStream {
    worker: Sender<WorkerMsg>,
    ctx: u32,
    events: UnboundedReceiver<StreamEvent>,
    _close: CloseGuard,
}

impl FilterStream {
    /// `None` when the filter's VM has failed.
    async fn open((worker, slot): &FilterSlot, props: StreamProps) -> Option<Self> {
        let (ev_tx, events) = unbounded_channel();
        let (tx, rx) = oneshot::channel();
        worker
            .send(WorkerMsg::Open {
                slot: *slot,
                props,
                events: ev_tx,
                reply: tx,
            })
            .ok()?;
        let ctx = rx.await.ok()??;
        Some(FilterStream {
            worker: worker.clone(),
            ctx,
            events,
            _close: CloseGuard {
                worker: worker.clone(),
                ctx,
            },
        })
    }

    fn io(&mut self, accept_local_reply: bool, idle: Duration) -> PhaseIo<'_> {
        PhaseIo {
            worker: &self.worker,
            ctx: self.ctx,
            events: &mut self.events,
            accept_local_reply,
            idle,
        }
    }
}
/// What a stage hands back when it is over: its index in the chain, the filter's context
/// (kept for the response phase, dropped to close it), and how the phase ended.
type StageResult = (usize, Option<FilterStream>, Result<(), Interrupt>);

/// Where a stage's direction of the stream comes from.
enum StageInput {
    /// The client's request or the upstream's answer.
    Direct {
        headers: Headers,
        eos: bool,
        source: Source,
    },
    /// What the filter before let through.
    Chained(UnboundedReceiver<Msg>),
}

impl StageInput {
    /// The headers, whether the stream ends with them, and the rest; `None` when the stage
    /// before never let headers through (it replied, failed or was reset).
    async fn headers(self) -> Option<(Headers, bool, Source)> {
        match self {
            StageInput::Direct {
                headers,
                eos,
                source,
            } => Some((headers, eos, source)),
            StageInput::Chained(mut rx) => loop {
                match rx.recv().await? {
                    Msg::Headers(h, eos) => return Some((h, eos, Source::Chained(rx))),
                    _ => continue,
                }
            },
        }
    }
}

/// Sends what follows the body: the trailers a phase passed on, then the end.
fn finish(out: &UnboundedSender<Msg>, trailers: Option<Headers>) {
    if let Some(t) = trailers {
        let _ = out.send(Msg::Trailers(t));
    }
    let _ = out.send(Msg::End);
}

/// One decoder filter: its context is created when the request's headers reach it.
async fn request_stage(
    i: usize,
    slot: FilterSlot,
    props: StreamProps,
    allow: bool,
    idle: Duration,
    input: StageInput,
    out: UnboundedSender<Msg>,
) -> StageResult {
    let Some((headers, headers_eos, source)) = input.headers().await else {
        return (i, None, Ok(()));
    };
    let Some(mut filter) = FilterStream::open(&slot, props).await else {
        return (i, None, Err(Interrupt::Failed));
    };
    let input = PhaseInput {
        kind: Kind::Request,
        headers,
        source,
        headers_eos,
        allow_body_while_held: allow,
        upstream: None,
    };
    let r = run_phase(&mut filter.io(true, idle), input, &out).await;
    let r = r.map(|trailers| finish(&out, trailers));
    (i, Some(filter), r)
}

/// What every encoder stage of a stream shares.
struct Encoding {
    idle: Duration,
    /// The host that answered, for `upstream.address`.
    upstream: Option<String>,
}

/// One encoder filter. Once its phase is over its context is closed (`on_done`, `on_log`)
/// before the end goes on, so a client that has the whole response sees the filters done.
async fn response_stage(
    i: usize,
    mut filter: FilterStream,
    accept_local_reply: bool,
    encoding: Arc<Encoding>,
    input: StageInput,
    out: UnboundedSender<Msg>,
    release: Option<(SendRequest<UpstreamBody>, Arc<Endpoint>)>,
) -> StageResult {
    let (idle, upstream) = (encoding.idle, encoding.upstream.clone());
    let Some((headers, headers_eos, source)) = input.headers().await else {
        return (i, Some(filter), Ok(()));
    };
    let input = PhaseInput {
        kind: Kind::Response,
        headers,
        source,
        headers_eos,
        allow_body_while_held: false,
        upstream,
    };
    match run_phase(&mut filter.io(accept_local_reply, idle), input, &out).await {
        Ok(trailers) => {
            // The upstream's body was read to its end: its connection can serve another.
            if let Some((sender, endpoint)) = release {
                endpoint.release(sender);
            }
            drop(filter);
            finish(&out, trailers);
            (i, None, Ok(()))
        }
        Err(e) => (i, Some(filter), Err(e)),
    }
}

/// Waits for the headers at the end of a chain of stages, storing the contexts of the stages
/// that finish meanwhile. `Err` carries the first interruption a stage reported.
async fn chain_headers(
    mut input: StageInput,
    tasks: &mut JoinSet<StageResult>,
    filters: &mut [Option<FilterStream>],
) -> Result<Option<(Headers, bool, Source)>, (usize, Interrupt)> {
    let mut rx = match input {
        StageInput::Direct { .. } => return Ok(input.headers().await),
        StageInput::Chained(ref mut rx) => rx,
    };
    let mut open = true;
    loop {
        tokio::select! {
            m = rx.recv(), if open => match m {
                Some(Msg::Headers(h, eos)) => {
                    let StageInput::Chained(rx) = input else { return Ok(None) };
                    return Ok(Some((h, eos, Source::Chained(rx))));
                }
                Some(_) => {}
                None => open = false,
            },
            joined = tasks.join_next() => match joined {
                None if open => {
                    // Every stage is over: what is left in the channel decides.
                    while let Ok(m) = rx.try_recv() {
                        if let Msg::Headers(h, eos) = m {
                            let StageInput::Chained(rx) = input else { return Ok(None) };
                            return Ok(Some((h, eos, Source::Chained(rx))));
                        }
                    }
                    return Ok(None);
                }
                None => return Ok(None),
                Some(joined) => store(joined, filters)?,
            },
        }
        rx = match input {
            StageInput::Chained(ref mut rx) => rx,
            StageInput::Direct { .. } => return Ok(None),
        };
    }
}

/// Keeps a finished stage's context; its interruption, if any, is the caller's to answer.
fn store(
    joined: Result<StageResult, tokio::task::JoinError>,
    filters: &mut [Option<FilterStream>],
) -> Result<(), (usize, Interrupt)> {
    let Ok((i, filter, result)) = joined else {
        return Err((0, Interrupt::Failed));
    };
    if let Some(f) = filter {
        if let Some(slot) = filters.get_mut(i) {
            *slot = Some(f);
        }
    }
    result.map_err(|e| (i, e))
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
