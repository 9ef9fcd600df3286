//! Metrics: define/increment/record/get, one value per name across all VM instances.

use crate::host::{HostState, Mem};
use crate::shared::lock;
use crate::types::{MetricType, Status};
use wasmtime::{Caller, Linker};

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Caller<'_, HostState>,
         ty: u32,
         name_ptr: u32,
         name_len: u32,
         ret: u32|
         -> u32 {
            let Some(kind) = MetricType::from_raw(ty) else {
                return Status::BadArgument.code();
            };
            let name = match Mem::read(&mut caller, name_ptr, name_len) {
                Ok(n) => String::from_utf8_lossy(&n).into_owned(),
                Err(s) => return s.code(),
            };
            let id = lock(&caller.data().env.metrics).define(kind, &name);
            match Mem::write_u32(&mut caller, ret, id) {
                Ok(()) => Status::Ok.code(),
                Err(s) => s.code(),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |caller: Caller<'_, HostState>, id: u32, delta: i64| -> u32 {
            lock(&caller.data().env.metrics).increment(id, delta).code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |caller: Caller<'_, HostState>, id: u32, value: u64| -> u32 {
            lock(&caller.data().env.metrics).record(id, value).code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut caller: Caller<'_, HostState>, id: u32, ret: u32| -> u32 {
            let value = lock(&caller.data().env.metrics).get(id);
            match value {
                Ok(v) => match Mem::write_u64(&mut caller, ret, v) {
                    Ok(()) => Status::Ok.code(),
                    Err(s) => s.code(),
                },
                Err(s) => s.code(),
            }
        },
    )?;
    Ok(())
}
