//! The re-dispatch state machine (docs/design.md#re-dispatch), sans IO: the glue feeds it events and carries
//! out the actions it returns.

use crate::core::affinity;
use crate::core::config::{Config, Detect};
use crate::core::counter::Counter;
use crate::core::pairs::find_pair;
pub use crate::core::peers::{PeerSource, RegistryPeers};
use crate::core::replay::{HopByHop, Replay, ReplayState, Request};
use crate::core::retry::{Failure, Policy};
use crate::core::select::mix;
use crate::core::signal::{self, Verdict};

pub const MIXMODE_HEADER: &str = "x-mixmode";
/// Every answer that came from an upstream carries it; Envoy's own 503/504 do not.
pub const SERVICE_TIME_HEADER: &[u8] = b"x-envoy-upstream-service-time";

pub type Headers = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Let the upstream response through untouched.
    Continue,
    /// Let the upstream response through with `x-mixmode: <value>` (resuming it if held).
    PassThrough(&'static str),
    /// Send attempt `attempt` to `peer` (headers: `Replay::attempt_headers`, body: the copy).
    Dispatch {
        peer: String,
        attempt: u32,
        timeout_ms: u32,
    },
    /// Answer the client with the peer's response.
    Reply {
        status: u16,
        headers: Headers,
        body: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    pub counters: Vec<Counter>,
}

impl Step {
    fn new(action: Action) -> Self {
        Step {
            action,
            counters: Vec::new(),
        }
    }
    fn count(mut self, c: Counter) -> Self {
        self.counters.push(c);
        self
    }
}

/// What the response headers say.
pub struct ResponseFacts<'a> {
    pub status: u16,
    pub session_version: Option<&'a [u8]>,
    pub app_version: Option<&'a [u8]>,
}

/// A peer's answer to a dispatched call.
pub struct CallResponse {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// One request's re-dispatch, from the mismatch to the final answer.
#[derive(Debug)]
pub struct Redispatcher {
    policy: Policy,
    request: Request,
    session_version: String,
    started_ms: u64,
    attempts: u32,
    /// The server that failed, then every peer tried.
    excluded: Vec<String>,
    seed: u64,
    /// With affinity: the `set-cookie` a rescued reply carries (docs/design.md#version-affinity).
    set_cookie: Option<Vec<u8>>,
}

/// Decides on the upstream's response headers. Returns the re-dispatch to keep when the action is
/// a `Dispatch`.
pub fn on_response_headers(
    cfg: &Config,
    replay: &Replay,
    facts: &ResponseFacts,
    failed_upstream: Option<String>,
    now_ms: u64,
    seed: u64,
    peers: &mut dyn PeerSource,
) -> (Option<Redispatcher>, Step) {
    // A replayed request is answered as is: never re-dispatched again (loop guard).
    if replay.is_attempt() {
        return (None, Step::new(Action::Continue));
    }
    let session_version = match signal::classify(
        &cfg.detect,
        facts.status,
        facts.session_version,
        facts.app_version,
    ) {
        Verdict::Unrelated => return (None, Step::new(Action::Continue)),
        Verdict::NotVersionError => {
            return (
                None,
                Step::new(Action::Continue).count(Counter::NotVersionError),
            )
        }
        Verdict::Mismatch { session_version } => session_version,
    };
    let detected = Step::new(Action::Continue).count(Counter::MismatchDetected);
    let request = match replay.request() {
        Err(ReplayState::TooLarge) => return (None, detected.count(Counter::ReplayTooLarge)),
        Err(_) => return (None, detected.count(Counter::ReplayUnsupported)),
        // The upstream answered before the whole body arrived: there is nothing whole to replay.
        Ok(_) if !replay.body_complete => {
            return (None, detected.count(Counter::ReplayUnsupported))
        }
        Ok(r) => r,
    };
    // A version no server can register: as if the registry had no peer of it.
    let Some(session_version) = session_version else {
        return (
            None,
            Step::new(Action::PassThrough("no-peer"))
                .count(Counter::MismatchDetected)
                .count(Counter::NoPeer),
        );
    };
    let mut request = request;
    if let Some(a) = &cfg.affinity {
        // A client's own host hint is no part of the request: the filter removed it on the way
        // in, but the replay copy was taken before.
        request
            .headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case(&a.host_header));
    }
    let mut r = Redispatcher {
        policy: Policy::from(&cfg.redispatch),
        request,
        session_version,
        started_ms: now_ms,
        attempts: 0,
        excluded: failed_upstream.into_iter().collect(),
        seed,
        set_cookie: None,
    };
    r.set_cookie = cfg
        .affinity
        .as_ref()
        .and_then(|a| affinity::set_cookie(a, &r.session_version));
    let mut step = r.next_attempt(now_ms, peers);
    step.counters.insert(0, Counter::MismatchDetected);
    let keep = matches!(step.action, Action::Dispatch { .. });
    (keep.then_some(r), step)
}

impl Redispatcher {
    pub fn session_version(&self) -> &str {
        &self.session_version
    }

    /// The headers of attempt `n` to `peer`.
    pub fn attempt_headers(&self, peer: &str, n: u32) -> Vec<(&str, String)> {
        self.request.attempt_headers(peer, n)
    }

    fn next_attempt(&mut self, now_ms: u64, peers: &mut dyn PeerSource) -> Step {
        let (no_candidate, counter) = if self.attempts == 0 {
            ("no-peer", Counter::NoPeer)
        } else {
            ("exhausted", Counter::Exhausted)
        };
        let Some(timeout_ms) = self.policy.next_timeout(self.started_ms, now_ms) else {
            return Step::new(Action::PassThrough(no_candidate)).count(counter);
        };
        if self.attempts >= self.policy.max_attempts {
            return Step::new(Action::PassThrough("exhausted")).count(Counter::Exhausted);
        }
        let random = mix(self.seed ^ u64::from(self.attempts));
        match peers.pick(&self.session_version, &self.excluded, random) {
            None => Step::new(Action::PassThrough(no_candidate)).count(counter),
            Some(peer) => {
                self.attempts = self.attempts.saturating_add(1);
                self.excluded.push(peer.clone());
                Step::new(Action::Dispatch {
                    peer,
                    attempt: self.attempts,
                    timeout_ms,
                })
            }
        }
    }

    fn failed(&mut self, why: Failure, now_ms: u64, peers: &mut dyn PeerSource) -> Step {
        let mut step = if self.policy.may_try_again(
            self.attempts,
            self.started_ms,
            now_ms,
            &self.request.method,
            why,
        ) {
            self.next_attempt(now_ms, peers)
        } else {
            Step::new(Action::PassThrough("exhausted")).count(Counter::Exhausted)
        };
        step.counters.insert(0, Counter::AttemptFailed);
        step
    }

    /// The host refused the last `Dispatch` at once; no callback will come for it.
    pub fn on_dispatch_refused(&mut self, now_ms: u64, peers: &mut dyn PeerSource) -> Step {
        self.failed(Failure::Refused, now_ms, peers)
    }

    /// The call's answer: `None` when the host reports it without headers (a stream reset; see
    /// `Failure::ResetWhileAnswering` for when Envoy does that).
    pub fn on_call_response(
        &mut self,
        detect: &Detect,
        response: Option<CallResponse>,
        now_ms: u64,
        peers: &mut dyn PeerSource,
    ) -> Step {
        let Some(resp) = response else {
            return self.failed(Failure::ResetWhileAnswering, now_ms, peers);
        };
        if find_pair(&resp.headers, SERVICE_TIME_HEADER).is_none() {
            let why = if resp.status == 504 {
                Failure::TimedOut
            } else {
                Failure::Unreachable
            };
            return self.failed(why, now_ms, peers);
        }
        let verdict = signal::classify(
            detect,
            resp.status,
            find_pair(&resp.headers, detect.session_version_header.as_bytes()),
            find_pair(&resp.headers, detect.app_version_header.as_bytes()),
        );
        if matches!(verdict, Verdict::Mismatch { .. }) {
            return self.failed(Failure::PeerMismatch, now_ms, peers);
        }
        let hop = HopByHop::of(
            resp.headers
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice())),
        );
        let mut headers: Headers = resp
            .headers
            .into_iter()
            .filter(|(k, _)| {
                !k.starts_with(b":")
                    && !hop.drops(k)
                    && !k.eq_ignore_ascii_case(b"content-length")
                    && !k.eq_ignore_ascii_case(MIXMODE_HEADER.as_bytes())
            })
            .collect();
        headers.push((MIXMODE_HEADER.as_bytes().to_vec(), b"redispatched".to_vec()));
        // Only here: the final answer came from a peer of the session's version.
        if let Some(cookie) = &self.set_cookie {
            headers.push((b"set-cookie".to_vec(), cookie.clone()));
        }
        Step::new(Action::Reply {
            status: resp.status,
            headers,
            body: resp.body,
        })
        .count(Counter::RedispatchOk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Selection;
    use crate::core::lookup::LookupCache;
    use crate::core::pairs::serialize_pairs;
    use crate::core::registry::{upsert, Ident, Limits, MemoryStore, Scope};
    use Counter::*;

    struct List(Vec<&'static str>);
    impl PeerSource for List {
        fn pick(&mut self, _v: &str, exclude: &[String], random: u64) -> Option<String> {
            let c: Vec<&&str> = self
                .0
                .iter()
                .filter(|p| !exclude.iter().any(|x| x == **p))
                .collect();
            if c.is_empty() {
                None
            } else {
                Some(c[(random % c.len() as u64) as usize].to_string())
            }
        }
    }

    fn cfg(extra: &str) -> Config {
        Config::parse(format!(r#"{{"app":"checkout"{extra}}}"#).as_bytes()).unwrap()
    }

    fn raw(list: &[(&str, &str)]) -> Vec<u8> {
        let v: Vec<(&[u8], &[u8])> = list
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        serialize_pairs(&v).unwrap()
    }

    fn replay(method: &str, extra: &[(&str, &str)]) -> Replay {
        let mut pairs = vec![(":method", method), (":path", "/"), (":authority", "shop")];
        pairs.extend_from_slice(extra);
        Replay::new(raw(&pairs), true, 100)
    }

    const MISMATCH: ResponseFacts<'static> = ResponseFacts {
        status: 409,
        session_version: Some(b"2"),
        app_version: Some(b"1"),
    };

    fn peer_answer(status: u16, extra: &[(&str, &str)]) -> Option<CallResponse> {
        let mut headers: Headers = vec![
            (b":status".to_vec(), status.to_string().into_bytes()),
            (b"x-envoy-upstream-service-time".to_vec(), b"1".to_vec()),
        ];
        headers.extend(
            extra
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())),
        );
        Some(CallResponse {
            status,
            headers,
            body: b"peer body".to_vec(),
        })
    }

    fn envoy_answer(status: u16) -> Option<CallResponse> {
        Some(CallResponse {
            status,
            headers: vec![(b":status".to_vec(), status.to_string().into_bytes())],
            body: b"upstream connect error".to_vec(),
        })
    }

    fn start(c: &Config, r: &Replay, peers: &mut dyn PeerSource) -> (Option<Redispatcher>, Step) {
        on_response_headers(c, r, &MISMATCH, Some("10.0.0.1:80".into()), 0, 7, peers)
    }

    fn dispatched(step: &Step) -> (String, u32) {
        match &step.action {
            Action::Dispatch { peer, attempt, .. } => (peer.clone(), *attempt),
            other => panic!("expected a dispatch, got {other:?}"),
        }
    }

    #[test]
    fn happy_path_replies_with_the_peer_answer() {
        let c = cfg("");
        let mut peers = List(vec!["10.0.0.2:80"]);
        let (sm, step) = start(&c, &replay("GET", &[]), &mut peers);
        let mut sm = sm.unwrap();
        assert_eq!(step.counters, vec![MismatchDetected]);
        assert_eq!(dispatched(&step), ("10.0.0.2:80".into(), 1));
        let resp = peer_answer(
            200,
            &[
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("transfer-encoding", "chunked"),
                ("connection", "close"),
                ("content-length", "9"),
                ("x-mixmode", "spoof"),
            ],
        );
        let step = sm.on_call_response(&c.detect, resp, 1, &mut peers);
        assert_eq!(step.counters, vec![RedispatchOk]);
        let Action::Reply {
            status,
            headers,
            body,
        } = step.action
        else {
            panic!()
        };
        assert_eq!(status, 200);
        assert_eq!(body, b"peer body");
        let names: Vec<&[u8]> = headers.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(
            names,
            vec![
                &b"x-envoy-upstream-service-time"[..],
                b"set-cookie",
                b"set-cookie",
                b"x-mixmode"
            ]
        );
        assert_eq!(headers.last().unwrap().1, b"redispatched");
    }

    /// RFC 9110 §7.6.1: what the peer's own `Connection` header lists does not reach the client.
    #[test]
    fn headers_the_peer_names_in_connection_are_dropped() {
        let c = cfg("");
        let mut peers = List(vec!["10.0.0.2:80"]);
        let (sm, _) = start(&c, &replay("GET", &[]), &mut peers);
        let resp = peer_answer(
            200,
            &[
                ("connection", "x-peer-hop, Keep-Alive"),
                ("X-Peer-Hop", "internal"),
                ("x-kept", "1"),
            ],
        );
        let step = sm.unwrap().on_call_response(&c.detect, resp, 1, &mut peers);
        let Action::Reply { headers, .. } = step.action else {
            panic!("{step:?}")
        };
        let names: Vec<&[u8]> = headers.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(
            names,
            vec![
                &b"x-envoy-upstream-service-time"[..],
                b"x-kept",
                b"x-mixmode"
            ]
        );
    }

    /// A request that ended with trailers is not replayed: its mismatch passes through.
    #[test]
    fn a_request_with_trailers_is_not_replayed() {
        let c = cfg("");
        let mut peers = List(vec!["10.0.0.2:80"]);
        let mut r = Replay::new(raw(&[(":method", "POST"), (":path", "/")]), false, 100);
        r.push_body(b"abc", false);
        r.push_trailers();
        let (sm, step) = start(&c, &r, &mut peers);
        assert!(sm.is_none());
        assert_eq!(step.action, Action::Continue);
        assert_eq!(step.counters, vec![MismatchDetected, ReplayUnsupported]);
    }

    /// docs/design.md#registry-invariants: a request whose copy did not fit the VM's replay budget is counted
    /// `replay_too_large` at its mismatch, and passes through.
    #[test]
    fn a_request_past_the_replay_budget_is_too_large() {
        use crate::core::budget::{Budget, Hold};
        let c = cfg("");
        let mut peers = List(vec!["10.0.0.2:80"]);
        let budget = std::rc::Rc::new(Budget::default());
        let headers = raw(&[(":method", "POST"), (":path", "/")]);
        let mut first =
            Replay::budgeted(headers.clone(), false, 100, Hold::new(budget.clone(), 150));
        first.push_body(&[1; 100], true);
        let mut second = Replay::budgeted(headers, false, 100, Hold::new(budget.clone(), 150));
        second.push_body(&[2; 100], true);
        let (sm, step) = start(&c, &second, &mut peers);
        assert!(sm.is_none());
        assert_eq!(step.action, Action::Continue);
        assert_eq!(step.counters, vec![MismatchDetected, ReplayTooLarge]);
        let (sm, _) = start(&c, &first, &mut peers);
        assert!(sm.is_some());
    }

    /// docs/design.md#the-mismatch-signal: a session version with a space is a mismatch; no server can register it, so
    /// it is answered `no-peer` without a lookup (the list below would offer a peer).
    #[test]
    fn an_unregistrable_session_version_is_a_mismatch_without_peer() {
        let c = cfg("");
        let mut peers = List(vec!["10.0.0.2:80"]);
        let facts = ResponseFacts {
            status: 409,
            session_version: Some(b"2 beta"),
            app_version: Some(b"1"),
        };
        let (sm, step) =
            on_response_headers(&c, &replay("GET", &[]), &facts, None, 0, 0, &mut peers);
        assert!(sm.is_none());
        assert_eq!(step.action, Action::PassThrough("no-peer"));
        assert_eq!(step.counters, vec![MismatchDetected, NoPeer]);
        let empty_app = ResponseFacts {
            status: 409,
            session_version: Some(b"2"),
            app_version: Some(b""),
        };
        let (sm, step) =
            on_response_headers(&c, &replay("GET", &[]), &empty_app, None, 0, 0, &mut peers);
        assert!(sm.is_some());
        assert_eq!(dispatched(&step), ("10.0.0.2:80".into(), 1));
    }

    #[test]
    fn never_the_failed_server() {
        let c = cfg("");
        let mut peers = List(vec!["10.0.0.1:80"]);
        let (sm, step) = start(&c, &replay("GET", &[]), &mut peers);
        assert!(sm.is_none());
        assert_eq!(step.action, Action::PassThrough("no-peer"));
        assert_eq!(step.counters, vec![MismatchDetected, NoPeer]);
    }

    #[test]
    fn unreachable_peer_then_next_one() {
        let c = cfg("");
        let mut peers = List(vec!["10.0.0.2:80", "10.0.0.3:80"]);
        let (sm, step) = start(&c, &replay("POST", &[]), &mut peers);
        let mut sm = sm.unwrap();
        let (first, _) = dispatched(&step);
        let step = sm.on_call_response(&c.detect, envoy_answer(503), 1, &mut peers);
        assert_eq!(step.counters, vec![AttemptFailed]);
        let (second, n) = dispatched(&step);
        assert_ne!(first, second);
        assert_eq!(n, 2);
        let step = sm.on_call_response(&c.detect, envoy_answer(503), 2, &mut peers);
        assert_eq!(step.action, Action::PassThrough("exhausted"));
        assert_eq!(step.counters, vec![AttemptFailed, Exhausted]);
    }

    #[test]
    fn peer_mismatch_is_a_failed_attempt_but_a_peer_error_is_final() {
        let c = cfg("");
        let mut peers = List(vec!["10.0.0.2:80", "10.0.0.3:80"]);
        let (sm, _) = start(&c, &replay("GET", &[]), &mut peers);
        let mut sm = sm.unwrap();
        let step = sm.on_call_response(
            &c.detect,
            peer_answer(409, &[("x-session-version", "2"), ("x-app-version", "3")]),
            1,
            &mut peers,
        );
        assert_eq!(step.counters, vec![AttemptFailed]);
        dispatched(&step);
        let step = sm.on_call_response(&c.detect, peer_answer(500, &[]), 2, &mut peers);
        assert_eq!(step.counters, vec![RedispatchOk]);
        assert!(matches!(step.action, Action::Reply { status: 500, .. }));
    }

    #[test]
    fn timed_out_post_is_not_sent_elsewhere() {
        let c = cfg("");
        let mut peers = List(vec!["10.0.0.2:80", "10.0.0.3:80"]);
        let (sm, _) = start(&c, &replay("POST", &[]), &mut peers);
        let mut sm = sm.unwrap();
        let step = sm.on_call_response(&c.detect, envoy_answer(504), 1, &mut peers);
        assert_eq!(step.action, Action::PassThrough("exhausted"));
        // A stream reset reported without headers: the peer had begun answering, its app ran.
        let (sm, _) = start(&c, &replay("PATCH", &[]), &mut peers);
        let step = sm.unwrap().on_call_response(&c.detect, None, 1, &mut peers);
        assert_eq!(step.action, Action::PassThrough("exhausted"));
        // GET is idempotent.
        let (sm, _) = start(&c, &replay("GET", &[]), &mut peers);
        let step = sm
            .unwrap()
            .on_call_response(&c.detect, envoy_answer(504), 1, &mut peers);
        dispatched(&step);
        // Opt-in.
        let c = cfg(r#","redispatch":{"retry_timeouts_for_all_methods":true}"#);
        let (sm, _) = start(&c, &replay("POST", &[]), &mut peers);
        let step = sm
            .unwrap()
            .on_call_response(&c.detect, envoy_answer(504), 1, &mut peers);
        dispatched(&step);
    }

    #[test]
    fn attempts_and_deadline_are_bounded() {
        let c =
            cfg(r#","redispatch":{"max_attempts":2,"deadline_ms":100,"attempt_timeout_ms":70}"#);
        let mut peers = List(vec!["10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"]);
        let (sm, step) = start(&c, &replay("GET", &[]), &mut peers);
        let mut sm = sm.unwrap();
        assert!(matches!(
            step.action,
            Action::Dispatch { timeout_ms: 70, .. }
        ));
        let step = sm.on_call_response(&c.detect, envoy_answer(503), 60, &mut peers);
        assert!(matches!(
            step.action,
            Action::Dispatch {
                timeout_ms: 40,
                attempt: 2,
                ..
            }
        ));
        let step = sm.on_call_response(&c.detect, envoy_answer(503), 61, &mut peers);
        assert_eq!(step.action, Action::PassThrough("exhausted"));

        let (sm, _) = start(&c, &replay("GET", &[]), &mut peers);
        let step = sm
            .unwrap()
            .on_call_response(&c.detect, envoy_answer(503), 100, &mut peers);
        assert_eq!(step.action, Action::PassThrough("exhausted"));
    }

    #[test]
    fn refused_dispatch_moves_on() {
        let c = cfg("");
        let mut peers = List(vec!["10.0.0.2:80"]);
        let (sm, _) = start(&c, &replay("POST", &[]), &mut peers);
        let step = sm.unwrap().on_dispatch_refused(0, &mut peers);
        assert_eq!(step.action, Action::PassThrough("exhausted"));
        assert_eq!(step.counters, vec![AttemptFailed, Exhausted]);
    }

    #[test]
    fn what_is_not_re_dispatched() {
        let c = cfg("");
        let mut peers = List(vec!["10.0.0.2:80"]);
        let guard = replay("GET", &[("x-mixmode-attempt", "1")]);
        let (sm, step) = start(&c, &guard, &mut peers);
        assert!(sm.is_none());
        assert_eq!(step, Step::new(Action::Continue));

        let other = ResponseFacts {
            status: 500,
            session_version: Some(b"2"),
            app_version: None,
        };
        let (sm, step) =
            on_response_headers(&c, &replay("GET", &[]), &other, None, 0, 0, &mut peers);
        assert!(sm.is_none());
        assert_eq!(step, Step::new(Action::Continue));

        let equal = ResponseFacts {
            status: 409,
            session_version: Some(b"2"),
            app_version: Some(b"2"),
        };
        let (_, step) =
            on_response_headers(&c, &replay("GET", &[]), &equal, None, 0, 0, &mut peers);
        assert_eq!(step.counters, vec![NotVersionError]);

        let mut big = Replay::new(raw(&[(":method", "POST")]), false, 2);
        big.push_body(b"abc", true);
        let (sm, step) = start(&c, &big, &mut peers);
        assert!(sm.is_none());
        assert_eq!(step.counters, vec![MismatchDetected, ReplayTooLarge]);

        let bin = Replay::new(serialize_pairs(&[(b"x", b"\xff")]).unwrap(), true, 2);
        let (_, step) = start(&c, &bin, &mut peers);
        assert_eq!(step.counters, vec![MismatchDetected, ReplayUnsupported]);
    }

    #[test]
    fn registry_peers_read_the_session_version_set() {
        let c = cfg("");
        let mut store = MemoryStore::default();
        let scope = Scope::new(
            &["test"],
            Limits {
                stale_after_ms: 1000,
                max_records: 10,
            },
        );
        for (version, address) in [
            ("2", "10.0.0.2:80"),
            ("1", "10.0.0.3:80"),
            ("2", "10.0.0.1:80"),
        ] {
            let r = Ident {
                pool: "default",
                app: "checkout",
                version,
                address,
            };
            upsert(&mut store, &scope, &r, 0).unwrap();
        }
        let mut cache = LookupCache::default();
        let mut peers = RegistryPeers {
            store: &mut store,
            cache: &mut cache,
            pool: "default",
            app: "checkout",
            cross_pool: false,
            scope: &scope,
            selection: Selection::Random,
            now_ms: 10,
        };
        for seed in 0..20 {
            let (_, step) = on_response_headers(
                &c,
                &replay("GET", &[]),
                &MISMATCH,
                Some("10.0.0.1:80".into()),
                10,
                seed,
                &mut peers,
            );
            assert_eq!(dispatched(&step).0, "10.0.0.2:80");
        }
    }

    fn set_cookies(step: &Step) -> Vec<Vec<u8>> {
        match &step.action {
            Action::Reply { headers, .. } => headers
                .iter()
                .filter(|(k, _)| k == b"set-cookie")
                .map(|(_, v)| v.clone())
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn affinity_cookie_only_on_a_rescued_reply() {
        let c = cfg(r#","affinity":{}"#);
        let mut peers = List(vec!["10.0.0.2:80", "10.0.0.3:80"]);
        let (sm, _) = start(&c, &replay("GET", &[]), &mut peers);
        let step = sm.unwrap().on_call_response(
            &c.detect,
            peer_answer(200, &[("set-cookie", "app=1")]),
            1,
            &mut peers,
        );
        assert_eq!(
            set_cookies(&step),
            vec![
                b"app=1".to_vec(),
                b"mixmode-version=2; Path=/; Max-Age=1800; HttpOnly; SameSite=Lax".to_vec()
            ],
            "the peer's own cookies kept, the version's added"
        );
        // A peer's app error is still the final answer from a peer of the version.
        let (sm, _) = start(&c, &replay("GET", &[]), &mut peers);
        let step = sm
            .unwrap()
            .on_call_response(&c.detect, peer_answer(500, &[]), 1, &mut peers);
        assert_eq!(set_cookies(&step).len(), 1);

        // Exhausted and no-peer answers are the original response: nothing is added.
        let (sm, _) = start(&c, &replay("POST", &[]), &mut peers);
        let mut sm = sm.unwrap();
        sm.on_call_response(&c.detect, envoy_answer(503), 1, &mut peers);
        let step = sm.on_call_response(&c.detect, envoy_answer(503), 2, &mut peers);
        assert_eq!(step.action, Action::PassThrough("exhausted"));
        let mut nobody = List(vec![]);
        let (_, step) = start(&c, &replay("GET", &[]), &mut nobody);
        assert_eq!(step.action, Action::PassThrough("no-peer"));

        // Affinity off: no cookie.
        let off = cfg("");
        let (sm, _) = start(&off, &replay("GET", &[]), &mut peers);
        let step = sm
            .unwrap()
            .on_call_response(&off.detect, peer_answer(200, &[]), 1, &mut peers);
        assert!(set_cookies(&step).is_empty());
    }

    #[test]
    fn a_version_a_cookie_cannot_carry_is_rescued_without_cookie() {
        let c = cfg(r#","affinity":{"secure":true}"#);
        let mut peers = List(vec!["10.0.0.2:80"]);
        for version in [&b"2;x"[..], b"\"2\"", b"2,3"] {
            let facts = ResponseFacts {
                status: 409,
                session_version: Some(version),
                app_version: Some(b"1"),
            };
            let (sm, step) =
                on_response_headers(&c, &replay("GET", &[]), &facts, None, 0, 1, &mut peers);
            dispatched(&step);
            let step =
                sm.unwrap()
                    .on_call_response(&c.detect, peer_answer(200, &[]), 1, &mut peers);
            assert!(matches!(step.action, Action::Reply { status: 200, .. }));
            assert!(set_cookies(&step).is_empty(), "{version:?}");
        }
        let (sm, _) = start(&c, &replay("GET", &[]), &mut peers);
        let step = sm
            .unwrap()
            .on_call_response(&c.detect, peer_answer(200, &[]), 1, &mut peers);
        assert!(set_cookies(&step)[0].ends_with(b"; Secure"));
    }

    #[test]
    fn a_clients_host_hint_is_never_replayed() {
        let c = cfg(r#","affinity":{"host_header":"X-Pin"}"#);
        let mut peers = List(vec!["10.0.0.2:80"]);
        let r = replay(
            "GET",
            &[("x-pin", "forged"), ("X-PIN", "again"), ("x-kept", "1")],
        );
        let (sm, step) = start(&c, &r, &mut peers);
        let (peer, n) = dispatched(&step);
        let sm = sm.unwrap();
        let headers = sm.attempt_headers(&peer, n);
        assert!(!headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("x-pin")));
        assert!(headers.iter().any(|(k, _)| *k == "x-kept"));
        // Without affinity the header is just another header.
        let (sm, step) = start(&cfg(""), &r, &mut peers);
        let (peer, n) = dispatched(&step);
        let sm = sm.unwrap();
        let headers = sm.attempt_headers(&peer, n);
        assert_eq!(
            headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("x-pin"))
                .count(),
            2
        );
    }
}
