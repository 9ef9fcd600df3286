//! Timers: `proxy_set_tick_period_milliseconds`. Each VM instance has its own period and its
//! own `proxy_on_tick`, as each Envoy worker (and the main thread) does.

use crate::host::HostState;
use crate::types::Status;
use wasmtime::{Caller, Linker};

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Caller<'_, HostState>, period: u32| -> u32 {
            caller.data_mut().tick_period_ms = period;
            Status::Ok.code()
        },
    )?;
    Ok(())
}
