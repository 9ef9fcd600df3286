//! Plugin configuration: any bytes Envoy could hand `on_configure`.
//! Never panics; a configuration that parses satisfies every documented bound (docs/design.md#configuration), and
//! writing it back out as JSON parses again to the very same configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixmode::core::config::{is_token_text, Config, Selection};
use serde_json::{json, Value};

/// Every field the parser keeps, written back as the JSON of docs/design.md#configuration.
fn to_json(c: &Config) -> Value {
    let d = &c.detect;
    let r = &c.redispatch;
    let g = &c.registry;
    let mut registry = json!({
        "stale_after_ms": g.stale_after_ms,
        "max_records": g.max_records,
        "allowed_cidrs": g.allowed_cidrs_text,
        "cross_pool": g.cross_pool,
    });
    if let Some(p) = &g.poll {
        registry["poll"] = json!({
            "targets": p.targets, "path": p.path, "interval_ms": p.interval_ms,
            "timeout_ms": p.timeout_ms, "cluster": p.cluster,
        });
    }
    if let Some(e) = &g.etcd {
        registry["etcd"] = json!({
            "cluster": e.cluster, "prefix": e.prefix,
            "poll_interval_ms": e.poll_interval_ms, "timeout_ms": e.timeout_ms,
        });
    }
    json!({
        "app": c.app,
        "pool": c.pool,
        "detect": {
            "statuses": d.statuses,
            "session_version_header": d.session_version_header,
            "app_version_header": d.app_version_header,
        },
        "redispatch": {
            "cluster": r.cluster, "max_attempts": r.max_attempts, "deadline_ms": r.deadline_ms,
            "attempt_timeout_ms": r.attempt_timeout_ms,
            "selection": match r.selection { Selection::Random => "random", Selection::Freshest => "freshest" },
            "max_replay_body_bytes": r.max_replay_body_bytes,
            "retry_timeouts_for_all_methods": r.retry_timeouts_for_all_methods,
        },
        "registry": registry,
        "heartbeat": {"path": c.heartbeat.path, "token": c.heartbeat.token},
    })
}

fn header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn check_bounds(c: &Config) {
    assert!(is_token_text(&c.app), "app {:?}", c.app);
    assert!(is_token_text(&c.pool), "pool {:?}", c.pool);
    assert!(!c.detect.statuses.is_empty());
    assert!(c.detect.statuses.iter().all(|s| (100..=599).contains(s)));
    assert!(header_name(&c.detect.session_version_header));
    assert!(header_name(&c.detect.app_version_header));
    let r = &c.redispatch;
    assert!(!r.cluster.is_empty());
    assert!(r.max_attempts >= 1 && r.deadline_ms >= 1 && r.attempt_timeout_ms >= 1);
    let g = &c.registry;
    assert!(g.stale_after_ms >= 1 && g.max_records >= 1);
    assert_eq!(g.allowed_cidrs.len(), g.allowed_cidrs_text.len());
    if let Some(p) = &g.poll {
        assert!(p.path.starts_with('/'));
        assert!(p.interval_ms >= 1 && p.interval_ms < g.stale_after_ms && p.timeout_ms >= 1);
        assert!(!p.cluster.is_empty());
        assert!(p
            .targets
            .iter()
            .all(|t| t.parse::<std::net::SocketAddr>().is_ok()));
    }
    if let Some(e) = &g.etcd {
        assert!(!e.cluster.is_empty() && !e.prefix.is_empty());
        assert!(e.poll_interval_ms >= 1 && e.poll_interval_ms < g.stale_after_ms);
        assert!(e.timeout_ms >= 1);
    }
    let h = &c.heartbeat;
    assert!(h.path.starts_with('/') && !h.path.bytes().any(|b| b <= 0x20 || b == 0x7f));
    assert!(!h.token.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let parsed = Config::parse(data);
    // The deterministic parse: the same bytes give the same verdict (no hidden state).
    let again = Config::parse(data);
    match (&parsed, &again) {
        (Ok(a), Ok(b)) => assert_eq!(to_json(a), to_json(b)),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("two parses of the same bytes disagree"),
    }
    match parsed {
        Ok(c) => {
            check_bounds(&c);
            let first = to_json(&c);
            let text = serde_json::to_vec(&first).unwrap_or_default();
            let back = match Config::parse(&text) {
                Ok(b) => b,
                Err(e) => panic!("a parsed configuration does not re-validate: {e}\n{first}"),
            };
            assert_eq!(
                to_json(&back),
                first,
                "re-validation changed the configuration"
            );
            assert_eq!(back.registry.allowed_cidrs, c.registry.allowed_cidrs);
        }
        Err(e) => {
            // The operator sees this line: it names a field path and a reason.
            let line = e.to_string();
            assert!(!e.message.is_empty());
            assert!(!line.is_empty());
        }
    }
});
