//! Registers one app server in etcd for mixmode's etcd registry (docs/design.md#etcd-mirror):
//! a key `<prefix><pool>/<app>/<version>/<ip:port>` holding the record as JSON, attached to a
//! lease that is kept alive every TTL/3 and revoked at shutdown. Talks to etcd's JSON gateway
//! over plain HTTP/1.1, so it needs no gRPC stack.
//!
//! Draining by demand (docs/design.md#draining-by-demand): [`wait_until_quiet`] polls the Envoys'
//! demand listings until the server's version has gone unneeded for a quiet period; [`Drain`]
//! is the decision, without I/O.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mixmode_register::{Config, Registration};
//! let config = Config::new("http://127.0.0.1:2379", "/mixmode/", "default", "checkout", "2",
//!                          "127.0.0.1:8080", 15)?;
//! let registration = Registration::start(config).await?;
//! // ... serve ...
//! registration.stop().await?; // revoke: the key is gone at once
//! # Ok(()) }
//! ```

mod args;
mod config;
mod demand;
mod drain;
mod gateway;
mod http;
mod registration;

pub use args::{Args, DrainConfig, DEFAULT_MAX_WAIT_S, DEFAULT_QUIET_MS};
pub use config::{
    Config, ConfigError, Endpoint, DEFAULT_ETCD, DEFAULT_POOL, DEFAULT_PREFIX, DEFAULT_TTL_SECS,
    MAX_TTL_SECS, MIN_TTL_SECS,
};
pub use demand::{parse_listing, Answer, Decision, Drain, Need, Policy, Target};
pub use drain::{poll_interval, unix_ms, wait_until_quiet, DemandSource};
pub use gateway::{Gateway, GatewayError, Kv};
pub use registration::{Registration, Status};
