//! [`Host`] for the wasmtime harness (`host-harness`), laid out as `envoy/envoy.yaml` lays out
//! Envoy: a public listener in front of the pool, a heartbeat listener where only the filter
//! answers (anything else is the "no route" 404), the filter named `mixmode` with root id and
//! vm id `mixmode` and `allow_on_headers_stop_iteration`, the peers as an ORIGINAL_DST cluster
//! `mixmode_peers`, and the spec's extra clusters by name.
//!
//! What envoy.yaml does that this layout cannot (observed on Envoy 1.40 against this layout,
//! 2026-11-25), so no shared scenario may depend on it:
//! - The public listener's route that turns the filter off for `/.well-known/mixmode/` and
//!   answers 404: the harness has no per-route filter configuration, so there a heartbeat sent
//!   to the public listener is answered by the filter (204, registered).
//! - Envoy's per-connection buffer limit (1 MiB): a held version error whose body is larger
//!   becomes Envoy's own 500 `Internal Server Error` (no `x-mixmode`, no attempt counted); the
//!   harness buffers without limit and rescues it or passes it on `exhausted`.
//!
//! The public listener fronts the pool itself, round robin like the `app` cluster, so
//! `upstream.address` is the server that answered, as in Envoy. Around it, what envoy.yaml's
//! public listener has for version affinity (docs/design.md#version-affinity), read from the
//! file: the header-based stateful session on its header, the header_mutation that removes
//! that header from responses, and the `/` route's connect-failure retry to another host.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Result;
use host_harness::{Harness, ListenerSpec, LogLine, RunningHarness};

use crate::envoy::{example_public_route, wasm_path};
use crate::host::{Host, HostSpec, StartError};

/// Names shared with envoy.yaml, so logs and properties read the same on both hosts.
const PLUGIN_NAME: &str = "mixmode";
const PEERS_CLUSTER: &str = "mixmode_peers";

pub struct HarnessHost {
    pub harness: RunningHarness,
    public: SocketAddr,
    heartbeat: SocketAddr,
    heartbeat_path: String,
}

impl Host for HarnessHost {
    const NAME: &'static str = "harness";

    async fn start(spec: HostSpec) -> Result<Self, StartError> {
        let fail = |message: String, logs: String| StartError {
            exit_code: None,
            message,
            logs,
        };
        let wasm = wasm_path().map_err(|e| fail(format!("{e:#}"), String::new()))?;
        let mut builder = Harness::builder()
            .plugin_wasm(wasm)
            .plugin_config(spec.plugin_config.clone().into_bytes())
            .name(PLUGIN_NAME)
            .root_id(PLUGIN_NAME)
            .vm_id(PLUGIN_NAME)
            .allow_on_headers_stop_iteration(true)
            .workers(spec.concurrency.max(1))
            .original_dst_cluster(PEERS_CLUSTER);
        // An empty pool answers Envoy's 503 "no healthy upstream", as the `app` cluster does.
        builder = builder.listener_spec(public_listener(spec.upstreams.clone()).map_err(|e| {
            fail(
                format!("envoy.yaml's public listener: {e:#}"),
                String::new(),
            )
        })?);
        builder = builder.listener_without_upstream("127.0.0.1:0");
        for (name, addr) in &spec.clusters {
            builder = builder.cluster(name.clone(), *addr);
        }
        let harness = builder.start().await.map_err(|e| {
            // A refused configuration is Envoy's exit: the message and the plugin's own lines.
            let logs = e.logs().iter().map(envoy_format).collect::<Vec<_>>();
            fail(e.to_string(), format!("{}\n{e}", logs.join("\n")))
        })?;
        let addrs = harness.listener_addrs();
        let (Some(public), Some(heartbeat)) = (addrs.first().copied(), addrs.get(1).copied())
        else {
            return Err(fail(
                format!("the harness bound {addrs:?}, expected two listeners"),
                String::new(),
            ));
        };
        Ok(HarnessHost {
            harness,
            public,
            heartbeat,
            heartbeat_path: spec.heartbeat_path(),
        })
    }

    fn public_url(&self) -> String {
        format!("http://{}", self.public)
    }

    fn heartbeat_url(&self) -> String {
        format!("http://{}{}", self.heartbeat, self.heartbeat_path)
    }

    async fn metrics(&self) -> Result<BTreeMap<String, u64>> {
        // The same names EnvoyHost reports: Envoy's `wasmcustom.mixmode.*` without the prefix.
        Ok(self
            .harness
            .metrics()
            .into_iter()
            .filter(|(name, _)| name.starts_with("mixmode."))
            .collect())
    }

    fn logs(&self) -> String {
        self.harness
            .log_lines()
            .iter()
            .map(envoy_format)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The public listener in front of `upstreams`, with envoy.yaml's stateful session, response
/// header removal and connect-failure retries.
fn public_listener(upstreams: Vec<SocketAddr>) -> Result<ListenerSpec> {
    let route = example_public_route()?;
    let mut l = ListenerSpec::pool(SocketAddr::from(([127, 0, 0, 1], 0)), upstreams)
        .connect_failure_retries(route.connect_failure_retries);
    if let Some(header) = route.session_header {
        l = l.stateful_session(header);
    }
    for header in route.response_headers_removed {
        l = l.remove_response_header(header);
    }
    Ok(l)
}

/// A plugin log line as Envoy writes it (`[error][wasm] wasm log mixmode mixmode: …`), with the
/// VM instance in front in place of Envoy's thread id.
fn envoy_format(l: &LogLine) -> String {
    format!(
        "[{}] [{}][wasm] wasm log {PLUGIN_NAME} {PLUGIN_NAME}: {}",
        l.instance, l.level, l.message
    )
}
