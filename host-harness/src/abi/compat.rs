//! Imports cpp-host registers outside the v0.2.1 list: ABI 0.1.0's `proxy_get_configuration`
//! and two Emscripten helpers. Linking them keeps every module Envoy links linkable here.

use crate::host::{HostState, Mem};
use crate::types::Status;
use wasmtime::{Caller, Linker};

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    // ABI 0.1.0 reads the plugin configuration with this instead of a buffer.
    linker.func_wrap(
        "env",
        "proxy_get_configuration",
        |mut caller: Caller<'_, HostState>, ptr_ptr: u32, size_ptr: u32| -> wasmtime::Result<u32> {
            let config = caller.data().env.plugin_config.clone();
            Mem::return_bytes(&mut caller, &config, ptr_ptr, size_ptr).map(Status::code)
        },
    )?;
    linker.func_wrap("env", "pthread_equal", |a: u32, b: u32| -> u32 {
        u32::from(a == b)
    })?;
    linker.func_wrap("env", "emscripten_notify_memory_growth", |_: u32| {})?;
    Ok(())
}
