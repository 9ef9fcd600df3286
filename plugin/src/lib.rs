//! mixmode: a proxy-wasm filter that re-dispatches a request to a peer of the session's version
//! when its server reports a version mismatch (see docs/design.md).
// A failed index panics, and a panic takes the worker's wasm VM down with it.
#![deny(clippy::indexing_slicing)]
// Sizes and counts come from the network and from shared data other VMs wrote: no arithmetic
// may wrap or trap on them (tests are exempt).
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod core;

#[cfg(target_arch = "wasm32")]
mod filter;
