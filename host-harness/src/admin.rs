//! The admin endpoint: `/stats` (Envoy's text format, `wasmcustom.` prefix), `/logs`, and the
//! listeners' pools (`/pools`; `POST /pools/remove` and `/pools/add` with `listener=N` and
//! `address=IP:PORT`, what EDS would change).

use crate::host::PluginEnv;
use crate::pool::UpstreamPool;
use crate::shared::lock;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Envoy's `/stats` text: counters and gauges, then histograms (`P0(interval,cumulative) …`).
pub(crate) fn stats_text(env: &PluginEnv) -> String {
    let metrics = lock(&env.metrics);
    let mut out = String::new();
    for (name, value) in metrics.snapshot() {
        out.push_str(&format!("wasmcustom.{name}: {value}\n"));
    }
    for (name, h) in metrics.histograms() {
        out.push_str(&format!("wasmcustom.{name}: {}\n", h.stats_value()));
    }
    out
}

fn logs_text(env: &PluginEnv) -> String {
    let mut out = String::new();
    for l in lock(&env.logs).iter() {
        out.push_str(&format!(
            "[{}][{} {}] {}\n",
            l.level, l.plugin, l.instance, l.message
        ));
    }
    out
}

pub(crate) type Pools = Arc<Vec<Option<Arc<UpstreamPool>>>>;

fn pools_text(pools: &Pools) -> String {
    let mut out = String::new();
    for (i, p) in pools.iter().enumerate() {
        if let Some(p) = p {
            let members: Vec<String> = p.members().iter().map(|m| m.to_string()).collect();
            out.push_str(&format!("listener {i}: {}\n", members.join(" ")));
        }
    }
    out
}

/// `listener=N&address=IP:PORT` → the pool and the address, or a 400 reason.
fn pool_query(pools: &Pools, query: &str) -> Result<(Arc<UpstreamPool>, SocketAddr), String> {
    let mut listener = None;
    let mut address = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("listener", v)) => listener = Some(v),
            Some(("address", v)) => address = Some(v),
            _ => {}
        }
    }
    let listener = listener.ok_or("missing listener=N")?;
    let index: usize = listener
        .parse()
        .map_err(|_| format!("listener={listener} is not a number"))?;
    let pool = pools
        .get(index)
        .cloned()
        .flatten()
        .ok_or(format!("listener {index} has no pool"))?;
    let address = address.ok_or("missing address=IP:PORT")?;
    let addr = address
        .parse()
        .map_err(|_| format!("address={address} is not IP:PORT"))?;
    Ok((pool, addr))
}

fn pool_change(pools: &Pools, query: &str, add: bool) -> (u16, String) {
    match pool_query(pools, query) {
        Err(reason) => (400, format!("{reason}\n")),
        Ok((pool, addr)) => {
            let changed = if add {
                pool.add(addr)
            } else {
                pool.remove(addr)
            };
            match (changed, add) {
                (true, true) => (200, format!("added {addr}\n")),
                (true, false) => (200, format!("removed {addr}\n")),
                (false, true) => (409, format!("{addr} is already a member\n")),
                (false, false) => (404, format!("{addr} is not a member\n")),
            }
        }
    }
}

pub(crate) async fn serve(
    listener: TcpListener,
    env: Arc<PluginEnv>,
    pools: Pools,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let env = env.clone();
        let pools = pools.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let env = env.clone();
                let pools = pools.clone();
                async move {
                    let query = req.uri().query().unwrap_or_default();
                    let post = req.method() == hyper::Method::POST;
                    let (status, body) = match req.uri().path() {
                        "/stats" => (200, stats_text(&env)),
                        "/logs" => (200, logs_text(&env)),
                        "/pools" => (200, pools_text(&pools)),
                        "/pools/add" if post => pool_change(&pools, query, true),
                        "/pools/remove" if post => pool_change(&pools, query, false),
                        "/pools/add" | "/pools/remove" => (405, "use POST\n".to_string()),
                        _ => (404, "try /stats, /logs or /pools\n".to_string()),
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() =
                        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::NOT_FOUND);
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
