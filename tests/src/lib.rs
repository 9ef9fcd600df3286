//! mixmode's end-to-end test kit: mock app servers of the reference patent's money-transfer app
//! ([`app`]), a launcher for the real Envoy on the example configuration ([`envoy`]), the
//! [`host::Host`] interface scenarios are written against, and the scenarios themselves
//! ([`scenarios`], instantiated per host with [`all_scenarios!`]).
//!
//! Run the suite on the real Envoy (`envoy` 1.40 on the PATH, or `ENVOY_BIN`):
//! `cargo build -p mixmode --release --target wasm32-wasip1 && cargo test -p mixmode-tests --test envoy`.
//! The .wasm is `$MIXMODE_WASM` or `target/wasm32-wasip1/release/mixmode.wasm`;
//! `MIXMODE_KEEP_ENVOY_DIR=1` keeps each Envoy's rendered config and log.
//!
//! The same scenarios on the wasmtime harness ([`harness_host`], no Envoy needed, about 10 s):
//! `cargo test -p mixmode-tests --test harness`. The full suite, both hosts and the Envoy-only
//! tests: `cargo test -p mixmode-tests`.
//!
//! A pool of two versions behind Envoy, one version error rescued:
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use mixmode_tests::app::{AppConfig, AppServer, HeartbeatClient, Registration, SessionStore};
//! use mixmode_tests::client::Req;
//! use mixmode_tests::envoy::{wasm_path, Envoy, EnvoyOptions};
//!
//! let store = SessionStore::new(); // shared by the pool
//! let v1 = AppServer::start(AppConfig::new("server-a", "1", &store)).await?;
//! let v2 = AppServer::start(AppConfig::new("server-b", "2", &store)).await?;
//! let config = serde_json::json!({"app": "checkout", "heartbeat": {"token": "secret"}});
//! let envoy = Envoy::start(&EnvoyOptions::new(wasm_path()?, &config, vec![v1.addr()])).await?;
//! let hb = HeartbeatClient::new(
//!     format!("{}/.well-known/mixmode/heartbeat", envoy.heartbeat_base_url()),
//!     "secret",
//! );
//! hb.register(&Registration::of(&v2)).await?;
//! // A session written by v2, sent to the v1 server: the v2 server answers.
//! let session = store.create("2", &Default::default())?;
//! let r = Req::get(format!("{}/echo", envoy.public_url()))
//!     .header("cookie", format!("session={session}"))
//!     .send()
//!     .await?;
//! assert_eq!(r.header("x-mixmode").as_deref(), Some("redispatched"));
//! # Ok(()) }
//! ```

pub mod app;
pub mod client;
pub mod envoy;
pub mod etcd;
#[cfg(feature = "harness")]
pub mod harness_host;
pub mod host;
/// The filter's metric names, the file the filter itself compiles.
#[path = "../../plugin/src/filter/metric_names.rs"]
pub mod metric_names;
pub mod scenarios;
