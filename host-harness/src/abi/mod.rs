//! The host side of the proxy-wasm ABI, one module per section of the v0.2.1 spec.

pub(crate) mod buffers;
pub(crate) mod compat;
pub(crate) mod context;
pub(crate) mod headers;
pub(crate) mod http_call;
pub(crate) mod log;
pub(crate) mod metrics;
pub(crate) mod properties;
pub(crate) mod queues;
pub(crate) mod shared_data;
pub(crate) mod stream;
pub(crate) mod time;
pub(crate) mod timers;
pub(crate) mod unimplemented;

use crate::host::HostState;
use wasmtime::Linker;

/// Every host function of ABI 0.2.1 (and the 0.2.0/0.1 spellings), plus WASI preview 1 under
/// both module names.
pub(crate) fn link_all(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p1::add_to_linker_sync(linker, |s: &mut HostState| &mut s.wasi)?;
    wasmtime_wasi::p0::add_to_linker_sync(linker, |s: &mut HostState| &mut s.wasi)?;
    // fd_write is replaced: a filter's stdout/stderr are log lines, as in Envoy.
    linker.allow_shadowing(true);
    log::link(linker)?;
    linker.allow_shadowing(false);
    time::link(linker)?;
    timers::link(linker)?;
    buffers::link(linker)?;
    headers::link(linker)?;
    stream::link(linker)?;
    http_call::link(linker)?;
    shared_data::link(linker)?;
    queues::link(linker)?;
    metrics::link(linker)?;
    properties::link(linker)?;
    context::link(linker)?;
    compat::link(linker)?;
    unimplemented::link(linker)?;
    Ok(())
}
