//! Context control: `proxy_set_effective_context`, `proxy_done`.

use crate::host::HostState;
use crate::types::Status;
use wasmtime::{Caller, Linker};

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut caller: Caller<'_, HostState>, id: u32| -> u32 {
            if caller.data_mut().enter(id) {
                Status::Ok.code()
            } else {
                Status::BadArgument.code()
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_done",
        |mut caller: Caller<'_, HostState>| -> u32 {
            let state = caller.data_mut();
            let id = state.effective_context;
            match state.streams.get_mut(&id) {
                Some(s) if s.awaiting_done => {
                    s.awaiting_done = false;
                    state.done_contexts.push(id);
                    Status::Ok.code()
                }
                _ => Status::NotFound.code(),
            }
        },
    )?;
    Ok(())
}
