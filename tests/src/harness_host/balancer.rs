//! Envoy's `app` cluster balances each request round robin over the pool; a harness listener
//! forwards to one upstream and keeps its connection alive, so a TCP splitter would pin every
//! request to one server. This forwards per request instead: one fresh connection to the next
//! server for each request, headers, body and trailers passed through as hyper gives them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub(super) struct RoundRobin {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RoundRobin {
    pub(super) async fn start(pool: Vec<SocketAddr>) -> Result<RoundRobin> {
        if pool.is_empty() {
            return Err(anyhow!("empty pool"));
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let pool = Arc::new(pool);
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (pool, next) = (pool.clone(), next.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let target = pool[n % pool.len()];
                        forward(target, req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(RoundRobin { addr, task })
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(target: SocketAddr, req: Request<Incoming>) -> Result<Response<Incoming>> {
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("connect {target}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}
