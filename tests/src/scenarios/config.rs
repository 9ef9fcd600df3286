//! Plugin configurations the filter must refuse, naming the field.

use serde_json::{json, Value};

use super::plugin_config;
use crate::host::{Host, HostSpec};

/// An invalid plugin configuration: the host refuses to start (Envoy exits non-zero) and its
/// log names the offending field by its full path.
pub async fn invalid_plugin_config_refused_naming_the_field<H: Host>() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"redispatch": {"max_attempts": 0}}),
            "redispatch.max_attempts",
        ),
        (
            json!({"redispatch": {"max_atempts": 3}}),
            "redispatch.max_atempts",
        ),
        (
            json!({"registry": {"stale_after_ms": "soon"}}),
            "registry.stale_after_ms",
        ),
        (
            json!({"redispatch": {"attempt_timeout_ms": 0}}),
            "redispatch.attempt_timeout_ms",
        ),
        (
            json!({"redispatch": {"selection": "round_robin"}}),
            "redispatch.selection",
        ),
        (
            json!({"registry": {"allowed_cidrs": ["10.0.0.0/33"]}}),
            "registry.allowed_cidrs",
        ),
        (json!({"detect": {"statuses": []}}), "detect.statuses"),
        (json!({"app": ""}), "app: "),
    ];
    // Each refusal is a whole host start-up: run them side by side.
    let mut runs = tokio::task::JoinSet::new();
    for (overrides, field) in cases {
        runs.spawn(async move {
            let spec = HostSpec::new(&plugin_config(overrides.clone()), vec![]);
            (overrides, field, H::start(spec).await.err())
        });
    }
    while let Some(run) = runs.join_next().await {
        let (overrides, field, refusal) = run.unwrap();
        let Some(e) = refusal else {
            panic!("{}: {overrides} was accepted", H::NAME);
        };
        assert_ne!(e.exit_code, Some(0), "{overrides}");
        if H::NAME == "envoy" {
            assert!(e.exit_code.is_some(), "Envoy should have exited: {e}");
        }
        assert!(
            names(&e.logs, field),
            "{}: log does not name {field}: {e}",
            H::NAME
        );
    }
}

/// Whether a log line other than an echo of the configuration itself names `field`.
fn names(logs: &str, field: &str) -> bool {
    logs.lines()
        .filter(|l| !l.contains("\"app\"") && !l.contains("mixmode_peers"))
        .any(|l| l.contains(field))
}
