//! Functions of the ABI this host does not offer: gRPC (no gRPC clusters) and foreign
//! functions (none registered). They answer a status, never trap.

use crate::host::HostState;
use crate::types::Status;
use wasmtime::Linker;

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let unimplemented = Status::Unimplemented.code();
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        move |_: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32|
              -> u32 { unimplemented },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        move |_: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| -> u32 {
            unimplemented
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        move |_: u32, _: u32, _: u32, _: u32| -> u32 { unimplemented },
    )?;
    linker.func_wrap("env", "proxy_grpc_cancel", move |_: u32| -> u32 {
        unimplemented
    })?;
    linker.func_wrap("env", "proxy_grpc_close", move |_: u32| -> u32 {
        unimplemented
    })?;
    // The spec's answer for a name nobody registered.
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_: u32, _: u32, _: u32, _: u32, _: u32, _: u32| -> u32 { Status::NotFound.code() },
    )?;
    Ok(())
}
