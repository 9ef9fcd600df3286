//! Shared data: `proxy_get_shared_data`, `proxy_set_shared_data`, one store per `vm_id` (as
//! Envoy keys it) seen by every VM instance of every plugin with that `vm_id`. CAS rules in
//! `shared::SharedData`.

use crate::host::{HostState, Mem};
use crate::shared::lock;
use crate::types::Status;
use wasmtime::{Caller, Linker};

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Caller<'_, HostState>,
         key_ptr: u32,
         key_len: u32,
         ptr_ptr: u32,
         size_ptr: u32,
         cas_ptr: u32|
         -> wasmtime::Result<u32> {
            let key = match Mem::read(&mut caller, key_ptr, key_len) {
                Ok(k) => k,
                Err(s) => return Ok(s.code()),
            };
            let Some((value, cas)) = lock(&caller.data().env.shared_data).get(&key) else {
                return Ok(Status::NotFound.code());
            };
            if let Err(s) = Mem::write_u32(&mut caller, cas_ptr, cas) {
                return Ok(s.code());
            }
            Ok(Mem::return_bytes(&mut caller, &value, ptr_ptr, size_ptr)?.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut caller: Caller<'_, HostState>,
         key_ptr: u32,
         key_len: u32,
         val_ptr: u32,
         val_len: u32,
         cas: u32|
         -> u32 {
            let key = match Mem::read(&mut caller, key_ptr, key_len) {
                Ok(k) => k,
                Err(s) => return s.code(),
            };
            let value = match Mem::read(&mut caller, val_ptr, val_len) {
                Ok(v) => v,
                Err(s) => return s.code(),
            };
            lock(&caller.data().env.shared_data)
                .set(&key, &value, cas)
                .code()
        },
    )?;
    Ok(())
}
