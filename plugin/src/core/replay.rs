//! The copy of the request a replay needs, taken on the way in (design.md §3, §3a: the request
//! is gone in the response phase).

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
/// pays for one host call and no decoding), and a copy of the body.
#[derive(Debug, Clone)]
pub struct Replay {
    raw: Vec<u8>,
    state: ReplayState,
    /// The body as the host handed it out, chunk by chunk: kept as is (no second copy, no
    /// regrowth), joined only when a replay needs it.
    chunks: Vec<Vec<u8>>,
    body_len: usize,
    pub body_complete: bool,
    max_body: usize,
}

impl Replay {
    /// `raw`: the request headers in the ABI's map serialization; `end_of_stream`: no body.
    pub fn new(raw: Vec<u8>, end_of_stream: bool, max_body: usize) -> Self {
        // A body announced larger than the limit is never copied at all.
        let announced_too_large = !end_of_stream
            && find_raw(&raw, b"content-length")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|n| n > u64::try_from(max_body).unwrap_or(u64::MAX));
        Replay {
            raw,
            state: if announced_too_large {
                ReplayState::TooLarge
            } else {
                ReplayState::Ready
            },
            chunks: Vec::new(),
            body_len: 0,
            body_complete: end_of_stream,
            max_body,
        }
    }

    /// The host could not give the request headers: a mismatch passes through.
    pub fn unavailable() -> Self {
        Replay {
            raw: Vec::new(),
            state: ReplayState::Unsupported,
            chunks: Vec::new(),
            body_len: 0,
            body_complete: true,
            max_body: 0,
        }
    }

    /// The request came from a re-dispatch (loop guard).
    pub fn is_attempt(&self) -> bool {
        find_raw(&self.raw, ATTEMPT_HEADER.as_bytes()).is_some()
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_raw(&self.raw, name.as_bytes())
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

    /// The host could not give a body chunk: the copy would not be byte for byte.
    pub fn mark_unsupported(&mut self) {
        self.state = ReplayState::Unsupported;
        self.chunks = Vec::new();
        self.body_len = 0;
    }

    /// The request ended with trailers. A replay cannot carry them (the peer would get the body
    /// without them), and a replay is byte for byte or not at all: none is made.
    pub fn push_trailers(&mut self) {
        self.mark_unsupported();
        self.body_complete = true;
    }

    /// The body copied so far, in one piece.
    pub fn body(&mut self) -> &[u8] {
        if self.chunks.len() > 1 {
            let mut all = Vec::with_capacity(self.body_len);
            for c in self.chunks.drain(..) {
                all.extend_from_slice(&c);
            }
            self.chunks.push(all);
        }
        self.chunks.first().map_or(&[], Vec::as_slice)
    }

    /// Whether body chunks are still worth reading.
    pub fn wants_body(&self) -> bool {
        self.state == ReplayState::Ready && !self.body_complete
    }

    /// Appends one body chunk; `end` marks the end of the body (also the trailers).
    pub fn push_body(&mut self, chunk: &[u8], end: bool) {
        self.push_chunk(chunk.to_vec(), end);
    }

    /// `push_body` for a chunk the host handed out: kept without copying it.
    pub fn push_chunk(&mut self, chunk: Vec<u8>, end: bool) {
        if self.state == ReplayState::Ready {
            let len = self.body_len.saturating_add(chunk.len());
            if len > self.max_body {
                self.state = ReplayState::TooLarge;
                self.chunks = Vec::new();
                self.body_len = 0;
            } else if !chunk.is_empty() {
                self.body_len = len;
                self.chunks.push(chunk);
            }
        }
        if end {
            self.body_complete = true;
        }
    }

    /// How much of a chunk to read: up to one byte past the limit, so "too large" is still seen.
    pub fn read_limit(&self) -> usize {
        self.max_body
            .saturating_sub(self.body_len)
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
        r.push_chunk(b"abc".to_vec(), false);
        r.push_chunk(b"def".to_vec(), true);
        assert_eq!(r.body(), b"abcdef");
        assert!(r.request().is_ok());
    }
}
