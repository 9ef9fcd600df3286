//! A minimal HTTP client: one connection per request, so that concurrent requests spread over
//! Envoy's workers, and raw access to every response header (duplicates kept).
//!
//! The URL's scheme chooses the protocol: `http://` is HTTP/1.1; `h2c://` is HTTP/2 over
//! cleartext with prior knowledge (the connection starts with the HTTP/2 preface, which Envoy's
//! `codec_type: AUTO` recognises: what a gRPC client or a TLS-terminating edge speaks inward).
//! A host whose `public_url` is `h2c://…` makes every scenario speak HTTP/2 to it.

use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use bytes::Bytes;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A request to send; header values are bytes so tests can send what a browser would not.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    /// Send the body chunked in these pieces (no content-length), with these trailers.
    pub chunked: Option<ChunkedBody>,
    pub timeout: Duration,
}

/// Pieces of a chunked body and its trailers.
pub type ChunkedBody = (Vec<Bytes>, Vec<(String, String)>);

/// What came back: status, every header in order (names lower-case), the whole body, and the
/// trailers after it (HTTP/2, or HTTP/1 chunked), if any.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    pub trailers: Vec<(String, Vec<u8>)>,
}

impl Resp {
    /// The first value of a header, as text (lossy).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// Every value of a trailer, in order.
    pub fn trailer_all(&self, name: &str) -> Vec<String> {
        self.trailers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response body is not JSON: {:?}", self.text()))
    }
}

impl Req {
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Req {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Bytes::new(),
            chunked: None,
            timeout: Duration::from_secs(20),
        }
    }

    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::GET, url)
    }

    pub fn post(url: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self::new(Method::POST, url).body(body)
    }

    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends `chunks` with chunked transfer encoding, then `trailers` (announced in a
    /// `trailer` header, as HTTP/1.1 requires).
    pub fn chunked(mut self, chunks: Vec<Bytes>, trailers: &[(&str, &str)]) -> Self {
        self.chunked = Some((
            chunks,
            trailers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        ));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub async fn send(self) -> Result<Resp> {
        let timeout = self.timeout;
        let url = self.url.clone();
        tokio::time::timeout(timeout, self.send_inner())
            .await
            .map_err(|_| anyhow!("no answer from {url} within {timeout:?}"))?
    }

    async fn send_inner(self) -> Result<Resp> {
        let mut conn = Conn::open_url(&self.url).await?;
        conn.exchange(self).await
    }

    /// Turns this into a hyper request. HTTP/1.1 carries the authority in `host`; HTTP/2 in
    /// `:authority`, which hyper takes from an absolute URI, so there a `host` header given by
    /// the test becomes the URI's authority (as a browser's h2 stack does).
    fn into_request(self) -> Result<Request<BoxBody<Bytes, Infallible>>> {
        let (proto, authority, path) = split_url(&self.url)?;
        let host = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("host"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        let mut builder = Request::builder().method(self.method);
        builder = match proto {
            Proto::Http1 => builder.uri(path),
            Proto::H2c => builder
                .uri(format!(
                    "http://{}{path}",
                    host.as_deref().unwrap_or(authority)
                ))
                .version(hyper::Version::HTTP_2),
        };
        for (name, value) in &self.headers {
            if proto == Proto::H2c && name.eq_ignore_ascii_case("host") {
                continue;
            }
            builder = builder.header(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_bytes(value)?,
            );
        }
        if proto == Proto::Http1 && host.is_none() {
            builder = builder.header("host", authority);
        }
        let body: BoxBody<Bytes, Infallible> = match self.chunked {
            None => Full::new(self.body).boxed(),
            Some((chunks, trailers)) => {
                let mut map = HeaderMap::new();
                for (n, v) in &trailers {
                    builder = builder.header("trailer", n.as_str());
                    map.append(
                        HeaderName::from_bytes(n.as_bytes())?,
                        HeaderValue::from_str(v)?,
                    );
                }
                BoxBody::new(Chunked {
                    chunks: chunks.into(),
                    trailers: (!map.is_empty()).then_some(map),
                })
            }
        };
        Ok(builder.body(body)?)
    }
}

type ReqBody = BoxBody<Bytes, Infallible>;

/// The protocol a URL's scheme asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// `http://`
    Http1,
    /// `h2c://`: HTTP/2 with prior knowledge, no TLS.
    H2c,
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<ReqBody>),
    Http2(hyper::client::conn::http2::SendRequest<ReqBody>),
}

/// One kept-alive connection for several requests in a row (as a browser does). On HTTP/2,
/// [`Conn::send_concurrent`] sends many requests at once, each on its own stream.
pub struct Conn {
    sender: Sender,
    task: tokio::task::JoinHandle<()>,
}

impl Conn {
    /// Connects to `authority` ("ip:port") with HTTP/1.1.
    pub async fn open(authority: &str) -> Result<Conn> {
        Self::open_proto(authority, Proto::Http1).await
    }

    /// Connects to the authority of `url`, with the protocol its scheme names.
    pub async fn open_url(url: &str) -> Result<Conn> {
        let (proto, authority, _) = split_url(url)?;
        Self::open_proto(authority, proto).await
    }

    async fn open_proto(authority: &str, proto: Proto) -> Result<Conn> {
        let stream = TcpStream::connect(authority)
            .await
            .with_context(|| format!("connect {authority}"))?;
        let io = TokioIo::new(stream);
        let (sender, task) = match proto {
            Proto::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .context("HTTP/1 handshake")?;
                let task = tokio::spawn(async move {
                    let _ = conn.await;
                });
                (Sender::Http1(sender), task)
            }
            Proto::H2c => {
                let (sender, conn) =
                    hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .handshake(io)
                        .await
                        .context("HTTP/2 handshake")?;
                let task = tokio::spawn(async move {
                    let _ = conn.await;
                });
                (Sender::Http2(sender), task)
            }
        };
        Ok(Conn { sender, task })
    }

    pub fn proto(&self) -> Proto {
        match self.sender {
            Sender::Http1(_) => Proto::Http1,
            Sender::Http2(_) => Proto::H2c,
        }
    }

    /// Sends every request at once on this HTTP/2 connection, one stream each, and returns
    /// the answers in the order of `reqs`. (HTTP/1.1 cannot multiplex: an error there.)
    pub async fn send_concurrent(&self, reqs: Vec<Req>) -> Result<Vec<Result<Resp>>> {
        let Sender::Http2(sender) = &self.sender else {
            return Err(anyhow!("concurrent streams need an HTTP/2 connection"));
        };
        let mut set = tokio::task::JoinSet::new();
        for (i, req) in reqs.into_iter().enumerate() {
            let mut sender = sender.clone();
            set.spawn(async move {
                let timeout = req.timeout;
                let r = tokio::time::timeout(timeout, async {
                    let req = req.into_request()?;
                    sender.ready().await.context("connection not usable")?;
                    read(sender.send_request(req).await.context("send request")?).await
                })
                .await
                .map_err(|_| anyhow!("no answer within {timeout:?}"))
                .and_then(|r| r);
                (i, r)
            });
        }
        let mut out: Vec<Option<Result<Resp>>> = Vec::new();
        out.resize_with(set.len(), || None);
        while let Some(joined) = set.join_next().await {
            let (i, r) = joined.context("request task")?;
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(r);
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(anyhow!("request lost"))))
            .collect())
    }

    /// Sends `req` on this connection (its URL gives path and Host only) and reads the answer.
    pub async fn send(&mut self, req: Req) -> Result<Resp> {
        let timeout = req.timeout;
        tokio::time::timeout(timeout, self.exchange(req))
            .await
            .map_err(|_| anyhow!("no answer within {timeout:?}"))?
    }

    /// Whether the server closed the connection.
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    async fn exchange(&mut self, req: Req) -> Result<Resp> {
        let req = req.into_request()?;
        let resp = match &mut self.sender {
            Sender::Http1(s) => {
                s.ready().await.context("connection not reusable")?;
                s.send_request(req).await.context("send request")?
            }
            Sender::Http2(s) => {
                s.ready().await.context("connection not reusable")?;
                s.send_request(req).await.context("send request")?
            }
        };
        read(resp).await
    }
}

/// Status, every header in order, the whole body, the trailers.
async fn read(resp: hyper::Response<hyper::body::Incoming>) -> Result<Resp> {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let collected = resp
        .into_body()
        .collect()
        .await
        .context("read response body")?;
    let trailers = collected
        .trailers()
        .map(|t| {
            t.iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Resp {
        status,
        headers,
        body: collected.to_bytes(),
        trailers,
    })
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// "http://host:port/path?q" -> (Http1, "host:port", "/path?q"); "h2c://…" -> H2c.
fn split_url(url: &str) -> Result<(Proto, &str, &str)> {
    let (proto, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Proto::Http1, rest)
    } else if let Some(rest) = url.strip_prefix("h2c://") {
        (Proto::H2c, rest)
    } else {
        return Err(anyhow!("only http:// and h2c:// URLs: {url}"));
    };
    Ok(match rest.find('/') {
        Some(i) => (proto, &rest[..i], &rest[i..]),
        None => (proto, rest, "/"),
    })
}

/// A request body of unknown length: data frames, then optional trailers.
struct Chunked {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(c) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}
