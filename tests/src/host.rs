//! What a scenario needs from a proxy-wasm host running mixmode: start it with a plugin
//! configuration in front of a pool, send it traffic and heartbeats, read its metrics and logs.
//! Implemented by the real Envoy ([`crate::envoy::EnvoyHost`]) and by the wasmtime harness.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;

use anyhow::Result;

/// What to start.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// The plugin configuration JSON text, passed to the filter as is.
    pub plugin_config: String,
    /// The pool the public listener balances over (round robin).
    pub upstreams: Vec<SocketAddr>,
    /// Clusters the filter calls by name besides the peers' (e.g. `etcd` -> its address).
    pub clusters: Vec<(String, SocketAddr)>,
    /// Worker threads (Envoy's `--concurrency`; VM instances in the harness).
    pub concurrency: usize,
    /// HTTP/1 request trailers reach the filter. Envoy drops them in its codec unless its
    /// listener sets `enable_trailers`; the harness always passes them on.
    pub http1_trailers: bool,
}

impl HostSpec {
    pub fn new(plugin_config: &serde_json::Value, upstreams: Vec<SocketAddr>) -> Self {
        HostSpec {
            plugin_config: plugin_config.to_string(),
            upstreams,
            clusters: Vec::new(),
            concurrency: 1,
            http1_trailers: false,
        }
    }

    /// `heartbeat.path` of the configuration, or its default.
    pub fn heartbeat_path(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.plugin_config)
            .ok()
            .and_then(|v| v["heartbeat"]["path"].as_str().map(str::to_string))
            .unwrap_or_else(|| DEFAULT_HEARTBEAT_PATH.to_string())
    }
}

pub const DEFAULT_HEARTBEAT_PATH: &str = "/.well-known/mixmode/heartbeat";

/// The host did not come up (for a refused plugin configuration, that is the expected outcome).
#[derive(Debug, Clone)]
pub struct StartError {
    /// The process's exit code, when the host is a process that exited.
    pub exit_code: Option<i32>,
    pub message: String,
    /// The host's log, with the plugin's own log lines.
    pub logs: String,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<&str> = self.logs.lines().collect();
        // Envoy quotes the whole configuration in some errors: keep lines short.
        let tail: Vec<String> = lines[lines.len().saturating_sub(40)..]
            .iter()
            .map(|l| l.chars().take(400).collect())
            .collect();
        let tail = tail.join("\n");
        write!(
            f,
            "{} (exit code {:?}); log:\n{tail}",
            self.message, self.exit_code
        )
    }
}

impl std::error::Error for StartError {}

pub trait Host: Sized + Send + Sync + 'static {
    /// Shown in failure messages.
    const NAME: &'static str;

    fn start(spec: HostSpec) -> impl Future<Output = Result<Self, StartError>> + Send;

    /// `http://ip:port` of the public listener.
    fn public_url(&self) -> String;

    /// Full URL of the heartbeat path on the internal listener.
    fn heartbeat_url(&self) -> String;

    /// The filter's metrics by docs/design.md#metrics name (`mixmode.redispatch_ok`, ...). A metric the
    /// filter never defined is absent.
    fn metrics(&self) -> impl Future<Output = Result<BTreeMap<String, u64>>> + Send;

    /// Everything the host logged so far.
    fn logs(&self) -> String;

    /// Connections each worker accepted on the heartbeat listener, when the host can tell.
    fn heartbeat_connections_per_worker(
        &self,
    ) -> impl Future<Output = Result<Option<Vec<u64>>>> + Send {
        async { Ok(None) }
    }
}
