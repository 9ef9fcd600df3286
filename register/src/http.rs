//! One HTTP/1.1 request over a fresh plain-TCP connection: what etcd's JSON gateway and the
//! Envoys' demand listings are read with. Calls are seconds apart, and a fresh connection
//! notices at once that the other side restarted on the same port.

use std::fmt;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{header, Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::Endpoint;

/// Sends one request and reads the whole answer (at most `max_bytes` of body). Every failure
/// (connect, send, a body over the limit) is one message: the callers treat them alike.
pub(crate) async fn send(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    headers: &[(header::HeaderName, &str)],
    body: Bytes,
    max_bytes: usize,
) -> Result<(u16, Bytes), String> {
    let text = |e: &dyn fmt::Display| e.to_string();
    let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| text(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| text(&e))?;
    let driver = tokio::spawn(conn);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, endpoint.authority());
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| format!("building request: {e}"))?;
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| text(&e))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), max_bytes)
            .collect()
            .await
            .map_err(|e| text(&*e))?
            .to_bytes();
        Ok((status, bytes))
    }
    .await;
    driver.abort();
    result
}
