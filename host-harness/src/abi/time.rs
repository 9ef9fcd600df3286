//! Clocks: `proxy_get_current_time_nanoseconds` (wall clock, as Envoy gives it).

use crate::host::{code, HostState, Mem};
use crate::types::Status;
use std::time::{SystemTime, UNIX_EPOCH};
use wasmtime::{Caller, Linker};

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, HostState>, ret: u32| -> u32 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            code(Mem::write_u64(&mut caller, ret, now).map(|_| Status::Ok))
        },
    )?;
    Ok(())
}
