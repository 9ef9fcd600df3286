//! Turns `envoy/envoy.yaml` (the file users copy) into a runnable configuration: only ports,
//! the pool's addresses, the .wasm path and the plugin configuration change.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_norway::{Mapping, Value};

/// The example configuration, compiled in so the tests always exercise the file in the repo.
pub const ENVOY_YAML: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy/envoy.yaml"));

/// Listener names in `envoy.yaml`.
pub const PUBLIC_LISTENER: &str = "public";
pub const HEARTBEAT_LISTENER: &str = "heartbeat";
/// The `@type` of the wasm HTTP filter: filters are found by type, not by name.
const WASM_FILTER: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// What the launcher changes.
#[derive(Debug, Clone)]
pub struct Patch<'a> {
    pub wasm: &'a Path,
    /// The plugin configuration JSON, as text (it may be deliberately invalid).
    pub plugin_config: &'a str,
    pub upstreams: &'a [SocketAddr],
    /// 0 = any free port (read back from the admin API).
    pub public_port: u16,
    pub heartbeat_port: u16,
    pub admin_port: u16,
    /// Bind address of both listeners; loopback in tests.
    pub listen_address: &'a str,
}

/// Applies `patch` to the YAML text and returns the new YAML text.
pub fn render(yaml: &str, patch: &Patch<'_>) -> Result<String> {
    let mut doc: Value = serde_norway::from_str(yaml).context("parse envoy.yaml")?;
    let admin_addr = at(&mut doc, &["admin", "address", "socket_address"])?;
    set(admin_addr, "address", Value::from("127.0.0.1"));
    set(admin_addr, "port_value", Value::from(patch.admin_port));

    let listeners = at(&mut doc, &["static_resources", "listeners"])?
        .as_sequence_mut()
        .ok_or_else(|| anyhow!("static_resources.listeners is not a list"))?;
    let mut seen = Vec::new();
    let mut wasm_filters = 0;
    for listener in listeners.iter_mut() {
        let name = listener
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let port = match name.as_str() {
            PUBLIC_LISTENER => patch.public_port,
            HEARTBEAT_LISTENER => patch.heartbeat_port,
            other => bail!("envoy.yaml has an unexpected listener {other:?}"),
        };
        let sa = at(listener, &["address", "socket_address"])?;
        set(sa, "address", Value::from(patch.listen_address));
        set(sa, "port_value", Value::from(port));
        wasm_filters += patch_wasm_filters(listener, patch)?;
        seen.push(name);
    }
    if !seen.iter().any(|n| n == PUBLIC_LISTENER) || !seen.iter().any(|n| n == HEARTBEAT_LISTENER) {
        bail!("envoy.yaml must have listeners {PUBLIC_LISTENER:?} and {HEARTBEAT_LISTENER:?}, has {seen:?}");
    }
    if wasm_filters < 2 {
        bail!("envoy.yaml must load the mixmode filter on both listeners (found {wasm_filters})");
    }

    let clusters = at(&mut doc, &["static_resources", "clusters"])?
        .as_sequence_mut()
        .ok_or_else(|| anyhow!("static_resources.clusters is not a list"))?;
    let app = clusters
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some("app"))
        .ok_or_else(|| anyhow!("envoy.yaml has no cluster \"app\""))?;
    let endpoints: Vec<Value> = patch
        .upstreams
        .iter()
        .map(|a| {
            serde_norway::from_str(&format!(
                "endpoint: {{address: {{socket_address: {{address: \"{}\", port_value: {}}}}}}}",
                a.ip(),
                a.port()
            ))
        })
        .collect::<Result<_, _>>()?;
    let eps = at(app, &["load_assignment", "endpoints"])?;
    *eps = serde_norway::from_str("[{lb_endpoints: []}]")?;
    let first = eps
        .as_sequence_mut()
        .and_then(|s| s.first_mut())
        .ok_or_else(|| anyhow!("endpoints"))?;
    set(first, "lb_endpoints", Value::Sequence(endpoints));

    serde_norway::to_string(&doc).context("write YAML")
}

/// Points the clusters named in `clusters` at one endpoint each, adding a STATIC cluster for a
/// name the file does not have (e.g. `etcd` for `registry.etcd`).
pub fn with_clusters(yaml: &str, clusters: &[(String, SocketAddr)]) -> Result<String> {
    if clusters.is_empty() {
        return Ok(yaml.to_string());
    }
    let mut doc: Value = serde_norway::from_str(yaml).context("parse envoy.yaml")?;
    let list = at(&mut doc, &["static_resources", "clusters"])?
        .as_sequence_mut()
        .ok_or_else(|| anyhow!("static_resources.clusters is not a list"))?;
    for (name, addr) in clusters {
        let cluster: Value = serde_norway::from_str(&format!(
            "{{name: \"{name}\", type: STATIC, connect_timeout: 1s, load_assignment: {{cluster_name: \"{name}\", endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: \"{}\", port_value: {}}}}}}}}}]}}]}}}}",
            addr.ip(),
            addr.port()
        ))?;
        match list
            .iter_mut()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name.as_str()))
        {
            Some(existing) => *existing = cluster,
            None => list.push(cluster),
        }
    }
    serde_norway::to_string(&doc).context("write YAML")
}

/// Adds a copy of the public listener named `name` (port 0: a free one) whose mixmode filters
/// carry `plugin_config`: a second pool served by the same Envoy, with the same `vm_id`.
pub fn with_public_copy(yaml: &str, name: &str, plugin_config: &str) -> Result<String> {
    let mut doc: Value = serde_norway::from_str(yaml).context("parse envoy.yaml")?;
    let listeners = at(&mut doc, &["static_resources", "listeners"])?
        .as_sequence_mut()
        .ok_or_else(|| anyhow!("static_resources.listeners is not a list"))?;
    let mut copy = listeners
        .iter()
        .find(|l| l.get("name").and_then(Value::as_str) == Some(PUBLIC_LISTENER))
        .cloned()
        .ok_or_else(|| anyhow!("no listener {PUBLIC_LISTENER:?}"))?;
    set(&mut copy, "name", Value::from(name));
    set(
        at(&mut copy, &["address", "socket_address"])?,
        "port_value",
        Value::from(0),
    );
    let mut n = 0;
    for chain in at(&mut copy, &["filter_chains"])?
        .as_sequence_mut()
        .into_iter()
        .flatten()
    {
        for f in chain
            .get_mut("filters")
            .and_then(Value::as_sequence_mut)
            .into_iter()
            .flatten()
        {
            // Its own stats prefix, so its counters do not mix with the public listener's.
            if let Some(hcm) = f.get_mut("typed_config") {
                if hcm.get("stat_prefix").is_some() {
                    set(hcm, "stat_prefix", Value::from(name));
                }
            }
            for hf in f
                .get_mut("typed_config")
                .and_then(|t| t.get_mut("http_filters"))
                .and_then(Value::as_sequence_mut)
                .into_iter()
                .flatten()
            {
                if is_wasm_filter(hf) {
                    let configuration = at(hf, &["typed_config", "config", "configuration"])?;
                    set(configuration, "value", Value::from(plugin_config));
                    n += 1;
                }
            }
        }
    }
    if n == 0 {
        bail!("the public listener has no mixmode filter");
    }
    listeners.push(copy);
    serde_norway::to_string(&doc).context("write YAML")
}

/// Sets `per_connection_buffer_limit_bytes` of the public listener (how much of a held error
/// response Envoy buffers, see envoy.yaml).
pub fn with_public_buffer_limit(yaml: &str, bytes: u32) -> Result<String> {
    let mut doc: Value = serde_norway::from_str(yaml).context("parse envoy.yaml")?;
    let listeners = at(&mut doc, &["static_resources", "listeners"])?
        .as_sequence_mut()
        .ok_or_else(|| anyhow!("static_resources.listeners is not a list"))?;
    let public = listeners
        .iter_mut()
        .find(|l| l.get("name").and_then(Value::as_str) == Some(PUBLIC_LISTENER))
        .ok_or_else(|| anyhow!("no listener {PUBLIC_LISTENER:?}"))?;
    set(
        public,
        "per_connection_buffer_limit_bytes",
        Value::from(bytes),
    );
    serde_norway::to_string(&doc).context("write YAML")
}

/// Lets HTTP/1 request trailers through the public listener (`http_protocol_options.
/// enable_trailers`; Envoy drops them in its codec by default, before any filter sees them).
pub fn with_http1_trailers(yaml: &str) -> Result<String> {
    let mut doc: Value = serde_norway::from_str(yaml).context("parse envoy.yaml")?;
    let listeners = at(&mut doc, &["static_resources", "listeners"])?
        .as_sequence_mut()
        .ok_or_else(|| anyhow!("static_resources.listeners is not a list"))?;
    let public = listeners
        .iter_mut()
        .find(|l| l.get("name").and_then(Value::as_str) == Some(PUBLIC_LISTENER))
        .ok_or_else(|| anyhow!("no listener {PUBLIC_LISTENER:?}"))?;
    let chains = public
        .get_mut("filter_chains")
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| anyhow!("listener without filter_chains"))?;
    for chain in chains {
        let filters = chain
            .get_mut("filters")
            .and_then(Value::as_sequence_mut)
            .ok_or_else(|| anyhow!("filter chain without filters"))?;
        for f in filters {
            if let Some(hcm) = f.get_mut("typed_config") {
                set(
                    hcm,
                    "http_protocol_options",
                    serde_norway::from_str("{enable_trailers: true}")?,
                );
            }
        }
    }
    serde_norway::to_string(&doc).context("write YAML")
}

/// Moves the listeners of a rendered configuration into an LDS file Envoy watches
/// (`dynamic_resources.lds_config.path_config_source`), as a control plane that writes files
/// would serve them. Returns (bootstrap, LDS file text); the LDS file must be written at
/// `lds_path`, and replaced by a rename to push an update.
pub fn to_file_lds(yaml: &str, lds_path: &Path) -> Result<(String, String)> {
    let mut doc: Value = serde_norway::from_str(yaml).context("parse envoy.yaml")?;
    let statics = at(&mut doc, &["static_resources"])?
        .as_mapping_mut()
        .ok_or_else(|| anyhow!("static_resources is not a mapping"))?;
    let listeners = statics
        .remove("listeners")
        .and_then(|l| match l {
            Value::Sequence(s) => Some(s),
            _ => None,
        })
        .ok_or_else(|| anyhow!("static_resources.listeners is not a list"))?;
    let resources: Vec<Value> = listeners
        .into_iter()
        .map(|mut l| {
            if let Some(m) = l.as_mapping_mut() {
                m.insert(Value::from("@type"), Value::from(LISTENER_TYPE));
            }
            l
        })
        .collect();
    let mut lds = Mapping::new();
    lds.insert(Value::from("resources"), Value::Sequence(resources));
    let dynamic: Value = serde_norway::from_str(&format!(
        "{{lds_config: {{resource_api_version: V3, path_config_source: {{path: \"{}\"}}}}}}",
        lds_path.display()
    ))?;
    // Any xDS subscription, even a file, needs the node's identity.
    let node: Value = serde_norway::from_str("{id: mixmode-test, cluster: mixmode-test}")?;
    if let Some(m) = doc.as_mapping_mut() {
        m.insert(Value::from("dynamic_resources"), dynamic);
        m.insert(Value::from("node"), node);
    }
    Ok((
        serde_norway::to_string(&doc).context("write YAML")?,
        serde_norway::to_string(&Value::Mapping(lds)).context("write YAML")?,
    ))
}

/// The LDS file text with `plugin_config` as the configuration of every mixmode filter.
pub fn lds_with_plugin_config(lds: &str, plugin_config: &str) -> Result<String> {
    let mut doc: Value = serde_norway::from_str(lds).context("parse LDS file")?;
    let listeners = at(&mut doc, &["resources"])?
        .as_sequence_mut()
        .ok_or_else(|| anyhow!("resources is not a list"))?;
    let mut n = 0;
    for listener in listeners {
        n += for_each_wasm_filter(listener, |config| {
            set(
                at(config, &["configuration"])?,
                "value",
                Value::from(plugin_config),
            );
            Ok(())
        })?;
    }
    if n < 2 {
        bail!("the LDS file must load the mixmode filter on both listeners (found {n})");
    }
    serde_norway::to_string(&doc).context("write YAML")
}

const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

/// Sets the .wasm path and plugin configuration of every wasm filter of a listener.
fn patch_wasm_filters(listener: &mut Value, patch: &Patch<'_>) -> Result<usize> {
    for_each_wasm_filter(listener, |config| {
        let local = at(config, &["vm_config", "code", "local"])?;
        set(
            local,
            "filename",
            Value::from(patch.wasm.display().to_string()),
        );
        let configuration = at(config, &["configuration"])?;
        set(configuration, "value", Value::from(patch.plugin_config));
        Ok(())
    })
}

/// Calls `f` with the `typed_config.config` of every wasm HTTP filter of a listener; returns
/// how many there were.
fn for_each_wasm_filter(
    listener: &mut Value,
    mut f: impl FnMut(&mut Value) -> Result<()>,
) -> Result<usize> {
    let mut n = 0;
    let chains = listener
        .get_mut("filter_chains")
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| anyhow!("listener without filter_chains"))?;
    for chain in chains {
        let filters = chain
            .get_mut("filters")
            .and_then(Value::as_sequence_mut)
            .ok_or_else(|| anyhow!("filter chain without filters"))?;
        for filter in filters {
            let Some(http_filters) = filter
                .get_mut("typed_config")
                .and_then(|t| t.get_mut("http_filters"))
                .and_then(Value::as_sequence_mut)
            else {
                continue;
            };
            for hf in http_filters {
                if !is_wasm_filter(hf) {
                    continue;
                }
                f(at(hf, &["typed_config", "config"])?)?;
                n += 1;
            }
        }
    }
    Ok(n)
}

fn is_wasm_filter(http_filter: &Value) -> bool {
    http_filter
        .get("typed_config")
        .and_then(|t| t.get("@type"))
        .and_then(Value::as_str)
        == Some(WASM_FILTER)
}

fn at<'v>(v: &'v mut Value, path: &[&str]) -> Result<&'v mut Value> {
    let mut cur = v;
    for (i, key) in path.iter().enumerate() {
        cur = cur
            .get_mut(*key)
            .ok_or_else(|| anyhow!("envoy.yaml has no {}", path[..=i].join(".")))?;
    }
    Ok(cur)
}

fn set(v: &mut Value, key: &str, value: Value) {
    if let Some(m) = v.as_mapping_mut() {
        m.insert(Value::from(key), value);
    } else {
        let mut m = Mapping::new();
        m.insert(Value::from(key), value);
        *v = Value::Mapping(m);
    }
}

/// The plugin configuration written in `envoy.yaml` (docs/design.md#configuration defaults).
pub fn example_plugin_config() -> Result<serde_json::Value> {
    let doc: Value = serde_norway::from_str(ENVOY_YAML)?;
    let listeners = doc
        .get("static_resources")
        .and_then(|s| s.get("listeners"))
        .and_then(Value::as_sequence)
        .ok_or_else(|| anyhow!("no listeners"))?;
    for l in listeners {
        let text = l
            .get("filter_chains")
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("filters"))
            .and_then(|f| f.get(0))
            .and_then(|f| f.get("typed_config"))
            .and_then(|t| t.get("http_filters"))
            .and_then(Value::as_sequence)
            .and_then(|hf| hf.iter().find(|f| is_wasm_filter(f)))
            .and_then(|f| f.get("typed_config"))
            .and_then(|t| t.get("config"))
            .and_then(|c| c.get("configuration"))
            .and_then(|c| c.get("value"))
            .and_then(Value::as_str);
        if let Some(text) = text {
            return serde_json::from_str(text).context("plugin configuration in envoy.yaml");
        }
    }
    bail!("envoy.yaml has no wasm plugin configuration")
}

/// What envoy.yaml's public listener does around mixmode besides balancing the pool, read from
/// the file so the harness (tests/src/harness_host.rs) lays out the same: the header-based
/// stateful session's header, the response headers its header_mutation removes, and the `/`
/// route's connect-failure retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicRoute {
    pub session_header: Option<String>,
    pub response_headers_removed: Vec<String>,
    pub connect_failure_retries: u32,
}

/// The filter's own configuration, inside an `ExtensionWithMatcher` wrapper if it has one
/// (envoy.yaml skips the stateful session filter on requests without the hint that way).
fn unwrap_matcher(typed_config: &Value) -> &Value {
    if typed_config["@type"].as_str() == Some(EXTENSION_WITH_MATCHER) {
        &typed_config["extension_config"]["typed_config"]
    } else {
        typed_config
    }
}

const EXTENSION_WITH_MATCHER: &str =
    "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher";

pub fn example_public_route() -> Result<PublicRoute> {
    let doc: Value = serde_norway::from_str(ENVOY_YAML)?;
    let public = doc["static_resources"]["listeners"]
        .as_sequence()
        .and_then(|ls| {
            ls.iter()
                .find(|l| l["name"].as_str() == Some(PUBLIC_LISTENER))
        })
        .ok_or_else(|| anyhow!("envoy.yaml has no listener {PUBLIC_LISTENER:?}"))?;
    let hcm = &public["filter_chains"][0]["filters"][0]["typed_config"];
    let filters = hcm["http_filters"]
        .as_sequence()
        .ok_or_else(|| anyhow!("the public listener has no http_filters"))?;
    let named = |name: &'static str| {
        filters
            .iter()
            .filter(move |f| f["name"].as_str() == Some(name))
            .map(|f| &f["typed_config"])
    };
    let session_header = named("envoy.filters.http.stateful_session")
        .map(unwrap_matcher)
        .find_map(|t| t["session_state"]["typed_config"]["name"].as_str())
        .map(str::to_string);
    let response_headers_removed = named("envoy.filters.http.header_mutation")
        .flat_map(|t| {
            t["mutations"]["response_mutations"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|m| m["remove"].as_str().map(str::to_string))
        .collect();
    let routes = hcm["route_config"]["virtual_hosts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|vh| vh["routes"].as_sequence().cloned().unwrap_or_default());
    let mut connect_failure_retries = 0;
    for r in routes {
        let policy = &r["route"]["retry_policy"];
        if r["match"]["prefix"].as_str() == Some("/")
            && policy["retry_on"]
                .as_str()
                .is_some_and(|on| on.split(',').any(|c| c.trim() == "connect-failure"))
        {
            // Envoy's default `num_retries` is 1.
            connect_failure_retries = policy["num_retries"]
                .as_u64()
                .map_or(Ok(1), u32::try_from)
                .context("num_retries")?;
        }
    }
    Ok(PublicRoute {
        session_header,
        response_headers_removed,
        connect_failure_retries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_carries_design_defaults_and_patches_cleanly() {
        let cfg = example_plugin_config().unwrap();
        assert_eq!(cfg["redispatch"]["max_attempts"], 5);
        assert_eq!(cfg["redispatch"]["cluster"], "mixmode_peers");
        assert_eq!(cfg["registry"]["stale_after_ms"], 15000);
        assert_eq!(cfg["heartbeat"]["path"], "/.well-known/mixmode/heartbeat");
        let ups = [
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        let out = render(
            ENVOY_YAML,
            &Patch {
                wasm: Path::new("/x/y.wasm"),
                plugin_config: "{\"app\":\"a\"}",
                upstreams: &ups,
                public_port: 0,
                heartbeat_port: 0,
                admin_port: 0,
                listen_address: "127.0.0.1",
            },
        )
        .unwrap();
        assert_eq!(out.matches("/x/y.wasm").count(), 2);
        assert_eq!(
            out.matches("allow_on_headers_stop_iteration: true").count(),
            2
        );
        assert!(out.contains("port_value: 2"));
        let etcd = [("etcd".to_string(), "127.0.0.1:2379".parse().unwrap())];
        let with = with_clusters(&out, &etcd).unwrap();
        assert!(with.contains("name: etcd") && with.contains("port_value: 2379"));
        assert!(!out.contains("8081"));
        // The peers cluster is never a route target.
        let doc: Value = serde_norway::from_str(ENVOY_YAML).unwrap();
        for l in doc["static_resources"]["listeners"].as_sequence().unwrap() {
            let hcm = &l["filter_chains"][0]["filters"][0]["typed_config"];
            let routes = serde_norway::to_string(&hcm["route_config"]).unwrap();
            assert!(routes.contains("virtual_hosts"));
            assert!(!routes.contains("mixmode_peers"));
        }
    }

    /// Affinity's pieces line up: the stateful session filter reads the header the plugin
    /// writes, after mixmode; the header_mutation between them removes that header from
    /// responses (encoders run in reverse); the heartbeat listener has neither.
    #[test]
    fn the_example_wires_affinity_to_the_stateful_session() {
        let cfg = example_plugin_config().unwrap();
        let header = cfg["affinity"]["host_header"].as_str().unwrap();
        let doc: Value = serde_norway::from_str(ENVOY_YAML).unwrap();
        let listeners = doc["static_resources"]["listeners"].as_sequence().unwrap();
        let chain = |name: &str| -> Vec<Value> {
            let l = listeners
                .iter()
                .find(|l| l["name"].as_str() == Some(name))
                .unwrap();
            l["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
                .as_sequence()
                .unwrap()
                .clone()
        };
        let public = chain(PUBLIC_LISTENER);
        let names: Vec<&str> = public.iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "mixmode",
                "envoy.filters.http.header_mutation",
                "envoy.filters.http.stateful_session",
                "envoy.filters.http.router"
            ]
        );
        let tc = |i: usize| &public[i]["typed_config"];
        assert_eq!(
            tc(1)["mutations"]["response_mutations"][0]["remove"].as_str(),
            Some(header)
        );
        assert!(tc(1)["mutations"].get("request_mutations").is_none());
        // Skipped on a request without the hint: the matcher reads the header mixmode writes.
        assert_eq!(tc(2)["@type"].as_str(), Some(EXTENSION_WITH_MATCHER));
        let skip = &tc(2)["xds_matcher"]["matcher_list"]["matchers"][0];
        assert_eq!(
            skip["predicate"]["not_matcher"]["single_predicate"]["input"]["typed_config"]
                ["header_name"]
                .as_str(),
            Some(header)
        );
        assert!(skip["on_match"]["action"]["typed_config"]["@type"]
            .as_str()
            .is_some_and(|t| t.ends_with("SkipFilter")));
        assert!(tc(2)["xds_matcher"].get("on_no_match").is_none());
        let session = unwrap_matcher(tc(2));
        assert_eq!(
            tc(2)["extension_config"]["name"].as_str(),
            Some("envoy.filters.http.stateful_session")
        );
        let state = &session["session_state"];
        assert_eq!(
            state["name"].as_str(),
            Some("envoy.http.stateful_session.header")
        );
        assert_eq!(state["typed_config"]["name"].as_str(), Some(header));
        assert!(
            session.get("strict").is_none(),
            "strict would 503 on a gone host"
        );
        // What the harness reads to lay out the same listener.
        assert_eq!(
            example_public_route().unwrap(),
            PublicRoute {
                session_header: Some(header.to_string()),
                response_headers_removed: vec![header.to_string()],
                connect_failure_retries: 1,
            }
        );
        let hb: Vec<String> = chain(HEARTBEAT_LISTENER)
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(hb, ["mixmode", "envoy.filters.http.router"]);
    }
}
