//! The demo's Envoys: the tests crate's launcher (one launcher in the workspace) on the
//! configurations the demo renders itself. The child is killed by PID when the handle drops,
//! which is also what happens on Ctrl-C: the run future is dropped with everything it owns.

use anyhow::{anyhow, Result};
pub use mixmode_tests::envoy::Envoy;
use mixmode_tests::envoy::RunOptions;

/// Starts Envoy on `yaml` with `workers` worker threads, logging warnings and errors only.
pub async fn start(yaml: &str, workers: usize) -> Result<Envoy> {
    let run = RunOptions {
        log_level: "warning".to_string(),
        ..RunOptions::new(workers)
    };
    Envoy::run_yaml(yaml, &run)
        .await
        .map_err(|e| anyhow!("{e}"))
}
