//! The decisions of the filter, in plain Rust: no proxy-wasm, no clock, no randomness of its own.
//! The glue in `filter/` passes time and random numbers in and carries the results out.

pub mod affinity;
pub mod budget;
pub mod cidr;
pub mod codec;
pub mod config;
mod config_json;
pub mod counter;
pub mod demand;
pub mod etcd;
pub mod heartbeat;
pub mod jobs;
pub mod json;
pub mod lease;
pub mod lookup;
pub mod members;
pub mod pairs;
pub mod peers;
pub mod poll;
pub mod positions;
pub mod redispatch;
pub mod registry;
pub mod replay;
pub mod retry;
pub mod select;
pub mod signal;
pub mod store;
