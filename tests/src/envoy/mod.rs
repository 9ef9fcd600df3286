//! The real Envoy: the example configuration (`envoy/envoy.yaml`) patched with ports, the pool
//! and the .wasm, run as a child process of the caller.

pub mod config;
pub mod host;
pub mod process;

pub use config::{example_plugin_config, example_public_route, PublicRoute, ENVOY_YAML};
pub use host::{EnvoyH2Host, EnvoyHost};
pub use process::{
    envoy_bin, envoy_version, wasm_path, Envoy, EnvoyOptions, LdsOutcome, RunOptions, StartError,
};
