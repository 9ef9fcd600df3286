//! The HTTP context: saves the replay copy on the way in, answers heartbeats, and carries out the
//! re-dispatch decided by `core::redispatch`.

use crate::core::affinity;
use crate::core::budget::Hold;
use crate::core::config::Affinity;
use crate::core::counter::Counter;
use crate::core::demand;
use crate::core::heartbeat::{self, Outcome, MAX_BODY};
use crate::core::pairs::{find_pair, find_raw};
use crate::core::redispatch::{
    self, Action as Do, CallResponse, PeerSource, Redispatcher, RegistryPeers, ResponseFacts, Step,
    MIXMODE_HEADER,
};
use crate::core::replay::Replay;
use crate::core::select::mix;
use crate::core::signal;
use crate::filter::abi::{self, buffer, map};
use crate::filter::needs;
use crate::filter::shared::Shared;
use crate::filter::store::HostStore;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

struct HeartbeatCall {
    method: String,
    authorization: Option<Vec<u8>>,
    /// What followed `?` in the path (`?demand`: the demand listing).
    query: Option<Vec<u8>>,
    answered: bool,
}

enum Mode {
    /// Not configured, or nothing left to do.
    Inert,
    /// An ordinary request: keep what a replay needs until the response decides.
    Proxy {
        replay: Replay,
        redispatch: Option<Redispatcher>,
        /// The first response headers were decided; later ones (our own local reply) pass.
        decided: bool,
        /// The original response is held while attempts run.
        holding: bool,
        /// A dispatched attempt awaits its answer (the copy is still needed).
        in_flight: bool,
    },
    Heartbeat(HeartbeatCall),
}

pub struct MixHttp {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    mode: Mode,
    /// The cookie's version and the peer hinted for it, until the response says who served.
    hinted: Option<(String, String)>,
}

/// The path without its query string.
fn path_only(path: &[u8]) -> &[u8] {
    match path.iter().position(|b| *b == b'?') {
        Some(i) => path.get(..i).unwrap_or(path),
        None => path,
    }
}

/// The query string of a path, without the `?`.
fn query_of(path: &[u8]) -> Option<&[u8]> {
    let i = path.iter().position(|b| *b == b'?')?;
    path.get(i.saturating_add(1)..)
}

impl MixHttp {
    pub fn new(context_id: u32, shared: Option<Rc<Shared>>) -> Self {
        MixHttp {
            context_id,
            shared,
            mode: Mode::Inert,
            hinted: None,
        }
    }

    fn answer_heartbeat(&mut self, shared: &Shared, body: &[u8], too_large: bool) {
        let Mode::Heartbeat(call) = &mut self.mode else {
            return;
        };
        if call.answered {
            return;
        }
        call.answered = true;
        let req = heartbeat::Request {
            method: &call.method,
            authorization: call.authorization.as_deref(),
            body,
            body_too_large: too_large,
        };
        let answer = heartbeat::handle_query(
            &shared.config,
            &req,
            call.query.as_deref(),
            &mut HostStore,
            abi::now_ms(),
        );
        let m = &shared.metrics;
        match answer.outcome {
            Outcome::Accepted => m.count(Counter::HeartbeatAccepted),
            Outcome::Rejected => m.count(Counter::HeartbeatRejected),
            Outcome::Listed => {}
        }
        if let Some(n) = answer.records {
            m.set_records(n);
        }
        if answer.status >= 500 {
            abi::log(
                abi::level::WARN,
                &format!("mixmode: heartbeat failed: {}", answer.body),
            );
        }
        let json: [(&[u8], &[u8]); 1] = [(b"content-type", b"application/json")];
        let headers: &[(&[u8], &[u8])] = if answer.body.is_empty() { &[] } else { &json };
        if !abi::send_http_response(answer.status, headers, answer.body.as_bytes()) {
            abi::log(
                abi::level::WARN,
                "mixmode: could not send the heartbeat answer",
            );
        }
    }

    /// Runs `f` with the registry as the peer source.
    fn with_peers<R>(shared: &Shared, now_ms: u64, f: impl FnOnce(&mut dyn PeerSource) -> R) -> R {
        let cfg = &shared.config;
        let mut store = HostStore;
        let (mut borrowed, mut spare);
        let cache = match shared.cache.try_borrow_mut() {
            Ok(c) => {
                borrowed = c;
                &mut *borrowed
            }
            // Not reachable (one callback at a time per VM), but never worth a panic.
            Err(_) => {
                spare = crate::core::lookup::LookupCache::default();
                &mut spare
            }
        };
        let mut peers = RegistryPeers {
            store: &mut store,
            cache,
            pool: &cfg.pool,
            app: &cfg.app,
            cross_pool: cfg.registry.cross_pool,
            scope: &shared.scope,
            selection: cfg.redispatch.selection,
            now_ms,
        };
        f(&mut peers)
    }

    /// Carries out `step`; `held` is true when the response is paused (callback phase). Returns
    /// what `on_http_response_headers` should return.
    fn execute(&mut self, shared: &Shared, step: Step, held: bool) -> Action {
        if let Mode::Proxy { in_flight, .. } = &mut self.mode {
            *in_flight = false;
        }
        let action = self.carry_out(shared, step, held);
        if let Mode::Proxy {
            holding,
            in_flight,
            replay,
            redispatch,
            ..
        } = &mut self.mode
        {
            *holding = action == Action::Pause;
            // Decided (a reply sent, the original let through): the copy's bytes go back to the
            // VM's budget now, not when Envoy deletes the context.
            if !*in_flight {
                replay.discard();
                *redispatch = None;
            }
        }
        action
    }

    /// Lets the held original response go on.
    fn release(&mut self) {
        // Before resuming: the body callbacks it triggers must not be held again.
        if let Mode::Proxy { holding, .. } = &mut self.mode {
            *holding = false;
        }
        abi::resume_http_response();
    }

    fn carry_out(&mut self, shared: &Shared, mut step: Step, held: bool) -> Action {
        // Bounded by max_attempts: every refused dispatch consumes one attempt.
        loop {
            for c in &step.counters {
                shared.metrics.count(*c);
            }
            match step.action {
                Do::Continue => {
                    if held {
                        self.release();
                    }
                    return Action::Continue;
                }
                Do::PassThrough(tag) => {
                    abi::replace_header(map::RESPONSE_HEADERS, MIXMODE_HEADER, tag.as_bytes());
                    abi::log(
                        abi::level::DEBUG,
                        &format!("mixmode: passing the original response through ({tag})"),
                    );
                    if held {
                        self.release();
                    }
                    return Action::Continue;
                }
                Do::Reply {
                    status,
                    headers,
                    body,
                } => {
                    let h: Vec<(&[u8], &[u8])> = headers
                        .iter()
                        .map(|(k, v)| (k.as_slice(), v.as_slice()))
                        .collect();
                    if abi::send_http_response(status, &h, &body) {
                        return Action::Pause;
                    }
                    abi::log(
                        abi::level::WARN,
                        "mixmode: could not send the peer's answer",
                    );
                    abi::replace_header(map::RESPONSE_HEADERS, MIXMODE_HEADER, b"exhausted");
                    if held {
                        self.release();
                    }
                    return Action::Continue;
                }
                Do::Dispatch {
                    peer,
                    attempt,
                    timeout_ms,
                } => {
                    let Mode::Proxy {
                        replay,
                        redispatch,
                        in_flight,
                        ..
                    } = &mut self.mode
                    else {
                        return Action::Continue;
                    };
                    let Some(r) = redispatch.as_mut() else {
                        return Action::Continue;
                    };
                    let owned = r.attempt_headers(&peer, attempt);
                    let body = Some(replay.body()).filter(|b| !b.is_empty());
                    let result = abi::dispatch_http_call(
                        &shared.config.redispatch.cluster,
                        &owned,
                        body,
                        timeout_ms,
                    );
                    match result {
                        Ok(_) => {
                            *in_flight = true;
                            abi::log(
                                abi::level::DEBUG,
                                &format!("mixmode: attempt {attempt} -> {peer}"),
                            );
                            return Action::Pause;
                        }
                        Err(status) => {
                            abi::log(
                                abi::level::WARN,
                                &format!(
                                    "mixmode: dispatch to {peer} via cluster {:?} refused: {status:?}",
                                    shared.config.redispatch.cluster
                                ),
                            );
                            let now = abi::now_ms();
                            step = Self::with_peers(shared, now, |p| r.on_dispatch_refused(now, p));
                        }
                    }
                }
            }
        }
    }
}

impl Context for MixHttp {
    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        // A reset stream has no headers to read (docs/envoy-facts.md#response-phase-and-calls).
        let response = if num_headers == 0 {
            None
        } else {
            abi::get_pairs(map::CALL_RESPONSE_HEADERS).and_then(|headers| {
                let status = find_pair(&headers, b":status").and_then(signal::parse_status)?;
                let body =
                    abi::get_buffer(buffer::CALL_RESPONSE_BODY, 0, body_size).unwrap_or_default();
                Some(CallResponse {
                    status,
                    headers,
                    body,
                })
            })
        };
        let now = abi::now_ms();
        let step = match &mut self.mode {
            Mode::Proxy {
                redispatch: Some(r),
                ..
            } => Self::with_peers(&shared, now, |p| {
                r.on_call_response(&shared.config.detect, response, now, p)
            }),
            _ => return,
        };
        self.execute(&shared, step, true);
    }
}

impl HttpContext for MixHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let cfg = &shared.config;
        // One host call for everything a replay needs (docs/envoy-facts.md#request-phase: later it is gone); it is
        // decoded only if a mismatch needs it.
        let raw = abi::get_pairs_raw(map::REQUEST_HEADERS);
        let full_path = raw.as_deref().and_then(|r| find_raw(r, b":path"));
        if full_path.map(path_only) == Some(cfg.heartbeat.path.as_bytes()) {
            let query = full_path.and_then(query_of).map(<[u8]>::to_vec);
            let raw = raw.unwrap_or_default();
            self.mode = Mode::Heartbeat(HeartbeatCall {
                method: find_raw(&raw, b":method")
                    .and_then(|m| std::str::from_utf8(m).ok())
                    .unwrap_or_default()
                    .to_string(),
                authorization: find_raw(&raw, b"authorization").map(<[u8]>::to_vec),
                query,
                answered: false,
            });
            if end_of_stream {
                self.answer_heartbeat(&shared, &[], false);
            }
            // Held until the body is complete; needs `allow_on_headers_stop_iteration: true`.
            return Action::Pause;
        }
        if let (Some(a), Some(r)) = (&cfg.affinity, raw.as_deref()) {
            self.apply_affinity(&shared, a, r);
        }
        let replay = match raw {
            Some(r) => Replay::budgeted(
                r,
                end_of_stream,
                cfg.redispatch.max_replay_body_bytes,
                Hold::new(shared.budget.clone(), cfg.redispatch.max_buffered_bytes),
            ),
            None => Replay::unavailable(),
        };
        self.mode = Mode::Proxy {
            replay,
            redispatch: None,
            decided: false,
            holding: false,
            in_flight: false,
        };
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        match &mut self.mode {
            Mode::Proxy { replay, .. } => {
                if replay.wants_body() {
                    // Returning Continue, `body_size` is this chunk's size.
                    let want = body_size.min(replay.read_limit());
                    match abi::get_buffer(buffer::REQUEST_BODY, 0, want) {
                        // The host's buffer goes right after the copy: one buffer per request.
                        Some(chunk) => replay.push_body(&chunk, end_of_stream),
                        None => replay.mark_unsupported(),
                    }
                } else if end_of_stream {
                    replay.push_body(&[], true);
                }
                Action::Continue
            }
            Mode::Heartbeat(call) => {
                if call.answered {
                    return Action::Pause;
                }
                // Paused, `body_size` is everything buffered so far.
                if body_size > MAX_BODY {
                    self.answer_heartbeat(&shared, &[], true);
                } else if end_of_stream {
                    let body =
                        abi::get_buffer(buffer::REQUEST_BODY, 0, body_size).unwrap_or_default();
                    self.answer_heartbeat(&shared, &body, false);
                }
                Action::Pause
            }
            Mode::Inert => Action::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        // Trailers end the stream: no body callback with end_of_stream comes.
        match &mut self.mode {
            Mode::Proxy { replay, .. } => {
                replay.push_trailers();
                Action::Continue
            }
            Mode::Heartbeat(call) => {
                if !call.answered {
                    let body =
                        abi::get_buffer(buffer::REQUEST_BODY, 0, MAX_BODY + 1).unwrap_or_default();
                    let too_large = body.len() > MAX_BODY;
                    self.answer_heartbeat(&shared, &body, too_large);
                }
                Action::Pause
            }
            Mode::Inert => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // The original body can arrive while its headers are held (observed in Envoy 1.40 when
        // body and headers come in one read): returning Continue here would release them.
        match &self.mode {
            Mode::Proxy { holding: true, .. } => {
                abi::log(
                    abi::level::DEBUG,
                    &format!(
                        "mixmode: held the original body ({body_size} bytes, end {end_of_stream})"
                    ),
                );
                Action::Pause
            }
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.settle_hint();
        let action = self.decide_response();
        // Nothing will be replayed: free the copy (up to max_replay_body_bytes) right away.
        if action == Action::Continue
            && matches!(
                self.mode,
                Mode::Proxy {
                    redispatch: None,
                    ..
                }
            )
        {
            self.mode = Mode::Inert;
        }
        action
    }
}

impl MixHttp {
    /// Version affinity on the way in (docs/design.md#version-affinity): the hint toward a server of the cookie's
    /// version, and never a client's own hint. Without the cookie or a forged header this reads
    /// only the headers already held: no host call.
    fn apply_affinity(&mut self, shared: &Shared, a: &Affinity, raw: &[u8]) {
        let facts = affinity::read_request(a, raw);
        if facts.is_nothing() {
            return;
        }
        let now_ns = if facts.version.is_some() {
            abi::now_ns()
        } else {
            0
        };
        let random = mix(now_ns ^ (u64::from(self.context_id) << 32));
        let plan = Self::with_peers(shared, now_ns / 1_000_000, |p| {
            affinity::on_request(&facts, p, random)
        });
        if let Some(hint) = &plan.hint {
            // Replaces every copy the client sent as well.
            if !abi::replace_header(map::REQUEST_HEADERS, &a.host_header, hint.as_bytes()) {
                abi::log(abi::level::WARN, "mixmode: could not add the affinity hint");
            }
        }
        if plan.remove_client_header && !abi::remove_header(map::REQUEST_HEADERS, &a.host_header) {
            abi::log(
                abi::level::WARN,
                "mixmode: could not remove a client's affinity header",
            );
        }
        if let Some(c) = plan.counter {
            shared.metrics.count(c);
        }
        if let (Some(v), Some(peer)) = (facts.version, plan.peer) {
            self.hinted = Some((v.to_string(), peer));
        }
    }

    /// A hinted request needs the cookie's version only if the hinted peer served it
    /// (`affinity::served_as_hinted`): one property read, on hinted requests only.
    fn settle_hint(&mut self) {
        let (Some((version, peer)), Some(shared)) = (self.hinted.take(), self.shared.clone())
        else {
            return;
        };
        let upstream =
            abi::get_property(&["upstream", "address"]).and_then(|a| String::from_utf8(a).ok());
        if affinity::served_as_hinted(&peer, upstream.as_deref()) {
            needs::record(&shared, &version, abi::now_ms());
        }
    }

    fn decide_response(&mut self) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let cfg = &shared.config;
        let Mode::Proxy {
            replay,
            redispatch,
            decided,
            ..
        } = &mut self.mode
        else {
            return Action::Continue;
        };
        if *decided {
            return Action::Continue;
        }
        *decided = true;
        // The happy path: one header read, nothing else.
        let Some(status) = abi::get_header(map::RESPONSE_HEADERS, ":status")
            .and_then(|s| signal::parse_status(&s))
        else {
            return Action::Continue;
        };
        if !signal::is_detect_status(&cfg.detect, status) {
            return Action::Continue;
        }
        let sv = abi::get_header(map::RESPONSE_HEADERS, &cfg.detect.session_version_header);
        let av = abi::get_header(map::RESPONSE_HEADERS, &cfg.detect.app_version_header);
        let facts = ResponseFacts {
            status,
            session_version: sv.as_deref(),
            app_version: av.as_deref(),
        };
        let upstream =
            abi::get_property(&["upstream", "address"]).and_then(|a| String::from_utf8(a).ok());
        let now_ns = abi::now_ns();
        let now = now_ns / 1_000_000;
        let seed = mix(now_ns ^ (u64::from(self.context_id) << 32));
        let (r, step) = Self::with_peers(&shared, now, |p| {
            redispatch::on_response_headers(cfg, replay, &facts, upstream.clone(), now, seed, p)
        });
        if step.counters.contains(&Counter::MismatchDetected) {
            let class = abi::get_header(map::RESPONSE_HEADERS, "x-session-class");
            let size = abi::get_header(map::RESPONSE_HEADERS, "x-session-size");
            let text = |v: Option<Vec<u8>>| {
                v.as_deref()
                    .and_then(signal::version_text)
                    .unwrap_or("-")
                    .to_string()
            };
            abi::log(
                abi::level::DEBUG,
                &format!(
                    "mixmode: version mismatch from {}: session {} (class {}, size {}), server {}",
                    upstream.as_deref().unwrap_or("-"),
                    text(sv.clone()),
                    text(class),
                    text(size),
                    text(av.clone()),
                ),
            );
        }
        if let Some(v) = demand::needed_version(&step.counters, sv.as_deref()) {
            needs::record(&shared, v, now);
        }
        *redispatch = r;
        self.execute(&shared, step, false)
    }
}
