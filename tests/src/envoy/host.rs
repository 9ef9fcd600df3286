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

/// The real Envoy, spoken to over HTTP/2: its `public_url` is `h2c://…`, so every request a
/// scenario sends to the public listener is HTTP/2 with prior knowledge (heartbeats and
/// requests straight to the app servers stay HTTP/1.1). Envoy's example listener needs no
/// change for it: `codec_type` AUTO recognises the HTTP/2 preface.
pub struct EnvoyH2Host(pub EnvoyHost);

impl std::ops::Deref for EnvoyH2Host {
    type Target = EnvoyHost;
    fn deref(&self) -> &EnvoyHost {
        &self.0
    }
}

impl Host for EnvoyH2Host {
    const NAME: &'static str = "envoy-h2";

    async fn start(spec: HostSpec) -> Result<Self, StartError> {
        EnvoyHost::start(spec).await.map(EnvoyH2Host)
    }

    fn public_url(&self) -> String {
        self.0.public_url().replacen("http://", "h2c://", 1)
    }

    fn heartbeat_url(&self) -> String {
        self.0.heartbeat_url()
    }

    async fn metrics(&self) -> Result<BTreeMap<String, u64>> {
        self.0.metrics().await
    }

    fn logs(&self) -> String {
        self.0.logs()
    }

    async fn heartbeat_connections_per_worker(&self) -> Result<Option<Vec<u64>>> {
        self.0.heartbeat_connections_per_worker().await
    }
}
