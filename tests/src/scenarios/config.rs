//! Plugin configurations the filter must refuse, naming the field.

use serde_json::json;

use super::plugin_config;
use crate::host::{Host, HostSpec};

/// An invalid plugin configuration: the host refuses to start (Envoy exits non-zero) and its
/// log names the offending field.
pub async fn invalid_plugin_config_refused_naming_the_field<H: Host>() {
    let cases = [
        (
            json!({"redispatch": {"max_attempts": 0}}),
            "redispatch.max_attempts",
        ),
        (json!({"redispatch": {"max_atempts": 3}}), "max_atempts"),
        (
            json!({"registry": {"stale_after_ms": "soon"}}),
            "registry.stale_after_ms",
        ),
        (
            json!({"redispatch": {"attempt_timeout_ms": 0}}),
            "redispatch.attempt_timeout_ms",
        ),
        (
            json!({"registry": {"allowed_cidrs": ["10.0.0.0/33"]}}),
            "registry.allowed_cidrs",
        ),
    ];
    for (overrides, field) in cases {
        let spec = HostSpec::new(&plugin_config(overrides.clone()), vec![]);
        match H::start(spec).await {
            Ok(_) => panic!("{}: {overrides} was accepted", H::NAME),
            Err(e) => {
                assert_ne!(e.exit_code, Some(0), "{overrides}");
                if H::NAME == "envoy" {
                    assert!(e.exit_code.is_some(), "Envoy should have exited: {e}");
                }
                assert!(
                    e.logs.contains(field),
                    "{}: log does not name {field}: {e}",
                    H::NAME
                );
            }
        }
    }
    // An empty app name is refused too; the plugin's log names `app`.
    let mut cfg = plugin_config(json!({}));
    cfg["app"] = json!("");
    let e = H::start(HostSpec::new(&cfg, vec![]))
        .await
        .err()
        .expect("an empty app was accepted");
    assert_ne!(e.exit_code, Some(0));
    assert!(names(&e.logs, "app"), "{e}");
}

/// Whether a log line other than an echo of the configuration itself mentions `field`.
fn names(logs: &str, field: &str) -> bool {
    logs.lines()
        .filter(|l| !l.contains("\"app\"") && !l.contains("mixmode_peers"))
        .any(|l| {
            l.contains(field)
                && (l.contains("error") || l.contains("wasm log") || l.contains("invalid"))
        })
}
