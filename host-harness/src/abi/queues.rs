//! Shared queues: register/resolve/enqueue/dequeue. The VM instance that registered a queue
//! first is told of new items through `proxy_on_queue_ready`, on its own thread.

use crate::host::{HostState, Mem};
use crate::shared::lock;
use crate::types::Status;
use crate::worker::WorkerMsg;
use wasmtime::{Caller, Linker};

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut caller: Caller<'_, HostState>, name_ptr: u32, name_len: u32, ret: u32| -> u32 {
            let name = match Mem::read(&mut caller, name_ptr, name_len) {
                Ok(n) => n,
                Err(s) => return s.code(),
            };
            let state = caller.data();
            let owner = (state.instance_index, state.root_context);
            let id = lock(&state.env.queues).register(&state.env.vm_id, &name, owner);
            match Mem::write_u32(&mut caller, ret, id) {
                Ok(()) => Status::Ok.code(),
                Err(s) => s.code(),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut caller: Caller<'_, HostState>,
         vm_ptr: u32,
         vm_len: u32,
         name_ptr: u32,
         name_len: u32,
         ret: u32|
         -> u32 {
            let r = (|| {
                let vm = Mem::read(&mut caller, vm_ptr, vm_len)?;
                let name = Mem::read(&mut caller, name_ptr, name_len)?;
                let env = caller.data().env.clone();
                // An empty vm_id means "my own VM", as in Envoy.
                let vm = if vm.is_empty() {
                    env.vm_id.clone()
                } else {
                    String::from_utf8_lossy(&vm).into_owned()
                };
                let id = lock(&env.queues)
                    .resolve(&vm, &name)
                    .ok_or(Status::NotFound)?;
                Mem::write_u32(&mut caller, ret, id)?;
                Ok(Status::Ok)
            })();
            match r {
                Ok(s) | Err(s) => s.code(),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut caller: Caller<'_, HostState>, id: u32, ptr: u32, len: u32| -> u32 {
            let value = match Mem::read(&mut caller, ptr, len) {
                Ok(v) => v,
                Err(s) => return s.code(),
            };
            let env = caller.data().env.clone();
            let owner = {
                let mut queues = lock(&env.queues);
                let Some(q) = queues.queues.get_mut(&id) else {
                    return Status::NotFound.code();
                };
                q.items.push_back(value);
                q.owner
            };
            if let Some(tx) = lock(&env.workers).get(owner.0) {
                let _ = tx.send(WorkerMsg::QueueReady {
                    queue_id: id,
                    root_context: owner.1,
                });
            }
            Status::Ok.code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut caller: Caller<'_, HostState>,
         id: u32,
         ptr_ptr: u32,
         size_ptr: u32|
         -> wasmtime::Result<u32> {
            let item = {
                let mut queues = lock(&caller.data().env.queues);
                let Some(q) = queues.queues.get_mut(&id) else {
                    return Ok(Status::NotFound.code());
                };
                match q.items.pop_front() {
                    Some(item) => item,
                    None => return Ok(Status::Empty.code()),
                }
            };
            Ok(Mem::return_bytes(&mut caller, &item, ptr_ptr, size_ptr)?.code())
        },
    )?;
    Ok(())
}
