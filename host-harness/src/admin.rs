//! The admin endpoint: `/stats` (Envoy's text format, `wasmcustom.` prefix) and `/logs`.

use crate::host::PluginEnv;
use crate::shared::lock;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub(crate) fn stats_text(env: &PluginEnv) -> String {
    let mut out = String::new();
    for (name, value) in lock(&env.metrics).snapshot() {
        out.push_str(&format!("wasmcustom.{name}: {value}\n"));
    }
    out
}

fn logs_text(env: &PluginEnv) -> String {
    let mut out = String::new();
    for l in lock(&env.logs).iter() {
        out.push_str(&format!("[{}][{}] {}\n", l.level, l.instance, l.message));
    }
    out
}

pub(crate) async fn serve(
    listener: TcpListener,
    env: Arc<PluginEnv>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let env = env.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let env = env.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/stats" => (200, stats_text(&env)),
                        "/logs" => (200, logs_text(&env)),
                        _ => (404, "try /stats or /logs\n".to_string()),
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
