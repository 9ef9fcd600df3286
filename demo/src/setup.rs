//! The five ways to run the pool during a deploy, each an Envoy configuration derived from
//! `envoy/envoy.yaml` (the file users copy): only what the setup is about changes.
//!
//! Every setup gets the same pool mechanics so the comparison is fair (docs/design.md#rolling-deploys-a-fair-comparison): the pool's
//! members come from a file the deploy rewrites (the drain lever: a draining server leaves the
//! load balancer while it keeps serving), and a raised retry circuit breaker (Envoy's default
//! of 3 concurrent retries overflows during a rollout and turns retries into 503s).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use mixmode_tests::envoy::config::{render, Patch, ENVOY_YAML};
use serde_norway::Value;

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const AFFINITY_FILTERS: [&str; 2] = [
    "envoy.filters.http.header_mutation",
    "envoy.filters.http.stateful_session",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    RoundRobin,
    Retries,
    Sticky,
    Mixmode,
    /// mixmode with version affinity (docs/design.md#version-affinity): the example's `affinity` block and its two
    /// Envoy filters (header_mutation, stateful_session), which the other setups go without.
    MixmodeAffinity,
}

impl Setup {
    pub const ALL: [Setup; 5] = [
        Setup::RoundRobin,
        Setup::Retries,
        Setup::Sticky,
        Setup::Mixmode,
        Setup::MixmodeAffinity,
    ];

    /// Short key (summary JSON, chart legend).
    pub fn key(self) -> &'static str {
        match self {
            Setup::RoundRobin => "round-robin",
            Setup::Retries => "retry-409",
            Setup::Sticky => "sticky",
            Setup::Mixmode => "mixmode",
            Setup::MixmodeAffinity => "mixmode+affinity",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Setup::RoundRobin => "Envoy round robin, no filter",
            Setup::Retries => "Envoy retries on 409 (previous_hosts, 3 retries)",
            Setup::Sticky => "Envoy ring hash on the user's cookie (sticky sessions)",
            Setup::Mixmode => "Envoy + mixmode",
            Setup::MixmodeAffinity => "Envoy + mixmode + version affinity (stateful session)",
        }
    }

    pub fn uses_mixmode(self) -> bool {
        matches!(self, Setup::Mixmode | Setup::MixmodeAffinity)
    }

    pub fn uses_affinity(self) -> bool {
        self == Setup::MixmodeAffinity
    }
}

/// What the demo's Envoy is built from.
pub struct Render<'a> {
    pub setup: Setup,
    pub wasm: &'a Path,
    pub plugin_config: &'a serde_json::Value,
    pub upstreams: &'a [SocketAddr],
    /// The pool's endpoints file (see [`write_eds`]).
    pub eds_path: &'a Path,
}

/// The heartbeat token and path every demo Envoy is configured with.
pub const TOKEN: &str = "demo-heartbeat-token";
pub const HEARTBEAT_PATH: &str = "/.well-known/mixmode/heartbeat";

/// The mixmode plugin configuration of the demo: the example's defaults with a token of its own;
/// the example's `affinity` block only for the affinity setup.
pub fn plugin_config(token: &str, setup: Setup) -> Result<serde_json::Value> {
    let mut cfg = mixmode_tests::envoy::example_plugin_config()?;
    cfg["heartbeat"]["token"] = serde_json::Value::from(token);
    if !setup.uses_affinity() {
        if let Some(m) = cfg.as_object_mut() {
            m.remove("affinity");
        }
    }
    Ok(cfg)
}

pub fn render_yaml(r: &Render<'_>) -> Result<String> {
    let base = render(
        ENVOY_YAML,
        &Patch {
            wasm: r.wasm,
            plugin_config: &r.plugin_config.to_string(),
            upstreams: r.upstreams,
            public_port: 0,
            heartbeat_port: 0,
            admin_port: 0,
            listen_address: "127.0.0.1",
        },
    )?;
    let mut doc: Value = serde_norway::from_str(&base).context("parse rendered envoy.yaml")?;

    let listeners = seq_mut(&mut doc, &["static_resources", "listeners"])?;
    for listener in listeners.iter_mut() {
        let is_public = listener.get("name").and_then(Value::as_str) == Some("public");
        let hcm = listener
            .get_mut("filter_chains")
            .and_then(|c| c.get_mut(0))
            .and_then(|c| c.get_mut("filters"))
            .and_then(|f| f.get_mut(0))
            .and_then(|f| f.get_mut("typed_config"))
            .ok_or_else(|| anyhow!("listener without an HTTP connection manager"))?;
        if !r.setup.uses_mixmode() {
            // "No filter" means no wasm VM at all, on either listener.
            if let Some(filters) = hcm.get_mut("http_filters").and_then(Value::as_sequence_mut) {
                filters.retain(|f| {
                    f.get("typed_config")
                        .and_then(|t| t.get("@type"))
                        .and_then(Value::as_str)
                        != Some(WASM_TYPE)
                });
            }
        }
        if !r.setup.uses_affinity() {
            // Affinity's two Envoy filters belong to the affinity setup only.
            if let Some(filters) = hcm.get_mut("http_filters").and_then(Value::as_sequence_mut) {
                filters.retain(|f| {
                    !AFFINITY_FILTERS.contains(&f.get("name").and_then(Value::as_str).unwrap_or(""))
                });
            }
        }
        if is_public {
            if let Some(path) = std::env::var_os("DEMO_ACCESS_LOG") {
                // Debugging aid: which host answered what, with Envoy's response flags.
                insert(
                        hcm,
                        "access_log",
                        yaml(&format!(
                            "[{{name: envoy.access_loggers.file, typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: {}, log_format: {{text_format_source: {{inline_string: \"%START_TIME(%s.%3f)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% %UPSTREAM_TRANSPORT_FAILURE_REASON%\\n\"}}}}}}}}]",
                            path.to_string_lossy()
                        ))?,
                    );
            }
        }
        let routes = hcm
            .get_mut("route_config")
            .and_then(|c| c.get_mut("virtual_hosts"))
            .and_then(|v| v.get_mut(0))
            .and_then(|v| v.get_mut("routes"))
            .and_then(Value::as_sequence_mut)
            .ok_or_else(|| anyhow!("listener without routes"))?;
        if !r.setup.uses_mixmode() {
            // Per-route settings name the filter; without the filter they must go too.
            for route in routes.iter_mut() {
                if let Some(m) = route.as_mapping_mut() {
                    m.remove("typed_per_filter_config");
                }
            }
        }
        if is_public {
            let route = routes
                .iter_mut()
                .find(|r| {
                    r.get("route")
                        .and_then(|r| r.get("cluster"))
                        .and_then(Value::as_str)
                        == Some("app")
                })
                .and_then(|r| r.get_mut("route"))
                .ok_or_else(|| anyhow!("public listener without a route to cluster app"))?;
            // The example's single connect-failure retry is a choice of the example; the demo
            // compares setups that differ only in what they are about (retry-409 sets its own).
            if let Some(m) = route.as_mapping_mut() {
                m.remove("retry_policy");
            }
            match r.setup {
                Setup::Retries => insert(
                    route,
                    "retry_policy",
                    yaml(
                        "{retry_on: \"retriable-status-codes,connect-failure\", \
                          retriable_status_codes: [409], num_retries: 3, \
                          retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, \
                            typed_config: {\"@type\": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}], \
                          host_selection_retry_max_attempts: 5}",
                    )?,
                ),
                // On the user's own cookie, which every step carries. Hashing the `session`
                // cookie instead leaves each transfer's first step unhashed (no cookie yet, so a
                // random host) and its second step on another host: 19 % lost in a quick run.
                Setup::Sticky => insert(route, "hash_policy", yaml("[{cookie: {name: user}}]")?),
                Setup::RoundRobin | Setup::Mixmode | Setup::MixmodeAffinity => {}
            }
        }
    }

    let clusters = seq_mut(&mut doc, &["static_resources", "clusters"])?;
    let app = clusters
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some("app"))
        .ok_or_else(|| anyhow!("no cluster app"))?;
    // The pool comes from a file (EDS over the filesystem) that the deploy rewrites: removing
    // a server from it is how a server is drained. Envoy 1.40's active health checks were
    // tried first: hosts showed `failed_active_hc` in /clusters, yet the load balancer kept
    // choosing most of them (measured with an access log), so a failing /health did not drain.
    if let Some(m) = app.as_mapping_mut() {
        m.remove("load_assignment");
        m.remove("health_checks");
    }
    insert(app, "type", Value::from("EDS"));
    insert(
        app,
        "eds_cluster_config",
        yaml(&format!(
            "{{eds_config: {{resource_api_version: V3, path_config_source: {{path: \"{}\"}}}}}}",
            r.eds_path.display()
        ))?,
    );
    insert(
        app,
        "circuit_breakers",
        yaml(
            "{thresholds: [{max_retries: 1000, max_pending_requests: 10000, max_requests: 10000}]}",
        )?,
    );
    if r.setup == Setup::Sticky {
        insert(app, "lb_policy", Value::from("RING_HASH"));
    }
    serde_norway::to_string(&doc).context("write YAML")
}

/// Writes the pool's members for Envoy to pick up: a new file renamed over the old one (Envoy
/// watches for the move), with a new version each time.
pub fn write_eds(path: &Path, version: u64, members: &[SocketAddr]) -> Result<()> {
    let endpoints: Vec<serde_json::Value> = members
        .iter()
        .map(|a| {
            serde_json::json!({"endpoint": {"address": {"socket_address": {
                "address": a.ip().to_string(), "port_value": a.port()}}}})
        })
        .collect();
    let doc = serde_json::json!({
        "version_info": version.to_string(),
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "cluster_name": "app",
            "endpoints": [{"lb_endpoints": endpoints}],
        }],
    });
    let tmp = path.with_extension(format!("tmp{version}"));
    std::fs::write(&tmp, serde_json::to_vec(&doc)?)
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

fn yaml(text: &str) -> Result<Value> {
    serde_norway::from_str(text).with_context(|| format!("demo YAML fragment {text}"))
}

fn insert(v: &mut Value, key: &str, value: Value) {
    if let Some(m) = v.as_mapping_mut() {
        m.insert(Value::from(key), value);
    }
}

fn seq_mut<'v>(v: &'v mut Value, path: &[&str]) -> Result<&'v mut Vec<Value>> {
    let mut cur = v;
    for key in path {
        cur = cur
            .get_mut(*key)
            .ok_or_else(|| anyhow!("envoy.yaml has no {key}"))?;
    }
    cur.as_sequence_mut()
        .ok_or_else(|| anyhow!("{} is not a list", path.join(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(setup: Setup) -> String {
        let cfg = plugin_config("t", setup).unwrap();
        let ups = ["127.0.0.1:1".parse().unwrap()];
        render_yaml(&Render {
            setup,
            wasm: Path::new("/x/mixmode.wasm"),
            plugin_config: &cfg,
            upstreams: &ups,
            eds_path: Path::new("/x/eds.json"),
        })
        .unwrap()
    }

    #[test]
    fn only_the_mixmode_setup_loads_the_filter() {
        assert!(rendered(Setup::Mixmode).contains("/x/mixmode.wasm"));
        for s in [Setup::RoundRobin, Setup::Retries, Setup::Sticky] {
            let y = rendered(s);
            assert!(!y.contains("mixmode.wasm"), "{s:?}");
            assert!(y.contains("max_retries: 1000"), "{s:?}");
            assert!(y.contains("/x/eds.json"), "{s:?}");
        }
        assert!(rendered(Setup::Retries).contains("previous_hosts"));
        assert!(rendered(Setup::Sticky).contains("RING_HASH"));
        assert!(!rendered(Setup::RoundRobin).contains("retry_policy"));
    }

    #[test]
    fn only_the_affinity_setup_has_affinity() {
        for s in Setup::ALL {
            let y = rendered(s);
            let on = s.uses_affinity();
            assert_eq!(y.contains("stateful_session"), on, "{s:?}");
            assert_eq!(y.contains("header_mutation"), on, "{s:?}");
            assert_eq!(y.contains("{\"affinity\":"), on, "{s:?}");
            assert!(!y.contains("retry_policy") || s == Setup::Retries, "{s:?}");
        }
        assert!(plugin_config("t", Setup::MixmodeAffinity).unwrap()["affinity"].is_object());
        assert!(plugin_config("t", Setup::Mixmode)
            .unwrap()
            .get("affinity")
            .is_none());
    }
}
