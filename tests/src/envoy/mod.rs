//! The real Envoy: the example configuration (`envoy/envoy.yaml`) patched with ports, the pool
//! and the .wasm, run as a child process of the caller.

pub mod config;
pub mod host;
pub mod process;

pub use config::{example_plugin_config, ENVOY_YAML};
pub use host::EnvoyHost;
pub use process::{wasm_path, Envoy, EnvoyOptions, StartError};
