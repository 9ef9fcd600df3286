//! The mismatch signal of docs/design.md#the-mismatch-signal: decided on the response headers alone.

use crate::core::config::{Detect, MAX_NAME_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The status is not one of `detect.statuses`: nothing to look at.
    Unrelated,
    /// A detect status, but not a version mismatch (no or empty session version, equal versions).
    NotVersionError,
    /// A version mismatch (§2: a non-empty session version, and an app version that is absent or
    /// differs). `session_version` is the version to look up, or None when it is not one a
    /// server can register (1 to 128 printable ASCII characters without spaces, as heartbeats and
    /// etcd keys require): no peer can have it, so it is never looked up nor logged.
    Mismatch { session_version: Option<String> },
}

/// A version value the filter may act on: it becomes part of a registry key and a log line, so an
/// upstream cannot make the filter look up, or log, arbitrary bytes.
pub fn version_text(raw: &[u8]) -> Option<&str> {
    let trimmed = raw.trim_ascii();
    if trimmed.is_empty()
        || trimmed.len() > MAX_NAME_LEN
        || !trimmed.iter().all(|b| (0x21..=0x7e).contains(b))
    {
        return None;
    }
    std::str::from_utf8(trimmed).ok()
}

pub fn is_detect_status(detect: &Detect, status: u16) -> bool {
    detect.statuses.contains(&status)
}

/// `session_version` / `app_version` are the raw header values (None when absent). Values are
/// compared as bytes without the optional whitespace around them (RFC 9110 §5.5), whatever they
/// hold: an empty or unreadable app version is not the session's version.
pub fn classify(
    detect: &Detect,
    status: u16,
    session_version: Option<&[u8]>,
    app_version: Option<&[u8]>,
) -> Verdict {
    if !is_detect_status(detect, status) {
        return Verdict::Unrelated;
    }
    let Some(session) = session_version
        .map(<[u8]>::trim_ascii)
        .filter(|s| !s.is_empty())
    else {
        return Verdict::NotVersionError;
    };
    if app_version.is_some_and(|app| app.trim_ascii() == session) {
        return Verdict::NotVersionError;
    }
    Verdict::Mismatch {
        session_version: version_text(session).map(str::to_string),
    }
}

/// Parses a `:status` value.
pub fn parse_status(raw: &[u8]) -> Option<u16> {
    if raw.len() != 3 {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Detect {
        Detect::default()
    }

    fn mismatch(v: &str) -> Verdict {
        Verdict::Mismatch {
            session_version: Some(v.into()),
        }
    }

    /// A mismatch whose session version no server can register.
    const UNREGISTRABLE: Verdict = Verdict::Mismatch {
        session_version: None,
    };

    #[test]
    fn differing_versions_are_a_mismatch() {
        assert_eq!(classify(&d(), 409, Some(b"2"), Some(b"1")), mismatch("2"));
    }

    #[test]
    fn app_version_is_optional() {
        assert_eq!(classify(&d(), 409, Some(b"2"), None), mismatch("2"));
    }

    #[test]
    fn other_status_is_unrelated() {
        assert_eq!(
            classify(&d(), 500, Some(b"2"), Some(b"1")),
            Verdict::Unrelated
        );
        assert_eq!(classify(&d(), 200, None, None), Verdict::Unrelated);
    }

    #[test]
    fn missing_or_empty_session_version_is_not_a_version_error() {
        assert_eq!(
            classify(&d(), 409, None, Some(b"1")),
            Verdict::NotVersionError
        );
        assert_eq!(
            classify(&d(), 409, Some(b""), None),
            Verdict::NotVersionError
        );
        assert_eq!(
            classify(&d(), 409, Some(b"  "), None),
            Verdict::NotVersionError
        );
    }

    #[test]
    fn equal_versions_are_not_a_version_error() {
        assert_eq!(
            classify(&d(), 409, Some(b"2"), Some(b"2")),
            Verdict::NotVersionError
        );
        assert_eq!(
            classify(&d(), 409, Some(b" 2 "), Some(b"2")),
            Verdict::NotVersionError
        );
        assert_eq!(
            classify(&d(), 409, Some(b"2 beta"), Some(b"2 beta")),
            Verdict::NotVersionError
        );
    }

    /// docs/design.md#the-mismatch-signal: an app version that is present and differs makes a mismatch, also when it
    /// is empty or unreadable (it is not the session's version).
    #[test]
    fn an_empty_or_unreadable_app_version_differs() {
        assert_eq!(classify(&d(), 409, Some(b"2"), Some(b"")), mismatch("2"));
        assert_eq!(classify(&d(), 409, Some(b"2"), Some(b"  ")), mismatch("2"));
        assert_eq!(
            classify(&d(), 409, Some(b"2"), Some(b"\xff")),
            mismatch("2")
        );
    }

    /// docs/design.md#the-mismatch-signal: a present, non-empty session version is a mismatch whatever it holds; one
    /// that no server can register is never looked up (no peer can have it).
    #[test]
    fn any_non_empty_session_version_is_a_mismatch() {
        assert_eq!(
            classify(&d(), 409, Some(b"2 beta"), Some(b"1")),
            UNREGISTRABLE
        );
        assert_eq!(classify(&d(), 409, Some(b"2 beta"), None), UNREGISTRABLE);
        let long = vec![b'a'; 129];
        assert_eq!(classify(&d(), 409, Some(&long), Some(b"1")), UNREGISTRABLE);
        let ok = vec![b'a'; 128];
        assert_eq!(
            classify(&d(), 409, Some(&ok), Some(b"1")),
            mismatch(&"a".repeat(128))
        );
        assert_eq!(classify(&d(), 409, Some(b"2\x01"), None), UNREGISTRABLE);
        assert_eq!(
            classify(&d(), 409, Some("é".as_bytes()), None),
            UNREGISTRABLE
        );
    }

    #[test]
    fn configured_statuses_are_used() {
        let det = Detect {
            statuses: vec![412],
            ..Detect::default()
        };
        assert_eq!(classify(&det, 412, Some(b"2"), Some(b"1")), mismatch("2"));
        assert_eq!(
            classify(&det, 409, Some(b"2"), Some(b"1")),
            Verdict::Unrelated
        );
    }

    #[test]
    fn status_parsing() {
        assert_eq!(parse_status(b"409"), Some(409));
        assert_eq!(parse_status(b"4090"), None);
        assert_eq!(parse_status(b"4x9"), None);
    }
}
