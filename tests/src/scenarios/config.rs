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
        if H::NAME.starts_with("envoy") {
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

/// The example's heartbeat token `change-me` (also the default when `heartbeat.token` is not
/// set) is accepted, so the example and the demo keep working, but the filter warns at start
/// with a line naming `heartbeat.token`. A configuration with its own token gets no warning.
pub async fn example_token_warned_at_start<H: Host>() {
    use crate::app::{HeartbeatClient, Registration};
    use crate::scenarios::dead_address;

    for (token, warned) in [
        (Some("change-me"), true),
        (None, true),
        (Some("own-6c1f"), false),
    ] {
        let mut config = plugin_config(json!({}));
        match token {
            Some(t) => config["heartbeat"]["token"] = json!(t),
            None => {
                config.as_object_mut().unwrap().remove("heartbeat");
            }
        }
        let host = match H::start(HostSpec::new(&config, vec![])).await {
            Ok(h) => h,
            Err(e) => panic!("{}: {config} refused: {e}", H::NAME),
        };
        // Configuration happens before the host serves: the line is there once it is up.
        let logs = host.logs();
        let warning = logs
            .lines()
            .find(|l| l.contains("heartbeat.token") && l.contains("change-me"));
        assert_eq!(
            warning.is_some(),
            warned,
            "{}: token {token:?}: warning {warning:?}; log:\n{logs}",
            H::NAME
        );
        if let Some(line) = warning {
            assert!(
                line.contains("[warning]") || line.contains("[warn]"),
                "{line}"
            );
        }
        // The token still works.
        let hb = HeartbeatClient::new(host.heartbeat_url(), token.unwrap_or("change-me"));
        let reg = Registration {
            app: "checkout".into(),
            version: "2".into(),
            address: dead_address().to_string(),
            pool: None,
        };
        hb.register(&reg).await.unwrap();
    }
}
