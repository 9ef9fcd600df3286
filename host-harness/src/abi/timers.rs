//! Timers: `proxy_set_tick_period_milliseconds`. Each root context of each VM instance has its
//! own period and its own `proxy_on_tick`, as in each Envoy worker (and the main thread).

use crate::host::HostState;
use crate::types::Status;
use wasmtime::{Caller, Linker};

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Caller<'_, HostState>, period: u32| -> u32 {
            let state = caller.data_mut();
            let root = state.root_context;
            state.tick_periods.insert(root, period);
            Status::Ok.code()
        },
    )?;
    Ok(())
}
