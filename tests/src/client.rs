//! A minimal HTTP/1.1 client: one connection per request, so that concurrent requests spread
//! over Envoy's workers, and raw access to every response header (duplicates kept).

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

/// What came back: status, every header in order (names lower-case), the whole body.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
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
        let (authority, _) = split_url(&self.url)?;
        let mut conn = Conn::open(authority).await?;
        conn.exchange(self).await
    }

    /// Turns this into a hyper request for `authority`.
    fn into_request(self) -> Result<Request<BoxBody<Bytes, Infallible>>> {
        let (authority, path) = split_url(&self.url)?;
        let mut builder = Request::builder().method(self.method).uri(path);
        let mut has_host = false;
        for (name, value) in &self.headers {
            has_host |= name.eq_ignore_ascii_case("host");
            builder = builder.header(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_bytes(value)?,
            );
        }
        if !has_host {
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

/// One kept-alive HTTP/1.1 connection for several requests in a row (as a browser does).
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<BoxBody<Bytes, Infallible>>,
    task: tokio::task::JoinHandle<()>,
}

impl Conn {
    /// Connects to `authority` ("ip:port").
    pub async fn open(authority: &str) -> Result<Conn> {
        let stream = TcpStream::connect(authority)
            .await
            .with_context(|| format!("connect {authority}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1 handshake")?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender, task })
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
        self.sender.is_closed()
    }

    async fn exchange(&mut self, req: Req) -> Result<Resp> {
        let req = req.into_request()?;
        self.sender
            .ready()
            .await
            .context("connection not reusable")?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .context("send request")?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("read response body")?
            .to_bytes();
        Ok(Resp {
            status,
            headers,
            body,
        })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// "http://host:port/path?q" -> ("host:port", "/path?q").
fn split_url(url: &str) -> Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs: {url}"))?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
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
