//! The upstream of `bench/run.sh`: as fast as a local server gets (one thread, keep-alive), so
//! that the benchmark measures Envoy and its filters. Every request's body is read in full, then
//! answered `200 ok`. With `--version 1`, paths under `/mismatch` answer the mismatch signal
//! instead (409, `x-session-version: 2`, `x-app-version: 1`); run a `--version 2` copy as the
//! peer that mixmode re-dispatches those to.
//!
//! usage: bench-upstream [--listen 127.0.0.1:0] [--version 1|2]; prints the bound address.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::{anyhow, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn answer(version: u8, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mismatch = version == 1 && req.uri().path().starts_with("/mismatch");
    // Drain the body: a real app reads what it is sent.
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    if mismatch {
        h.insert(
            "x-session-version",
            hyper::header::HeaderValue::from_static("2"),
        );
        h.insert(
            "x-app-version",
            hyper::header::HeaderValue::from_static("1"),
        );
        *resp.status_mut() = StatusCode::CONFLICT;
    }
    Ok(resp)
}

fn main() -> Result<()> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut version = 2u8;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or_else(|| anyhow!("{a} needs a value"))?;
        match a.as_str() {
            "--listen" => listen = v.parse()?,
            "--version" => version = v.parse()?,
            _ => return Err(anyhow!("unknown argument {a}")),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        let mut out = std::io::stdout();
        writeln!(out, "{}", listener.local_addr()?)?;
        out.flush()?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| answer(version, req)),
                    )
                    .await;
            });
        }
    })
}
