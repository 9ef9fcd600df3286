//! A listener's upstream cluster: a pool of hosts balanced round robin, whose members can be
//! taken out and put back while the harness runs (what EDS does to an Envoy cluster), with
//! Envoy's header-based stateful session (`envoy.http.stateful_session.header`) as an option.

use crate::calls::Endpoint;
use crate::shared::lock;
use crate::types::Headers;
use base64::Engine as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The hosts behind one listener. Obtained from [`crate::RunningHarness::pool`].
pub struct UpstreamPool {
    members: Mutex<Vec<Arc<Endpoint>>>,
    next: AtomicUsize,
    session_header: Option<String>,
}

/// The host a request goes to.
pub(crate) struct Pick {
    pub endpoint: Arc<Endpoint>,
    /// The host the request's session header names, member or not: the stateful session
    /// writes the response header when the host that answered is not this one.
    pub requested: Option<SocketAddr>,
}

#[cfg(test)]
impl Pick {
    /// The request's session header chose this host (a hint is honoured only for a member).
    fn hinted(&self) -> bool {
        self.requested == Some(self.endpoint.addr)
    }
}

/// How many more times a retry re-picks a host it already tried before taking it anyway
/// (envoy.yaml's `host_selection_retry_max_attempts: 3` with the `previous_hosts` predicate).
const RETRY_HOST_SELECTIONS: usize = 3;

impl UpstreamPool {
    pub(crate) fn new(members: &[SocketAddr], session_header: Option<String>) -> Self {
        let mut list: Vec<Arc<Endpoint>> = Vec::new();
        for m in members {
            if !list.iter().any(|e| e.addr == *m) {
                list.push(Arc::new(Endpoint::new(*m)));
            }
        }
        UpstreamPool {
            members: Mutex::new(list),
            next: AtomicUsize::new(0),
            session_header: session_header.map(|h| h.to_ascii_lowercase()),
        }
    }

    /// The members, in the order round robin visits them.
    pub fn members(&self) -> Vec<SocketAddr> {
        lock(&self.members).iter().map(|e| e.addr).collect()
    }

    /// Puts a host (back) into the pool; false if it is already a member.
    pub fn add(&self, addr: SocketAddr) -> bool {
        let mut members = lock(&self.members);
        if members.iter().any(|e| e.addr == addr) {
            return false;
        }
        members.push(Arc::new(Endpoint::new(addr)));
        true
    }

    /// Takes a host out: new requests no longer go to it (requests under way finish); false
    /// if it was not a member.
    pub fn remove(&self, addr: SocketAddr) -> bool {
        let mut members = lock(&self.members);
        let before = members.len();
        members.retain(|e| e.addr != addr);
        members.len() != before
    }

    /// The stateful session header, when the listener has one.
    pub fn session_header(&self) -> Option<&str> {
        self.session_header.as_deref()
    }

    /// Envoy's choice: the member the session header names (base64 of "ip:port"), else the
    /// next in round robin. `None` for an empty pool (Envoy: 503 "no healthy upstream").
    pub(crate) fn pick(&self, request: &Headers) -> Option<Pick> {
        let members = lock(&self.members);
        let requested = self.session_header.as_ref().and_then(|name| {
            request
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
                .and_then(|(_, v)| decode_host(v))
        });
        if let Some(e) = requested.and_then(|addr| members.iter().find(|e| e.addr == addr)) {
            return Some(Pick {
                endpoint: e.clone(),
                requested,
            });
        }
        self.round_robin(&members).map(|endpoint| Pick {
            endpoint,
            requested,
        })
    }

    /// The host of a retry after a connect failure: round robin without the session's hint
    /// (docs/design.md#version-affinity: observed on Envoy 1.40), re-picked while it is one
    /// already `tried` (Envoy's `previous_hosts` predicate), at most [`RETRY_HOST_SELECTIONS`]
    /// times, then taken anyway. `None` for an empty pool.
    pub(crate) fn pick_retry(&self, tried: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let members = lock(&self.members);
        let mut chosen = self.round_robin(&members)?;
        for _ in 0..RETRY_HOST_SELECTIONS {
            if !tried.contains(&chosen.addr) {
                break;
            }
            chosen = self.round_robin(&members)?;
        }
        Some(chosen)
    }

    fn round_robin(&self, members: &[Arc<Endpoint>]) -> Option<Arc<Endpoint>> {
        if members.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % members.len();
        members.get(n).cloned()
    }
}

/// base64("ip:port"), as the header-based stateful session writes and reads it.
pub fn encode_host(addr: SocketAddr) -> String {
    base64::engine::general_purpose::STANDARD.encode(addr.to_string())
}

fn decode_host(value: &[u8]) -> Option<SocketAddr> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim_ascii())
        .ok()?;
    std::str::from_utf8(&bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn hint(name: &str, value: &str) -> Headers {
        vec![(name.as_bytes().to_vec(), value.as_bytes().to_vec())]
    }

    #[test]
    fn round_robin_visits_every_member_in_turn() {
        let p = UpstreamPool::new(&[a(1), a(2), a(3)], None);
        let got: Vec<u16> = (0..6)
            .map(|_| p.pick(&Vec::new()).unwrap().endpoint.addr.port())
            .collect();
        assert_eq!(got, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn members_taken_out_get_nothing_and_come_back() {
        let p = UpstreamPool::new(&[a(1), a(2)], None);
        assert!(p.remove(a(1)));
        assert!(!p.remove(a(1)));
        for _ in 0..4 {
            assert_eq!(p.pick(&Vec::new()).unwrap().endpoint.addr, a(2));
        }
        assert!(p.remove(a(2)));
        assert!(p.pick(&Vec::new()).is_none());
        assert!(p.add(a(1)));
        assert!(!p.add(a(1)));
        assert_eq!(p.members(), vec![a(1)]);
        assert_eq!(p.pick(&Vec::new()).unwrap().endpoint.addr, a(1));
    }

    #[test]
    fn a_hint_naming_a_member_wins_anything_else_is_round_robin() {
        let p = UpstreamPool::new(&[a(1), a(2), a(3)], Some("X-Host".into()));
        assert_eq!(p.session_header(), Some("x-host"));
        let to3 = hint("x-host", &encode_host(a(3)));
        for _ in 0..4 {
            let pick = p.pick(&to3).unwrap();
            assert_eq!(pick.endpoint.addr, a(3));
            assert!(pick.hinted());
        }
        // Outside the pool, taken out, or not base64 of an address: round robin.
        for bad in [
            encode_host(a(9)),
            "not base64!".into(),
            encode_host(a(3)) + "x",
        ] {
            let pick = p.pick(&hint("x-host", &bad)).unwrap();
            assert!(!pick.hinted(), "{bad}");
        }
        p.remove(a(3));
        let gone = p.pick(&to3).unwrap();
        assert!(!gone.hinted());
        assert_eq!(gone.requested, Some(a(3)), "the header is still read");
        // Without a configured header the hint means nothing.
        let plain = UpstreamPool::new(&[a(1), a(2), a(3)], None);
        assert!(!plain.pick(&to3).unwrap().hinted());
    }

    #[test]
    fn a_retry_avoids_the_hosts_tried_and_ignores_the_hint() {
        let p = UpstreamPool::new(&[a(1), a(2), a(3)], Some("x-host".into()));
        for _ in 0..6 {
            let next = p.pick_retry(&[a(2)]).unwrap();
            assert_ne!(next.addr, a(2));
        }
        // Every member tried: after the re-picks Envoy takes the last host chosen.
        assert!(p.pick_retry(&[a(1), a(2), a(3)]).is_some());
        let empty = UpstreamPool::new(&[], None);
        assert!(empty.pick_retry(&[a(1)]).is_none());
    }

    #[test]
    fn hosts_are_written_as_envoy_writes_them() {
        // docs/design.md#version-affinity: base64("127.0.0.1:18083").
        assert_eq!(encode_host(a(18083)), "MTI3LjAuMC4xOjE4MDgz");
        assert_eq!(decode_host(b"MTI3LjAuMC4xOjE4MDgz"), Some(a(18083)));
    }
}
