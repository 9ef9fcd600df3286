//! The host side of the proxy-wasm ABI, one module per section of the v0.2.1 spec.

pub(crate) mod buffers;
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
use crate::types::Status;
use wasmtime::{ExternType, Linker, Module, Val, ValType};

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
    unimplemented::link(linker)?;
    Ok(())
}

/// Any other function the module imports (a newer ABI's, another host's extension) is defined
/// to answer `Unimplemented` (WASI: `ENOSYS`), so the module loads and the call never traps.
/// Returns the names it stubbed.
pub(crate) fn stub_unknown_imports(linker: &mut Linker<HostState>, module: &Module) -> Vec<String> {
    let mut stubbed = Vec::new();
    for import in module.imports() {
        let ExternType::Func(ty) = import.ty() else {
            continue;
        };
        let answer = if import.module().starts_with("wasi") {
            52 // ENOSYS
        } else {
            Status::Unimplemented.code() as i32
        };
        let results: Vec<ValType> = ty.results().collect();
        let defined = linker.func_new(
            import.module(),
            import.name(),
            ty.clone(),
            move |_caller, _params, out| {
                for (slot, t) in out.iter_mut().zip(results.iter()) {
                    *slot = match t {
                        ValType::I32 => Val::I32(answer),
                        ValType::I64 => Val::I64(0),
                        ValType::F32 => Val::F32(0),
                        ValType::F64 => Val::F64(0),
                        _ => Val::null_extern_ref(),
                    };
                }
                Ok(())
            },
        );
        // An error means the name is already defined: nothing to stub.
        if defined.is_ok() {
            stubbed.push(format!("{}.{}", import.module(), import.name()));
        }
    }
    stubbed
}
