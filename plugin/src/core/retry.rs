//! The retry policy of docs/design.md#re-dispatch: attempt count, deadline, timeout safety.

use crate::core::config::Redispatch;

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The host refused the dispatch at once: nothing was sent.
    Refused,
    /// Envoy's own 503: the peer could not be reached or reset before answering.
    Unreachable,
    /// Envoy's own 504: the peer may have acted on the request.
    TimedOut,
    /// The call's stream was reset and Envoy reports it without headers. Envoy answers a peer
    /// that reset or closed *before* answering with its own 503 (`Unreachable`); a call arrives
    /// without headers only when the peer had begun answering (its headers reached Envoy, then
    /// the connection broke), or when the timeout hit while the answer was still arriving. In
    /// both cases the peer's app ran: it may have acted on the request, as after a timeout.
    ResetWhileAnswering,
    /// The peer reported a version mismatch too: it refused the request.
    PeerMismatch,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub max_attempts: u32,
    pub deadline_ms: u64,
    pub attempt_timeout_ms: u32,
    pub retry_timeouts_for_all_methods: bool,
}

impl From<&Redispatch> for Policy {
    fn from(r: &Redispatch) -> Self {
        Policy {
            max_attempts: r.max_attempts,
            deadline_ms: r.deadline_ms,
            attempt_timeout_ms: r.attempt_timeout_ms,
            retry_timeouts_for_all_methods: r.retry_timeouts_for_all_methods,
        }
    }
}

/// RFC 9110 §9.2.2: repeating these has the effect of sending them once.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

impl Policy {
    /// The timeout of the next attempt, or None when the deadline has passed. Never 0: Envoy
    /// reads a call timeout of 0 as "no timeout".
    pub fn next_timeout(&self, started_ms: u64, now_ms: u64) -> Option<u32> {
        let elapsed = now_ms.saturating_sub(started_ms);
        let remaining = self.deadline_ms.checked_sub(elapsed).filter(|r| *r > 0)?;
        let t = remaining.min(u64::from(self.attempt_timeout_ms));
        u32::try_from(t).ok().filter(|t| *t > 0)
    }

    /// Whether another peer may be tried after `attempts_made` attempts, the last of which failed
    /// with `last`.
    pub fn may_try_again(
        &self,
        attempts_made: u32,
        started_ms: u64,
        now_ms: u64,
        method: &str,
        last: Failure,
    ) -> bool {
        if attempts_made >= self.max_attempts {
            return false;
        }
        if matches!(last, Failure::TimedOut | Failure::ResetWhileAnswering)
            && !is_idempotent(method)
            && !self.retry_timeouts_for_all_methods
        {
            return false;
        }
        self.next_timeout(started_ms, now_ms).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Policy {
        Policy {
            max_attempts: 3,
            deadline_ms: 1000,
            attempt_timeout_ms: 300,
            retry_timeouts_for_all_methods: false,
        }
    }

    #[test]
    fn timeout_is_capped_by_the_deadline_and_never_zero() {
        assert_eq!(p().next_timeout(0, 0), Some(300));
        assert_eq!(p().next_timeout(0, 900), Some(100));
        assert_eq!(p().next_timeout(0, 999), Some(1));
        assert_eq!(p().next_timeout(0, 1000), None);
        assert_eq!(p().next_timeout(0, 5000), None);
        // A clock going backwards does not extend anything past the configured timeout.
        assert_eq!(p().next_timeout(100, 0), Some(300));
    }

    #[test]
    fn attempts_are_counted() {
        assert!(p().may_try_again(2, 0, 0, "GET", Failure::Unreachable));
        assert!(!p().may_try_again(3, 0, 0, "GET", Failure::Unreachable));
    }

    #[test]
    fn deadline_stops_retries() {
        assert!(!p().may_try_again(1, 0, 1000, "GET", Failure::Unreachable));
    }

    #[test]
    fn timed_out_non_idempotent_requests_are_not_retried() {
        assert!(!p().may_try_again(1, 0, 0, "POST", Failure::TimedOut));
        assert!(!p().may_try_again(1, 0, 0, "PATCH", Failure::TimedOut));
        assert!(p().may_try_again(1, 0, 0, "PUT", Failure::TimedOut));
        assert!(p().may_try_again(1, 0, 0, "GET", Failure::TimedOut));
        // A peer whose answer broke off had begun answering: its app ran.
        assert!(!p().may_try_again(1, 0, 0, "POST", Failure::ResetWhileAnswering));
        assert!(p().may_try_again(1, 0, 0, "GET", Failure::ResetWhileAnswering));
        // Refusals and unreachable peers never acted on the request.
        assert!(p().may_try_again(1, 0, 0, "POST", Failure::Unreachable));
        assert!(p().may_try_again(1, 0, 0, "POST", Failure::PeerMismatch));
        assert!(p().may_try_again(1, 0, 0, "POST", Failure::Refused));
        let all = Policy {
            retry_timeouts_for_all_methods: true,
            ..p()
        };
        assert!(all.may_try_again(1, 0, 0, "POST", Failure::TimedOut));
    }
}
