//! The copy of the request a replay needs, taken on the way in (docs/design.md#re-dispatch, docs/envoy-facts.md#request-phase: the request
//! is gone in the response phase).

use crate::core::budget::Hold;
use crate::core::pairs::{find_raw, RawPairs};

pub const ATTEMPT_HEADER: &str = "x-mixmode-attempt";
pub const ORIGINAL_DST_HEADER: &str = "x-envoy-original-dst-host";

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the `proxy-*` family): never forwarded either way.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(
        lower.as_slice(),
        b"connection" | b"keep-alive" | b"transfer-encoding" | b"te" | b"upgrade" | b"trailer"
    ) || lower.starts_with(b"proxy-")
}

/// What a message's own `Connection` header makes hop-by-hop besides the fixed list: the header
/// names it lists (RFC 9110 §7.6.1), which a proxy removes with it.
#[derive(Debug, Default)]
pub struct HopByHop {
    /// Lower-cased names from every `Connection` value.
    listed: Vec<Vec<u8>>,
}

impl HopByHop {
    /// Reads the `Connection` values among `headers`.
    pub fn of<'a>(headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        let mut listed = Vec::new();
        for (name, value) in headers {
            if name.eq_ignore_ascii_case(b"connection") {
                listed.extend(
                    value
                        .split(|b| *b == b',')
                        .map(<[u8]>::trim_ascii)
                        .filter(|t| !t.is_empty())
                        .map(<[u8]>::to_ascii_lowercase),
                );
            }
        }
        HopByHop { listed }
    }

    /// Whether `name` must not be forwarded.
    pub fn drops(&self, name: &[u8]) -> bool {
        is_hop_by_hop(name) || self.listed.iter().any(|l| l.eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayState {
    /// Headers copied, body complete or still arriving.
    Ready,
    /// The body went past `max_replay_body_bytes`.
    TooLarge,
    /// A header value the host cannot send unchanged (not UTF-8).
    Unsupported,
}

/// What a replay sends, decoded from the saved map only when a mismatch needs it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Pseudo-headers first, as received, minus what must never be replayed.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// Headers of attempt `n` to `peer`: the client's, then the target (its only copy: the
    /// client's was dropped) and the attempt number.
    pub fn attempt_headers(&self, peer: &str, n: u32) -> Vec<(&str, String)> {
        let mut h: Vec<(&str, String)> = Vec::with_capacity(self.headers.len().saturating_add(2));
        h.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.clone())));
        h.push((ORIGINAL_DST_HEADER, peer.to_string()));
        h.push((ATTEMPT_HEADER, n.to_string()));
        h
    }
}

/// The request as it came in: the host's serialized header map, kept as is (the happy path
/// pays for one host call and no decoding), and a copy of the body, charged to the VM's replay
/// budget (`core::budget`) before it is allocated.
#[derive(Debug)]
pub struct Replay {
    raw: Vec<u8>,
    /// The request carried the loop guard; set when `raw` is let go (past the budget).
    attempt: bool,
    state: ReplayState,
    /// One buffer, whatever the framing: allocated once at the announced `content-length`, or
    /// grown by half when none was announced, and trimmed to the body at its end. (A buffer per
    /// chunk cost 1.44x the body with 64-byte HTTP/2 DATA frames.)
    body: Vec<u8>,
    pub body_complete: bool,
    max_body: usize,
    /// The announced body length, when within `max_body`.
    announced: Option<usize>,
    hold: Hold,
}

/// The smallest buffer grown for a body of unknown length.
const MIN_BUFFER: usize = 4096;

impl Replay {
    /// `raw`: the request headers in the ABI's map serialization; `end_of_stream`: no body. A
    /// replay of its own, outside any budget.
    pub fn new(raw: Vec<u8>, end_of_stream: bool, max_body: usize) -> Self {
        Self::budgeted(raw, end_of_stream, max_body, Hold::unlimited())
    }

    /// `new` charging `hold`: a copy that would take the VM past its budget is not kept (the
    /// request then counts as too large to replay).
    pub fn budgeted(raw: Vec<u8>, end_of_stream: bool, max_body: usize, hold: Hold) -> Self {
        let announced = if end_of_stream {
            None
        } else {
            find_raw(&raw, b"content-length")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let mut r = Replay {
            raw,
            attempt: false,
            state: ReplayState::Ready,
            body: Vec::new(),
            body_complete: end_of_stream,
            max_body,
            announced: None,
            hold,
        };
        match announced.map(usize::try_from) {
            // A body announced larger than the limit is never copied at all.
            Some(Ok(n)) if n <= max_body => r.announced = Some(n),
            Some(_) => r.state = ReplayState::TooLarge,
            None => {}
        }
        if !r.hold.grow_to(r.raw.capacity()) {
            r.over_budget();
        }
        r
    }

    /// The host could not give the request headers: a mismatch passes through.
    pub fn unavailable() -> Self {
        let mut r = Self::new(Vec::new(), true, 0);
        r.state = ReplayState::Unsupported;
        r
    }

    /// The request came from a re-dispatch (loop guard).
    pub fn is_attempt(&self) -> bool {
        self.attempt || find_raw(&self.raw, ATTEMPT_HEADER.as_bytes()).is_some()
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_raw(&self.raw, name.as_bytes())
    }

    /// Bytes this copy holds against the budget.
    pub fn held(&self) -> usize {
        self.hold.held()
    }

    /// The replayable request, or why there is none.
    pub fn request(&self) -> Result<Request, ReplayState> {
        if self.state != ReplayState::Ready {
            return Err(self.state);
        }
        let mut r = Request {
            method: String::new(),
            headers: Vec::new(),
        };
        let pairs: Vec<(&[u8], &[u8])> = RawPairs::new(&self.raw)
            .collect::<Result<_, ()>>()
            .map_err(|()| ReplayState::Unsupported)?;
        let hop = HopByHop::of(pairs.iter().copied());
        for (name, value) in pairs {
            if name.eq_ignore_ascii_case(ATTEMPT_HEADER.as_bytes())
                || name.eq_ignore_ascii_case(ORIGINAL_DST_HEADER.as_bytes())
                || hop.drops(name)
            {
                continue;
            }
            let (Ok(n), Ok(v)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else {
                return Err(ReplayState::Unsupported);
            };
            if n == ":method" {
                r.method = v.to_string();
            }
            r.headers.push((n.to_string(), v.to_string()));
        }
        if r.method.is_empty() {
            return Err(ReplayState::Unsupported);
        }
        Ok(r)
    }

    /// Lets the body copy go (keeping the headers), in `state`.
    fn drop_body(&mut self, state: ReplayState) {
        self.state = state;
        self.body = Vec::new();
        self.hold.shrink_to(self.raw.capacity());
    }

    /// The copy does not fit the budget: nothing is kept, not even the headers.
    fn over_budget(&mut self) {
        self.attempt = self.is_attempt();
        self.raw = Vec::new();
        self.drop_body(ReplayState::TooLarge);
    }

    /// The host could not give a body chunk: the copy would not be byte for byte.
    pub fn mark_unsupported(&mut self) {
        self.drop_body(ReplayState::Unsupported);
    }

    /// The request ended with trailers. A replay cannot carry them (the peer would get the body
    /// without them), and a replay is byte for byte or not at all: none is made.
    pub fn push_trailers(&mut self) {
        self.mark_unsupported();
        self.body_complete = true;
    }

    /// Nothing will be replayed any more (the response was decided): every byte goes back.
    pub fn discard(&mut self) {
        self.attempt = self.is_attempt();
        self.raw = Vec::new();
        self.drop_body(ReplayState::Unsupported);
    }

    /// The body copied so far.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Whether body chunks are still worth reading.
    pub fn wants_body(&self) -> bool {
        self.state == ReplayState::Ready && !self.body_complete
    }

    /// Appends one body chunk; `end` marks the end of the body.
    pub fn push_body(&mut self, chunk: &[u8], end: bool) {
        if self.state == ReplayState::Ready && !chunk.is_empty() {
            match self.body.len().checked_add(chunk.len()) {
                Some(len) if len <= self.max_body => {
                    if self.make_room(len) {
                        self.body.extend_from_slice(chunk);
                    } else {
                        self.over_budget();
                    }
                }
                _ => self.drop_body(ReplayState::TooLarge),
            }
        }
        if end {
            self.body_complete = true;
            // A buffer grown past the body gives the rest back (once, at the end).
            if self.body.capacity() > self.body.len() {
                self.body.shrink_to_fit();
                self.hold
                    .shrink_to(self.raw.capacity().saturating_add(self.body.capacity()));
            }
        }
    }

    /// Makes the buffer hold `len` bytes, charging the budget first; false if it would not fit.
    fn make_room(&mut self, len: usize) -> bool {
        let cap = self.body.capacity();
        if len <= cap {
            return true;
        }
        let target = match self.announced {
            Some(n) if n >= len => n,
            _ => len
                .max(cap.saturating_add(cap / 2))
                .max(MIN_BUFFER)
                .min(self.max_body),
        };
        let Some(total) = self.raw.capacity().checked_add(target) else {
            return false;
        };
        if !self.hold.grow_to(total) {
            return false;
        }
        if self
            .body
            .try_reserve_exact(target.saturating_sub(self.body.len()))
            .is_err()
        {
            return false;
        }
        // What the allocator gave, should it be more than asked.
        self.hold
            .force_to(self.raw.capacity().saturating_add(self.body.capacity()));
        true
    }

    /// How much of a chunk to read: up to one byte past the limit, so "too large" is still seen.
    pub fn read_limit(&self) -> usize {
        self.max_body
            .saturating_sub(self.body.len())
            .saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pairs::serialize_pairs;

    pub fn raw(list: &[(&str, &[u8])]) -> Vec<u8> {
        let v: Vec<(&[u8], &[u8])> = list.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
        serialize_pairs(&v).unwrap()
    }

    #[test]
    fn keeps_the_request_minus_what_must_not_be_replayed() {
        let r = Replay::new(
            raw(&[
                (":method", b"POST"),
                (":path", b"/cart?x=1"),
                (":authority", b"shop"),
                ("cookie", b"a=1"),
                ("cookie", b"b=2"),
                ("connection", b"keep-alive"),
                ("Transfer-Encoding", b"chunked"),
                ("proxy-authorization", b"x"),
                ("x-envoy-original-dst-host", b"1.2.3.4:80"),
                ("te", b"trailers"),
            ]),
            false,
            10,
        );
        assert!(!r.is_attempt());
        assert_eq!(r.header(":path"), Some(&b"/cart?x=1"[..]));
        let q = r.request().unwrap();
        assert_eq!(q.method, "POST");
        let names: Vec<&str> = q.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            vec![":method", ":path", ":authority", "cookie", "cookie"]
        );
        let h = q.attempt_headers("10.0.0.1:80", 2);
        assert_eq!(h[5], (ORIGINAL_DST_HEADER, "10.0.0.1:80".to_string()));
        assert_eq!(h[6], (ATTEMPT_HEADER, "2".to_string()));
        assert_eq!(
            h.iter().filter(|(k, _)| *k == ORIGINAL_DST_HEADER).count(),
            1
        );
    }

    /// RFC 9110 §7.6.1: the names a `Connection` header lists are hop-by-hop too.
    #[test]
    fn headers_named_by_connection_are_not_replayed() {
        let r = Replay::new(
            raw(&[
                (":method", b"GET"),
                ("Connection", b"X-Hop-A , x-hop-b"),
                ("connection", b"close"),
                ("x-hop-a", b"1"),
                ("X-HOP-B", b"2"),
                ("x-kept", b"3"),
            ]),
            true,
            10,
        );
        let names: Vec<String> = r
            .request()
            .unwrap()
            .headers
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(names, vec![":method", "x-kept"]);
    }

    /// Trailers cannot be replayed: the request is not replayed at all (byte for byte or not at
    /// all), and the body copy is freed.
    #[test]
    fn a_request_with_trailers_is_unsupported() {
        let mut r = Replay::new(raw(&[(":method", b"POST")]), false, 100);
        r.push_body(b"abc", false);
        r.push_trailers();
        assert!(r.body_complete);
        assert!(!r.wants_body());
        assert!(r.body().is_empty());
        assert_eq!(r.request().unwrap_err(), ReplayState::Unsupported);
    }

    use crate::core::budget::Budget;
    use std::rc::Rc;

    fn post(content_length: Option<usize>) -> Vec<u8> {
        let len = content_length.map(|n| n.to_string());
        let mut h: Vec<(&str, &[u8])> = vec![(":method", b"POST"), (":path", b"/up")];
        if let Some(l) = &len {
            h.push(("content-length", l.as_bytes()));
        }
        raw(&h)
    }

    fn budgeted(b: &Rc<Budget>, limit: usize, cl: Option<usize>, max_body: usize) -> Replay {
        Replay::budgeted(post(cl), false, max_body, Hold::new(b.clone(), limit))
    }

    /// The copy costs the body's size whatever the framing: 1 MiB in 64-byte chunks (HTTP/2's
    /// smallest DATA frames) is one buffer of 1 MiB, allocated once when the length was
    /// announced, grown by half and trimmed at the end when it was not. The budget always holds
    /// exactly what is allocated.
    #[test]
    fn the_copy_costs_the_body_whatever_the_framing() {
        let body: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        for announced in [Some(body.len()), None] {
            let b = Rc::new(Budget::default());
            let mut r = budgeted(&b, usize::MAX, announced, 1 << 20);
            let headers = r.held();
            let mut peak = 0;
            for (i, c) in body.chunks(64).enumerate() {
                r.push_body(c, (i + 1) * 64 == body.len());
                peak = peak.max(r.held());
                assert_eq!(b.used(), r.held());
            }
            assert_eq!(r.body(), body.as_slice(), "{announced:?}");
            assert_eq!(r.held(), headers + body.len(), "{announced:?}");
            match announced {
                Some(_) => assert_eq!(peak, headers + body.len()),
                // Grown by half at most, never past max_replay_body_bytes.
                None => assert!(peak <= headers + body.len(), "{peak}"),
            }
            drop(r);
            assert_eq!(b.used(), 0);
        }
        // Unknown length, a body of 100 kB: the buffer never exceeds 1.5x what arrived.
        let b = Rc::new(Budget::default());
        let mut r = budgeted(&b, usize::MAX, None, 1 << 20);
        let headers = r.held();
        let mut got = 0;
        for _ in 0..1600 {
            r.push_body(&[7; 64], false);
            got += 64;
            assert!(
                r.held() - headers <= (got * 3 / 2).max(4096),
                "{got}: {}",
                r.held()
            );
        }
        r.push_body(&[], true);
        assert_eq!(r.held(), headers + got);
    }

    /// Every way a request ends gives its bytes back: completion then the context's deletion, a
    /// reset mid-body (the context is deleted), a body past the limit, trailers, the response
    /// decided (`discard`).
    #[test]
    fn every_exit_gives_the_bytes_back() {
        let b = Rc::new(Budget::default());
        let mut done = budgeted(&b, 1 << 20, Some(10), 100);
        done.push_body(b"0123456789", true);
        assert!(done.request().is_ok());
        let mut reset = budgeted(&b, 1 << 20, None, 100);
        reset.push_body(b"01234", false);
        let mut big = budgeted(&b, 1 << 20, None, 100);
        big.push_body(&[1; 60], false);
        let mut trailers = budgeted(&b, 1 << 20, Some(5), 100);
        trailers.push_body(b"01234", false);
        let mut decided = budgeted(&b, 1 << 20, Some(5), 100);
        decided.push_body(b"01234", true);
        let all = done.held() + reset.held() + big.held() + trailers.held() + decided.held();
        assert_eq!(b.used(), all);

        big.push_body(&[1; 60], false);
        assert_eq!(big.request().unwrap_err(), ReplayState::TooLarge);
        assert_eq!(big.held(), post(None).len(), "the body's bytes went back");
        trailers.push_trailers();
        assert_eq!(trailers.held(), post(Some(5)).len());
        decided.discard();
        assert_eq!(decided.held(), 0);
        assert_eq!(
            b.used(),
            done.held() + reset.held() + big.held() + trailers.held()
        );
        drop(reset);
        drop(done);
        drop(big);
        drop(trailers);
        drop(decided);
        assert_eq!(b.used(), 0);
    }

    /// A copy that would take the VM past its budget is not kept: not its body, nor its
    /// headers (the loop guard is remembered); the others are untouched; once they end, the
    /// bytes are there again.
    #[test]
    fn a_copy_past_the_budget_is_not_kept() {
        let b = Rc::new(Budget::default());
        let h = post(Some(600)).len();
        let limit = 2 * (h + 600);
        let mut one = budgeted(&b, limit, Some(600), 1000);
        one.push_body(&[1; 600], true);
        let mut two = budgeted(&b, limit, Some(600), 1000);
        two.push_body(&[2; 300], false);
        assert_eq!(b.used(), limit);
        // Announced: refused at its first chunk.
        let mut three = budgeted(&b, limit, Some(600), 1000);
        three.push_body(&[3; 1], false);
        assert_eq!(three.request().unwrap_err(), ReplayState::TooLarge);
        assert_eq!(three.held(), 0);
        assert!(!three.wants_body());
        // Not even the headers fit: nothing kept, the loop guard still known.
        let guard = Replay::budgeted(
            raw(&[(":method", b"GET"), ("x-mixmode-attempt", b"1")]),
            true,
            1000,
            Hold::new(b.clone(), limit),
        );
        assert!(guard.is_attempt());
        assert_eq!(guard.request().unwrap_err(), ReplayState::TooLarge);
        assert_eq!((guard.held(), b.used()), (0, limit));
        // The first two are whole.
        two.push_body(&[2; 300], true);
        assert_eq!(one.body(), [1; 600].as_slice());
        assert_eq!(two.body(), [2; 600].as_slice());
        drop(one);
        let mut four = budgeted(&b, limit, Some(600), 1000);
        four.push_body(&[4; 600], true);
        assert!(four.request().is_ok());
        assert_eq!(b.used(), limit);
    }

    #[test]
    fn attempt_header_marks_a_replayed_request() {
        let r = Replay::new(
            raw(&[(":method", b"GET"), ("X-Mixmode-Attempt", b"1")]),
            true,
            10,
        );
        assert!(r.is_attempt());
        assert!(r
            .request()
            .unwrap()
            .headers
            .iter()
            .all(|(k, _)| !k.eq_ignore_ascii_case(ATTEMPT_HEADER)));
    }

    #[test]
    fn non_utf8_value_or_garbage_is_unsupported() {
        let r = Replay::new(
            raw(&[(":method", b"GET"), ("x-bin", b"\xff\xfe")]),
            true,
            10,
        );
        assert_eq!(r.request().unwrap_err(), ReplayState::Unsupported);
        let r = Replay::new(vec![5, 0, 0, 0, 1], true, 10);
        assert_eq!(r.request().unwrap_err(), ReplayState::Unsupported);
        assert_eq!(
            Replay::unavailable().request().unwrap_err(),
            ReplayState::Unsupported
        );
    }

    #[test]
    fn body_up_to_the_limit_is_kept_byte_for_byte() {
        let mut r = Replay::new(raw(&[(":method", b"POST")]), false, 6);
        assert!(r.wants_body());
        r.push_body(b"\x00\xffab", false);
        r.push_body(b"cd", true);
        assert_eq!(r.body(), b"\x00\xffabcd");
        assert!(r.request().is_ok());
        assert!(!r.wants_body());
    }

    #[test]
    fn body_past_the_limit_is_too_large() {
        let mut r = Replay::new(raw(&[(":method", b"POST")]), false, 6);
        r.push_body(b"abcd", false);
        assert_eq!(r.read_limit(), 3);
        r.push_body(b"efg", false);
        assert_eq!(r.request().unwrap_err(), ReplayState::TooLarge);
        assert!(r.body().is_empty());
        assert!(!r.wants_body());
        r.push_body(b"h", true);
        assert_eq!(r.request().unwrap_err(), ReplayState::TooLarge);
        assert!(r.body_complete);
    }

    #[test]
    fn a_body_announced_past_the_limit_is_not_copied() {
        let mut r = Replay::new(
            raw(&[(":method", b"POST"), ("content-length", b"7")]),
            false,
            6,
        );
        assert!(!r.wants_body());
        assert_eq!(r.request().unwrap_err(), ReplayState::TooLarge);
        r.push_body(b"abcdefg", true);
        assert!(r.body().is_empty());
        let mut r = Replay::new(
            raw(&[(":method", b"POST"), ("content-length", b"6")]),
            false,
            6,
        );
        assert!(r.wants_body());
        r.push_body(b"abc", false);
        r.push_body(b"def", true);
        assert_eq!(r.body(), b"abcdef");
        assert!(r.request().is_ok());
    }
}
