//! mixmode: a proxy-wasm filter that re-dispatches a request to a peer of the session's version
//! when its server reports a version mismatch (see design.md).
// A failed index panics, and a panic takes the worker's wasm VM down with it.
#![deny(clippy::indexing_slicing)]

pub mod core;

#[cfg(target_arch = "wasm32")]
mod filter;
