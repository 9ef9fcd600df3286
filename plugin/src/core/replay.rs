//! The copy of the request a replay needs, taken on the way in (design.md §3, §3a: the request
//! is gone in the response phase).

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayState {
    /// Headers copied, body complete or still arriving.
    Ready,
    /// The body went past `max_replay_body_bytes`.
    TooLarge,
    /// A header value the host cannot send unchanged (not UTF-8).
    Unsupported,
}

#[derive(Debug, Clone)]
pub struct Replay {
    pub state: ReplayState,
    pub method: String,
    /// Pseudo-headers first, as received, minus what must never be replayed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub body_complete: bool,
    /// The request came from a re-dispatch (loop guard).
    pub is_attempt: bool,
    max_body: usize,
}

impl Replay {
    /// `end_of_stream`: the request has no body.
    pub fn from_headers(
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        end_of_stream: bool,
        max_body: usize,
    ) -> Self {
        let mut r = Replay {
            state: ReplayState::Ready,
            method: String::new(),
            headers: Vec::with_capacity(pairs.len()),
            body: Vec::new(),
            body_complete: end_of_stream,
            is_attempt: false,
            max_body,
        };
        for (name, value) in pairs {
            if name.eq_ignore_ascii_case(ATTEMPT_HEADER.as_bytes()) {
                r.is_attempt = true;
                continue;
            }
            if name.eq_ignore_ascii_case(ORIGINAL_DST_HEADER.as_bytes()) || is_hop_by_hop(&name) {
                continue;
            }
            match (String::from_utf8(name), String::from_utf8(value)) {
                (Ok(n), Ok(v)) => {
                    if n == ":method" {
                        r.method = v.clone();
                    }
                    r.headers.push((n, v));
                }
                _ => {
                    r.state = ReplayState::Unsupported;
                    r.headers.clear();
                }
            }
            if r.state == ReplayState::Unsupported {
                break;
            }
        }
        r
    }

    /// The host could not give the request headers: a mismatch passes through.
    pub fn unavailable() -> Self {
        Replay {
            state: ReplayState::Unsupported,
            method: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            body_complete: true,
            is_attempt: false,
            max_body: 0,
        }
    }

    /// The host could not give a body chunk: the copy would not be byte for byte.
    pub fn mark_unsupported(&mut self) {
        self.state = ReplayState::Unsupported;
        self.body = Vec::new();
    }

    /// Whether body chunks are still worth reading.
    pub fn wants_body(&self) -> bool {
        self.state == ReplayState::Ready && !self.body_complete
    }

    /// Appends one body chunk; `end` marks the end of the body (also the trailers).
    pub fn push_body(&mut self, chunk: &[u8], end: bool) {
        if self.state == ReplayState::Ready {
            if self.body.len().saturating_add(chunk.len()) > self.max_body {
                self.state = ReplayState::TooLarge;
                self.body = Vec::new();
            } else {
                self.body.extend_from_slice(chunk);
            }
        }
        if end {
            self.body_complete = true;
        }
    }

    /// The body size a chunk read may fetch without going past the limit by more than one byte
    /// (so that "too large" is still detected).
    pub fn read_limit(&self) -> usize {
        self.max_body
            .saturating_sub(self.body.len())
            .saturating_add(1)
    }

    /// Headers of attempt `n` to `peer`: the target header first (ORIGINAL_DST honours the first
    /// copy), then the client's headers, then the attempt number.
    pub fn attempt_headers(&self, peer: &str, n: u32) -> Vec<(&str, String)> {
        let mut h: Vec<(&str, String)> = Vec::with_capacity(self.headers.len() + 2);
        h.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.clone())));
        h.push((ORIGINAL_DST_HEADER, peer.to_string()));
        h.push((ATTEMPT_HEADER, n.to_string()));
        h
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]
    use super::*;

    fn pairs(list: &[(&str, &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
        list.iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn keeps_the_request_minus_what_must_not_be_replayed() {
        let r = Replay::from_headers(
            pairs(&[
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
        assert_eq!(r.state, ReplayState::Ready);
        assert_eq!(r.method, "POST");
        assert!(!r.is_attempt);
        let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            vec![":method", ":path", ":authority", "cookie", "cookie"]
        );
        let h = r.attempt_headers("10.0.0.1:80", 2);
        assert_eq!(h[5], (ORIGINAL_DST_HEADER, "10.0.0.1:80".to_string()));
        assert_eq!(h[6], (ATTEMPT_HEADER, "2".to_string()));
        assert_eq!(
            h.iter().filter(|(k, _)| *k == ORIGINAL_DST_HEADER).count(),
            1
        );
    }

    #[test]
    fn attempt_header_marks_a_replayed_request() {
        let r = Replay::from_headers(
            pairs(&[(":method", b"GET"), ("x-mixmode-attempt", b"1")]),
            true,
            10,
        );
        assert!(r.is_attempt);
        assert!(r.headers.iter().all(|(k, _)| k != ATTEMPT_HEADER));
    }

    #[test]
    fn non_utf8_value_is_unsupported() {
        let r = Replay::from_headers(
            pairs(&[(":method", b"GET"), ("x-bin", b"\xff\xfe")]),
            true,
            10,
        );
        assert_eq!(r.state, ReplayState::Unsupported);
        assert!(!r.wants_body());
    }

    #[test]
    fn body_up_to_the_limit_is_kept_byte_for_byte() {
        let mut r = Replay::from_headers(pairs(&[(":method", b"POST")]), false, 6);
        assert!(r.wants_body());
        r.push_body(b"\x00\xffab", false);
        r.push_body(b"cd", true);
        assert_eq!(r.body, b"\x00\xffabcd");
        assert_eq!(r.state, ReplayState::Ready);
        assert!(!r.wants_body());
    }

    #[test]
    fn body_past_the_limit_is_too_large() {
        let mut r = Replay::from_headers(pairs(&[(":method", b"POST")]), false, 6);
        r.push_body(b"abcd", false);
        assert_eq!(r.read_limit(), 3);
        r.push_body(b"efg", false);
        assert_eq!(r.state, ReplayState::TooLarge);
        assert!(r.body.is_empty());
        assert!(!r.wants_body());
        r.push_body(b"h", true);
        assert_eq!(r.state, ReplayState::TooLarge);
        assert!(r.body_complete);
    }
}
