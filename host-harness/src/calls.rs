//! Outbound HTTP over real sockets: `dispatch_http_call`s and the front end's forwarding, with
//! Envoy's own answers for failures (503 for a peer that cannot be reached, 504 on timeout).

use crate::body::OutBody;
use crate::types::Headers;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Envoy's body for a peer that refused the connection.
pub const CONNECT_FAILURE_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
/// Envoy's body for a peer that closed the connection before answering.
pub const TERMINATION_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
/// Envoy's body for a call or route timeout.
pub const TIMEOUT_BODY: &str = "upstream request timeout";

/// A request body on its way to an upstream.
pub(crate) type UpstreamBody = OutBody<()>;

pub(crate) enum CallOutcome {
    Response {
        headers: Headers,
        body: Vec<u8>,
        trailers: Headers,
    },
    /// The stream was reset after the answer began: `on_http_call_response(token, 0, 0, 0)`.
    Reset,
}

/// An answer Envoy makes itself: `:status`, `content-length`, `content-type` and nothing else
/// (in particular no `x-envoy-upstream-service-time`, which is how a filter tells them apart).
pub(crate) fn envoy_reply(status: u16, body: &str) -> (Headers, Vec<u8>) {
    (
        vec![
            (b":status".to_vec(), status.to_string().into_bytes()),
            (
                b"content-length".to_vec(),
                body.len().to_string().into_bytes(),
            ),
            (b"content-type".to_vec(), b"text/plain".to_vec()),
        ],
        body.as_bytes().to_vec(),
    )
}

/// Builds a hyper request from proxy-wasm headers (pseudo-headers included).
pub(crate) fn build_request<B>(headers: &Headers, body: B) -> Option<Request<B>> {
    let mut method = None;
    let mut path = None;
    let mut authority = None;
    let mut b = Request::builder();
    for (k, v) in headers {
        match k.as_slice() {
            b":method" => method = Some(v.clone()),
            b":path" => path = Some(v.clone()),
            b":authority" => authority = Some(v.clone()),
            k if k.starts_with(b":") => {}
            b"host" => {}
            _ => {
                let (Ok(name), Ok(value)) = (
                    hyper::header::HeaderName::from_bytes(k),
                    hyper::header::HeaderValue::from_bytes(v),
                ) else {
                    continue;
                };
                b = b.header(name, value);
            }
        }
    }
    if let Some(a) = authority {
        if let Ok(v) = hyper::header::HeaderValue::from_bytes(&a) {
            b = b.header(hyper::header::HOST, v);
        }
    }
    let method = hyper::Method::from_bytes(&method.unwrap_or_else(|| b"GET".to_vec())).ok()?;
    let path = String::from_utf8(path.unwrap_or_else(|| b"/".to_vec())).ok()?;
    b.method(method).uri(path).body(body).ok()
}

/// Turns a hyper response head into proxy-wasm headers: `:status` first, every header kept
/// (hop-by-hop ones too: stripping them is the filter's job, as in Envoy).
pub(crate) fn response_headers(resp: &hyper::http::response::Parts) -> Headers {
    let mut out = Vec::with_capacity(resp.headers.len() + 2);
    out.push((
        b":status".to_vec(),
        resp.status.as_str().as_bytes().to_vec(),
    ));
    for (k, v) in &resp.headers {
        out.push((k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()));
    }
    out
}

fn service_time(started: Instant) -> (Vec<u8>, Vec<u8>) {
    (
        b"x-envoy-upstream-service-time".to_vec(),
        started.elapsed().as_millis().to_string().into_bytes(),
    )
}

async fn connect<B>(target: SocketAddr) -> Option<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(target).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// Performs one `dispatch_http_call`.
pub(crate) async fn dispatch(
    target: SocketAddr,
    headers: Headers,
    body: Vec<u8>,
    timeout: Option<Duration>,
) -> CallOutcome {
    let call = async move {
        let Some(mut sender) = connect::<Full<Bytes>>(target).await else {
            let (headers, body) = envoy_reply(503, CONNECT_FAILURE_BODY);
            return CallOutcome::Response {
                headers,
                body,
                trailers: Vec::new(),
            };
        };
        let Some(req) = build_request(&headers, Full::new(Bytes::from(body))) else {
            let (headers, body) = envoy_reply(503, TERMINATION_BODY);
            return CallOutcome::Response {
                headers,
                body,
                trailers: Vec::new(),
            };
        };
        let started = Instant::now();
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(_) => {
                let (headers, body) = envoy_reply(503, TERMINATION_BODY);
                return CallOutcome::Response {
                    headers,
                    body,
                    trailers: Vec::new(),
                };
            }
        };
        let (parts, incoming) = resp.into_parts();
        let mut headers = response_headers(&parts);
        headers.push(service_time(started));
        match incoming.collect().await {
            Ok(collected) => {
                let trailers = collected
                    .trailers()
                    .map(|t| {
                        t.iter()
                            .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                CallOutcome::Response {
                    headers,
                    body: collected.to_bytes().to_vec(),
                    trailers,
                }
            }
            Err(_) => CallOutcome::Reset,
        }
    };
    match timeout {
        Some(t) => match tokio::time::timeout(t, call).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let (headers, body) = envoy_reply(504, TIMEOUT_BODY);
                CallOutcome::Response {
                    headers,
                    body,
                    trailers: Vec::new(),
                }
            }
        },
        None => call.await,
    }
}

/// One upstream host with its kept-alive connections.
pub(crate) struct Endpoint {
    pub addr: SocketAddr,
    idle: Mutex<Vec<SendRequest<UpstreamBody>>>,
}

/// The upstream's answer to a forwarded request, or Envoy's own.
pub(crate) enum Forwarded {
    Upstream {
        headers: Headers,
        body: Incoming,
        sender: SendRequest<UpstreamBody>,
    },
    Envoy {
        headers: Headers,
        body: Vec<u8>,
    },
    /// No connection to the host: what a route's `retry_on: connect-failure` retries, and
    /// otherwise Envoy's 503 (see [`connect_failure_reply`]).
    ConnectFailure,
}

/// Envoy's answer when no connection to the host could be made (and no retry was left).
pub(crate) fn connect_failure_reply() -> (Headers, Vec<u8>) {
    envoy_reply(503, CONNECT_FAILURE_BODY)
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take_idle(&self) -> Option<SendRequest<UpstreamBody>> {
        let mut idle = crate::shared::lock(&self.idle);
        while let Some(s) = idle.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    /// Gives a connection back once its response body was read to the end.
    pub fn release(&self, sender: SendRequest<UpstreamBody>) {
        if sender.is_ready() {
            crate::shared::lock(&self.idle).push(sender);
        }
    }

    /// Forwards a request; `timeout` is Envoy's route timeout (until response headers).
    /// The body is taken from `body` only when the request goes out on a connection: after a
    /// connect failure it is still there for a retry on another host.
    pub async fn forward(
        &self,
        headers: &Headers,
        body: &mut Option<UpstreamBody>,
        timeout: Duration,
    ) -> Forwarded {
        let attempt = async {
            // A pooled connection the upstream closed meanwhile fails at once: retry fresh.
            for fresh in [false, true] {
                let sender = if fresh {
                    connect(self.addr).await
                } else {
                    self.take_idle()
                };
                let Some(mut sender) = sender else {
                    if fresh {
                        return Forwarded::ConnectFailure;
                    }
                    continue;
                };
                let req = body.take().and_then(|b| build_request(headers, b));
                let Some(req) = req else {
                    let (h, b) = envoy_reply(503, TERMINATION_BODY);
                    return Forwarded::Envoy {
                        headers: h,
                        body: b,
                    };
                };
                let started = Instant::now();
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        let (parts, incoming) = resp.into_parts();
                        let mut h = response_headers(&parts);
                        h.push(service_time(started));
                        return Forwarded::Upstream {
                            headers: h,
                            body: incoming,
                            sender,
                        };
                    }
                    Err(mut e) => {
                        // Not sent at all (the idle connection had closed): safe to retry.
                        let unsent = e.take_message().map(|r| r.into_body());
                        if !fresh && unsent.is_some() && e.into_error().is_canceled() {
                            *body = unsent;
                            continue;
                        }
                        let (h, b) = envoy_reply(503, TERMINATION_BODY);
                        return Forwarded::Envoy {
                            headers: h,
                            body: b,
                        };
                    }
                }
            }
            Forwarded::ConnectFailure
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(f) => f,
            Err(_) => {
                let (h, b) = envoy_reply(504, TIMEOUT_BODY);
                Forwarded::Envoy {
                    headers: h,
                    body: b,
                }
            }
        }
    }
}

/// Reads a whole response body (used by tests and the admin client).
#[allow(dead_code)]
pub(crate) async fn read_all(resp: Response<Incoming>) -> Option<Bytes> {
    resp.into_body().collect().await.ok().map(|c| c.to_bytes())
}
