//! One app server: a version of the money-transfer app on its own port, with a switchable
//! failure mode and a record of every request it saw.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::session::{EnvelopeInfo, Load, SessionData, SessionStore};
use super::transfer::{self, Outcome, Step};

/// The largest request body a server accepts (tests send up to a few MiB).
const MAX_BODY: usize = 16 << 20;

/// How a server answers, switchable while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// The app as written.
    #[default]
    Normal,
    /// Every app request gets a plain `500`.
    Fail500,
    /// `409` with `x-app-version` but no `x-session-version`: a conflict, not a version error.
    Conflict409NoVersion,
    /// `409` whose `x-session-version` equals `x-app-version`: not a version error either.
    Conflict409SameVersion,
    /// Waits this long, then answers normally.
    Slow(Duration),
    /// Sends the headers (`content-length: 100`) and part of the body, then closes.
    CloseMidBody,
    /// Every connection gets bytes that are not HTTP, then is closed (headers not recorded).
    Garbage,
    /// Reads the request (head and `content-length` body), records it, then sends a `200` head
    /// promising 100 bytes, 7 of them, and closes: an answer that broke off after it began (the
    /// headers are on the wire before the close, unlike `CloseMidBody`).
    BreakOffAnswer,
    /// Every app request gets this fixed answer (any status and headers, e.g. a signal with
    /// other header names).
    Respond(Canned),
    /// Reads and records the request, waits until the test opens the gate, then answers as
    /// `Normal`: the test knows every body has passed the proxy before any answer leaves.
    Gated(Gate),
}

/// A latch for [`Mode::Gated`], shut until [`Gate::open`].
#[derive(Debug, Clone)]
pub struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Self {
        Gate(Arc::new(tokio::sync::watch::channel(false).0))
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    async fn pass(&self) {
        // An error means the sender is gone, which it cannot be while `self` holds it.
        let _ = self.0.subscribe().wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for Gate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Gate {}

/// A fixed answer for [`Mode::Respond`]. `x-served-by` is added; nothing else is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Canned {
    pub status: u16,
    /// Values as bytes: a test may send what no well-behaved server would.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: String,
    /// Send the body in 16 pieces spread over this long (a body still streaming while the
    /// proxy decides on the headers); `None` sends it at once.
    pub trickle: Option<Duration>,
}

impl Canned {
    pub fn trickled(mut self, over: Duration) -> Self {
        self.trickle = Some(over);
        self
    }

    /// Adds a header whose value is any bytes (obs-text included).
    pub fn with_header_bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.headers.push((name.to_string(), value.to_vec()));
        self
    }

    pub fn new(status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        Canned {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: body.to_string(),
            trickle: None,
        }
    }
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    /// Trailers of a chunked body, if any arrived.
    pub trailers: Vec<(String, Vec<u8>)>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// What a server is: its name (shown in `x-served-by`), app name and version, and the pool's
/// session store.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: String,
    pub app: String,
    pub version: String,
    pub store: SessionStore,
}

impl AppConfig {
    pub fn new(name: &str, version: &str, store: &SessionStore) -> Self {
        AppConfig {
            name: name.to_string(),
            app: "checkout".to_string(),
            version: version.to_string(),
            store: store.clone(),
        }
    }
}

struct Shared {
    name: String,
    app: String,
    version: Mutex<String>,
    store: SessionStore,
    mode: Mutex<Mode>,
    healthy: AtomicBool,
    requests: Mutex<Vec<RecordedRequest>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running (or stopped) app server. Dropping it stops it.
pub struct AppServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl AppServer {
    /// Starts on 127.0.0.1 and a free port.
    pub async fn start(config: AppConfig) -> Result<Self> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(config: AppConfig, addr: SocketAddr) -> Result<Self> {
        let shared = Arc::new(Shared {
            name: config.name,
            app: config.app,
            version: Mutex::new(config.version),
            store: config.store,
            mode: Mutex::new(Mode::Normal),
            healthy: AtomicBool::new(true),
            requests: Mutex::new(Vec::new()),
        });
        let mut server = AppServer {
            shared,
            addr,
            task: None,
        };
        server.listen().await?;
        Ok(server)
    }

    async fn listen(&mut self) -> Result<()> {
        // A restarted server reuses its port; the old socket may linger a moment.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) if tries < 50 && self.addr.port() != 0 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("bind {}", self.addr)),
            }
        };
        self.addr = listener.local_addr()?;
        let shared = self.shared.clone();
        self.task = Some(tokio::spawn(accept_loop(listener, shared)));
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn app(&self) -> &str {
        &self.shared.app
    }

    pub fn version(&self) -> String {
        lock(&self.shared.version).clone()
    }

    pub fn store(&self) -> &SessionStore {
        &self.shared.store
    }

    pub fn is_running(&self) -> bool {
        self.task.is_some()
    }

    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
    }

    /// `false` makes `/health` answer 503 (a server being drained) while the app keeps working.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Every request seen since start (or the last [`AppServer::clear_requests`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Stops listening and closes every open connection (kept-alive ones included).
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Starts again on the same address, as `version` (e.g. after an upgrade).
    pub async fn restart(&mut self, version: &str) -> Result<()> {
        self.stop().await;
        *lock(&self.shared.version) = version.to_string();
        self.listen().await
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Owns every connection: aborting this task drops the JoinSet, which aborts them all.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                if *lock(&shared.mode) == Mode::Garbage {
                    conns.spawn(answer_garbage(stream, shared));
                    continue;
                }
                if *lock(&shared.mode) == Mode::BreakOffAnswer {
                    conns.spawn(break_off_answer(stream, shared));
                    continue;
                }
                conns.spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Reads a request head, records it, and answers bytes that are not HTTP.
async fn answer_garbage(mut stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    lock(&shared.requests).push(RecordedRequest {
        method: words.next().unwrap_or("?").to_string(),
        path: words.next().unwrap_or("?").to_string(),
        headers: Vec::new(),
        body: Bytes::new(),
        trailers: Vec::new(),
    });
    let _ = stream
        .write_all(b"SSH-2.0-OpenSSH_9.6\r\nthis is not HTTP\r\n\r\n")
        .await;
    let _ = stream.shutdown().await;
}

/// Reads a request, records it, begins a `200` answer and closes in its body.
async fn break_off_answer(mut stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let (head_end, body_len) = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..i]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, len);
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    };
    while got.len() < head_end + body_len {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let mut words = line.split_whitespace();
    lock(&shared.requests).push(RecordedRequest {
        method: words.next().unwrap_or("?").to_string(),
        path: words.next().unwrap_or("?").to_string(),
        headers: Vec::new(),
        body: Bytes::copy_from_slice(got.get(head_end..).unwrap_or_default()),
        trailers: Vec::new(),
    });
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\nx-served-by: {}\r\n\r\npartial",
        shared.name
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

type RespBody = BoxBody<Bytes, io::Error>;

fn full(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn respond(
    shared: &Shared,
    status: u16,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<RespBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert("content-type", hv(content_type));
    h.insert("x-served-by", hv(&shared.name));
    h.insert("x-app-version", hv(&lock(&shared.version)));
    resp
}

fn hv(s: &str) -> hyper::header::HeaderValue {
    hyper::header::HeaderValue::from_str(s)
        .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("-"))
}

fn json_resp(shared: &Shared, status: u16, v: &Value) -> Response<RespBody> {
    respond(shared, status, "application/json", v.to_string())
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let (body, trailers) = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => {
            let trailers = b
                .trailers()
                .map(|t| {
                    t.iter()
                        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            (b.to_bytes(), trailers)
        }
        Err(_) => return Ok(respond(&shared, 413, "text/plain", "body too large")),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let recorded = RecordedRequest {
        method: parts.method.as_str().to_string(),
        path: path.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        body,
        trailers,
    };
    lock(&shared.requests).push(recorded.clone());
    Ok(answer(&shared, &recorded).await)
}

async fn answer(shared: &Shared, req: &RecordedRequest) -> Response<RespBody> {
    let route = req.path.split('?').next().unwrap_or("/");
    let version = lock(&shared.version).clone();
    // Operational endpoints ignore the failure mode: they describe the server, not the app.
    if route == "/.well-known/mixmode/version" {
        return json_resp(shared, 200, &json!({"app": shared.app, "version": version}));
    }
    if route == "/health" {
        let ok = shared.healthy.load(Ordering::Relaxed);
        return respond(
            shared,
            if ok { 200 } else { 503 },
            "text/plain",
            if ok { "ok" } else { "draining" },
        );
    }
    let mode = lock(&shared.mode).clone();
    match mode {
        Mode::Normal => {}
        Mode::Fail500 => return respond(shared, 500, "text/plain", "internal error"),
        Mode::Conflict409NoVersion => {
            return respond(
                shared,
                409,
                "text/plain",
                "conflict: transfer already submitted",
            )
        }
        Mode::Conflict409SameVersion => {
            let mut r = respond(shared, 409, "text/plain", "conflict: stale form");
            r.headers_mut().insert("x-session-version", hv(&version));
            return r;
        }
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::Gated(gate) => gate.pass().await,
        // Connections of a garbage server never get here (see accept_loop).
        Mode::Garbage | Mode::BreakOffAnswer => {
            return respond(shared, 500, "text/plain", "not reached")
        }
        Mode::Respond(canned) => {
            let body = match canned.trickle {
                None => full(canned.body),
                Some(over) => trickle(Bytes::from(canned.body), over),
            };
            let mut r = Response::new(body);
            *r.status_mut() =
                StatusCode::from_u16(canned.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            for (n, v) in &canned.headers {
                if let (Ok(name), Ok(value)) = (
                    hyper::header::HeaderName::from_bytes(n.as_bytes()),
                    hyper::header::HeaderValue::from_bytes(v),
                ) {
                    r.headers_mut().append(name, value);
                }
            }
            r.headers_mut().insert("x-served-by", hv(&shared.name));
            return r;
        }
        Mode::CloseMidBody => {
            let mut r = Response::new(BoxBody::new(Broken { sent: false }));
            r.headers_mut().insert("x-served-by", hv(&shared.name));
            return r;
        }
    }
    let session_id = cookie(req, "session");
    let download = route
        .strip_prefix("/download/")
        .and_then(|n| n.parse::<usize>().ok());
    if route == "/echo" || route.starts_with("/echo/") || download.is_some() {
        if let Some(id) = &session_id {
            match shared.store.load(id, &version) {
                Load::OtherVersion(info) => return mismatch(shared, id, &version, &info),
                Load::Corrupt => return respond(shared, 500, "text/plain", "corrupt session"),
                Load::Ok(_) | Load::Missing => {}
            }
        }
        if let Some(n) = download {
            return respond(
                shared,
                200,
                "application/octet-stream",
                pattern_bytes(n.min(MAX_BODY)),
            );
        }
        return echo(shared, req, &version);
    }
    if let Some(step) = route.strip_prefix("/transfer/").and_then(Step::from_name) {
        return transfer_step(shared, req, step, session_id, &version);
    }
    respond(shared, 404, "text/plain", "not found")
}

/// The signal of docs/design.md#the-mismatch-signal: the session was written by another version.
fn mismatch(shared: &Shared, id: &str, version: &str, info: &EnvelopeInfo) -> Response<RespBody> {
    let body = format!(
        "session {id} was written by version {} ({}, {} bytes); this server runs version {version}\n",
        info.version, info.class_name, info.size
    );
    let mut r = respond(shared, 409, "text/plain", body);
    let h = r.headers_mut();
    h.insert("x-session-version", hv(&info.version));
    h.insert("x-session-class", hv(&info.class_name));
    h.insert("x-session-size", hv(&info.size.to_string()));
    r
}

fn echo(shared: &Shared, req: &RecordedRequest, version: &str) -> Response<RespBody> {
    let v = json!({
        "server": shared.name,
        "version": version,
        "method": req.method,
        "path": req.path,
        "body_len": req.body.len(),
        "body_sha256": sha256_hex(&req.body),
    });
    let mut r = if req.path.starts_with("/echo/chunked") {
        // No length known in advance: hyper sends it chunked (a hop-by-hop encoding the proxy
        // must not pass on twice).
        let text = v.to_string().into_bytes();
        let chunks = text.chunks(16).map(Bytes::copy_from_slice).collect();
        let mut r = Response::new(BoxBody::new(Chunks { chunks }));
        r.headers_mut()
            .insert("content-type", hv("application/json"));
        r.headers_mut().insert("x-served-by", hv(&shared.name));
        r
    } else {
        json_resp(shared, 200, &v)
    };
    // Two cookies: the proxy must keep duplicate headers of a peer's answer.
    let h = r.headers_mut();
    h.append(
        "set-cookie",
        hyper::header::HeaderValue::from_static("a=1; Path=/"),
    );
    h.append(
        "set-cookie",
        hyper::header::HeaderValue::from_static("b=2; Path=/"),
    );
    r
}

fn transfer_step(
    shared: &Shared,
    req: &RecordedRequest,
    step: Step,
    session_id: Option<String>,
    version: &str,
) -> Response<RespBody> {
    let input: Map<String, Value> = match serde_json::from_slice(&req.body) {
        Ok(Value::Object(m)) => m,
        _ if req.body.is_empty() => Map::new(),
        _ => return respond(shared, 400, "text/plain", "body must be a JSON object"),
    };
    let (id, mut data) = match (&session_id, step) {
        (None, Step::Recipient) => (None, SessionData::new()),
        (None, _) => return respond(shared, 400, "text/plain", "no session cookie"),
        (Some(id), _) => match shared.store.load(id, version) {
            Load::Ok(d) => (Some(id.clone()), d),
            Load::OtherVersion(info) => return mismatch(shared, id, version, &info),
            Load::Missing => return respond(shared, 400, "text/plain", "no such session"),
            Load::Corrupt => return respond(shared, 500, "text/plain", "corrupt session"),
        },
    };
    let outcome = match transfer::apply(version, step, &mut data, &input) {
        Ok(o) => o,
        Err((status, reason)) => return respond(shared, status, "text/plain", reason),
    };
    let id = match id {
        Some(id) => id,
        None => match shared.store.create(version, &data) {
            Ok(id) => id,
            Err(e) => return respond(shared, 500, "text/plain", e.to_string()),
        },
    };
    let mut v =
        json!({"server": shared.name, "version": version, "session": id, "step": step.name()});
    match outcome {
        Outcome::Saved { next } => {
            if let Err(e) = shared.store.write(&id, version, &data) {
                return respond(shared, 500, "text/plain", e.to_string());
            }
            v["next"] = json!(next.name());
        }
        Outcome::Completed { receipt } => {
            shared.store.remove(&id);
            v["receipt"] = json!(receipt);
        }
    }
    let mut r = json_resp(shared, 200, &v);
    if let Ok(c) = hyper::header::HeaderValue::from_str(&format!("session={id}; Path=/")) {
        r.headers_mut().insert("set-cookie", c);
    }
    r
}

fn cookie(req: &RecordedRequest, name: &str) -> Option<String> {
    req.headers
        .iter()
        .filter(|(n, _)| n == "cookie")
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(';')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
}

/// `len` bytes that are not text (every byte value occurs): what `/download/<len>` answers.
pub fn pattern_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 256) as u8).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `body` in 16 pieces, one every `over / 16`, from a task (the length is known up front, so
/// the client sees a content-length and a body still arriving).
fn trickle(body: Bytes, over: Duration) -> RespBody {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let total = body.len() as u64;
    tokio::spawn(async move {
        let step = body.len().div_ceil(16).max(1);
        for piece in body.chunks(step) {
            tokio::time::sleep(over / 16).await;
            if tx.send(Bytes::copy_from_slice(piece)).await.is_err() {
                return;
            }
        }
    });
    BoxBody::new(Trickle { rx, total })
}

struct Trickle {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    total: u64,
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.total)
    }
}

/// A body of unknown length, sent in pieces.
struct Chunks {
    chunks: std::collections::VecDeque<Bytes>,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

/// A body that promises 100 bytes, sends 7 and fails: hyper then closes the connection.
struct Broken {
    sent: bool,
}

impl Body for Broken {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.sent {
            Poll::Ready(Some(Err(io::Error::other("closed mid-body"))))
        } else {
            self.sent = true;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"partial")))))
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(100)
    }
}
