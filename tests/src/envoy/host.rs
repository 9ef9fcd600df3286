//! [`Host`] for the real Envoy.

use std::collections::BTreeMap;

use anyhow::Result;

use super::process::{wasm_path, Envoy, EnvoyOptions};
use crate::host::{Host, HostSpec, StartError};

pub struct EnvoyHost {
    pub envoy: Envoy,
    heartbeat_path: String,
}

impl Host for EnvoyHost {
    const NAME: &'static str = "envoy";

    async fn start(spec: HostSpec) -> Result<Self, StartError> {
        let wasm = wasm_path().map_err(|e| StartError {
            exit_code: None,
            message: format!("{e:#}"),
            logs: String::new(),
        })?;
        let mut opts = EnvoyOptions::new(wasm, &serde_json::Value::Null, spec.upstreams.clone());
        opts.plugin_config = spec.plugin_config.clone();
        opts.concurrency = spec.concurrency;
        opts.extra_clusters = spec.clusters.clone();
        opts.http1_trailers = spec.http1_trailers;
        let envoy = Envoy::start(&opts).await?;
        Ok(EnvoyHost {
            envoy,
            heartbeat_path: spec.heartbeat_path(),
        })
    }

    fn public_url(&self) -> String {
        self.envoy.public_url()
    }

    fn heartbeat_url(&self) -> String {
        format!("{}{}", self.envoy.heartbeat_base_url(), self.heartbeat_path)
    }

    async fn metrics(&self) -> Result<BTreeMap<String, u64>> {
        self.envoy.mixmode_metrics().await
    }

    fn logs(&self) -> String {
        self.envoy.logs()
    }

    async fn heartbeat_connections_per_worker(&self) -> Result<Option<Vec<u64>>> {
        // envoy.yaml sets the listener's stat_prefix to its name.
        let stats = self
            .envoy
            .stats("^listener\\.heartbeat\\.worker_[0-9]+\\.downstream_cx_total$")
            .await?;
        Ok(Some(stats.into_values().collect()))
    }
}
