//! Which server was live as which version when: the soak judges each failed transaction by it
//! (a version with no live server is not mixmode's loss), and the pool reports to it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// When each server was registered and answering as which version, in seconds since `t0`.
#[derive(Clone)]
pub struct Liveness {
    t0: Instant,
    spans: Arc<Mutex<Vec<Span>>>,
}

#[derive(Debug, Clone)]
struct Span {
    addr: SocketAddr,
    version: String,
    from: f64,
    to: Option<f64>,
}

impl Liveness {
    pub fn new(t0: Instant) -> Self {
        Liveness {
            t0,
            spans: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    pub fn up(&self, addr: SocketAddr, version: &str) {
        let now = self.now();
        if let Ok(mut s) = self.spans.lock() {
            s.push(Span {
                addr,
                version: version.to_string(),
                from: now,
                to: None,
            });
        }
    }

    pub fn down(&self, addr: SocketAddr) {
        let now = self.now();
        if let Ok(mut s) = self.spans.lock() {
            for span in s.iter_mut().filter(|s| s.addr == addr && s.to.is_none()) {
                span.to = Some(now);
            }
        }
    }

    /// Whether some server of `version` was live during all of `[from, to]`.
    pub fn live(&self, version: &str, from: f64, to: f64) -> bool {
        self.spans.lock().is_ok_and(|s| {
            s.iter()
                .any(|s| s.version == version && s.from <= from && s.to.is_none_or(|end| end >= to))
        })
    }
}
