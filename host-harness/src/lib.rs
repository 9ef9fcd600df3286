//! # host-harness: a proxy-wasm host for testing filters without Envoy
//!
//! A real host on wasmtime: it loads any filter Envoy loads (ABI 0.2.1 and 0.2.0, WASI
//! preview 1 including the old `wasi_unstable` names; modules with `_initialize`, `_start`, or
//! only a start section), listens for HTTP, forwards to upstreams, performs
//! `dispatch_http_call` over real sockets, keeps shared data with CAS across several VM
//! instances, drives ticks, and records metrics and logs. Where a filter can observe Envoy's
//! behaviour, the harness behaves like Envoy 1.40 (see the README's list of quirks).
//!
//! Each [`RunningHarness`] is independent: no global state, so tests run in parallel.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use host_harness::Harness;
//! let upstream: std::net::SocketAddr = "127.0.0.1:9000".parse()?;
//! let h = Harness::builder()
//!     .plugin_wasm("target/wasm32-wasip1/release/my_filter.wasm")
//!     .plugin_config(br#"{"app": "checkout"}"#.to_vec())
//!     .allow_on_headers_stop_iteration(true)
//!     .workers(2)
//!     .listener("127.0.0.1:0", upstream)            // public listener
//!     .listener_without_upstream("127.0.0.1:0")     // e.g. heartbeats the filter answers
//!     .cluster("registry", "127.0.0.1:2379".parse()?)
//!     .original_dst_cluster("mixmode_peers")
//!     .start()
//!     .await?;
//! let public = h.listener_addrs()[0];
//! // ... send requests to `public` with any HTTP client ...
//! println!("{:?}", h.metrics());
//! for (level, line) in h.logs() {
//!     println!("[{level}] {line}");
//! }
//! h.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Model
//! - `workers(n)` starts `n` VM instances serving requests, each on its own thread, plus (as
//!   Envoy's main thread) one more that serves nothing but has a root context and ticks. A
//!   canary instance runs `proxy_on_vm_start`/`proxy_on_configure` first and is thrown away;
//!   a refusal is [`Error::Refused`] carrying the plugin's log lines.
//! - Connections are spread over the workers round robin; all of one connection's requests
//!   go to the same worker, as in Envoy.
//! - Several plugins: [`HarnessBuilder::filter`] adds wasm filters to one chain (requests in
//!   order, responses in reverse, as Envoy's `http_filters`), [`HarnessBuilder::service`]
//!   singleton services (one VM on the main thread, no HTTP). Each is a [`Plugin`] with its own
//!   configuration, root id and `vm_id`; the `plugin_*` methods describe the first filter.
//! - Plugins with the same `vm_id` share one shared-data store; queues are keyed by `vm_id`;
//!   metrics are one set for the harness. Several listeners share the chain. Plugins with the
//!   same `vm_id`, module and VM configuration run in one VM per thread, each its own root
//!   context, as in Envoy.
//! - Metrics are exposed under the names the plugin defined ([`RunningHarness::metrics`]); the
//!   admin endpoint's `/stats` prints them as Envoy does, `wasmcustom.<name>: <value>`.
//!
//! ## For a `Host` implementation in a scenario suite
//! Build with the same plugin configuration you give Envoy, one listener per Envoy listener,
//! the same cluster names, then drive the listener addresses with an HTTP client. Failures to
//! start come back as [`Error`]; the plugin's logs are in [`RunningHarness::logs`]; metrics by
//! plain name. Everything is owned by the returned value: create one per test.

pub mod abi;
mod admin;
mod body;
mod calls;
mod error;
mod frontend;
mod harness;
mod histogram;
pub mod host;
mod load;
pub mod maps;
mod messages;
mod plugin;
mod pool;
pub mod shared;
mod stages;
mod startup;
pub mod types;
mod worker;

pub use calls::{CONNECT_FAILURE_BODY, TERMINATION_BODY, TIMEOUT_BODY};
pub use error::Error;
pub use harness::{Harness, HarnessBuilder, ListenerSpec, RunningHarness};
pub use histogram::Histogram;
pub use host::Cluster;
pub use load::{AbiVersion, LoadError};
pub use plugin::Plugin;
pub use pool::{encode_host, UpstreamPool};
pub use shared::LogLine;
pub use types::{LogLevel, Status};
