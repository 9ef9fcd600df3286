//! The mismatch decision (docs/design.md#the-mismatch-signal) on whatever an upstream can send: any status, any header
//! bytes, in the proxy-wasm ABI's header-map serialization the glue reads them from.
//! Never panics; a mismatch implies a detect status, a non-empty session version, and an app
//! version that is absent or differs; everything that meets those rules is a mismatch; only a
//! session version a server can register (1-128 printable ASCII, no spaces) is looked up.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mixmode::core::config::Detect;
use mixmode::core::pairs::{find_raw, parse_pairs, serialize_pairs};
use mixmode::core::signal::{classify, parse_status, version_text, Verdict};

#[derive(Arbitrary, Debug)]
enum Input {
    /// A status and two header values, as the glue hands them to `classify`.
    Decided {
        statuses: Vec<u16>,
        status: u16,
        session: Option<Vec<u8>>,
        app: Option<Vec<u8>>,
        extra: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// A serialized header map straight from the host (possibly malformed).
    Raw { statuses: Vec<u16>, map: Vec<u8> },
}

fn detect(statuses: Vec<u16>) -> Detect {
    let mut d = Detect::default();
    if !statuses.is_empty() {
        d.statuses = statuses.into_iter().take(8).collect();
    }
    d
}

/// The specification of §2, written independently of `signal.rs`.
fn expected(d: &Detect, status: u16, session: Option<&[u8]>, app: Option<&[u8]>) -> Verdict {
    if !d.statuses.contains(&status) {
        return Verdict::Unrelated;
    }
    let Some(s) = session.map(|s| s.trim_ascii()).filter(|s| !s.is_empty()) else {
        return Verdict::NotVersionError;
    };
    if app.is_some_and(|a| a.trim_ascii() == s) {
        return Verdict::NotVersionError;
    }
    let registrable =
        s.len() <= 128 && s.iter().all(|b| (0x21..=0x7e).contains(b));
    Verdict::Mismatch {
        session_version: registrable.then(|| String::from_utf8_lossy(s).into_owned()),
    }
}

fn check(d: &Detect, status: u16, session: Option<&[u8]>, app: Option<&[u8]>) {
    let v = classify(d, status, session, app);
    if let Verdict::Mismatch { session_version } = &v {
        assert!(d.statuses.contains(&status));
        let raw = session.map(|s| s.trim_ascii()).unwrap_or_default();
        assert!(!raw.is_empty());
        if let Some(a) = app {
            assert_ne!(a.trim_ascii(), raw);
        }
        // Only a version a server can register is ever looked up.
        if let Some(sv) = session_version {
            assert!(!sv.is_empty() && sv.len() <= 128);
            assert!(sv.bytes().all(|b| (0x21..=0x7e).contains(&b)));
            assert_eq!(session.and_then(version_text), Some(sv.as_str()));
        }
    }
    assert_eq!(v, expected(d, status, session, app));
}

fn decide_from_map(d: &Detect, map: &[u8]) {
    let Some(status) = find_raw(map, b":status").and_then(parse_status) else {
        return;
    };
    assert!(status <= 999);
    let sv = find_raw(map, d.session_version_header.as_bytes());
    let av = find_raw(map, d.app_version_header.as_bytes());
    check(d, status, sv, av);
}

fuzz_target!(|input: Input| match input {
    Input::Decided {
        statuses,
        status,
        session,
        app,
        extra,
    } => {
        let d = detect(statuses);
        check(&d, status, session.as_deref(), app.as_deref());

        // The same response as Envoy serializes it: the map round-trips, and the first value of
        // each header is what the decision sees.
        let status_text = status.to_string();
        let mut pairs: Vec<(&[u8], &[u8])> = vec![(b":status", status_text.as_bytes())];
        if let Some(s) = &session {
            pairs.push((b"x-session-version", s));
        }
        if let Some(a) = &app {
            pairs.push((b"X-App-Version", a));
        }
        pairs.extend(
            extra
                .iter()
                .take(16)
                .map(|(k, v)| (k.as_slice(), v.as_slice())),
        );
        let Some(map) = serialize_pairs(&pairs) else {
            return;
        };
        let back = parse_pairs(&map).unwrap_or_default();
        assert_eq!(back.len(), pairs.len());
        for ((k, v), (bk, bv)) in pairs.iter().zip(&back) {
            assert_eq!((*k, *v), (bk.as_slice(), bv.as_slice()));
        }
        if session.is_some() {
            assert_eq!(find_raw(&map, b"X-Session-Version"), session.as_deref());
        }
        if (100..=999).contains(&status) {
            assert_eq!(
                find_raw(&map, b":status").and_then(parse_status),
                Some(status)
            );
        }
        decide_from_map(&d, &map);
    }
    Input::Raw { statuses, map } => {
        let d = detect(statuses);
        // A malformed map decodes to nothing, never to a prefix the glue might act on.
        if let Some(pairs) = parse_pairs(&map) {
            let again: Vec<(&[u8], &[u8])> = pairs
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            if let Some(bytes) = serialize_pairs(&again) {
                assert_eq!(parse_pairs(&bytes), Some(pairs.clone()));
            }
        }
        decide_from_map(&d, &map);
    }
});
