//! mixmode's end-to-end test kit: mock app servers of the reference patent's money-transfer app
//! ([`app`]), a launcher for the real Envoy on the example configuration ([`envoy`]), the
//! [`host::Host`] interface scenarios are written against, and the scenarios themselves.

pub mod app;
pub mod client;
pub mod envoy;
pub mod etcd;
pub mod host;
pub mod scenarios;
