//! Buffers: request/response bodies, the call response body, VM and plugin configuration.

use crate::host::{code, HostState, Mem};
use crate::types::{buffer, Status};
use wasmtime::{Caller, Linker};

/// The buffer `ty` names in the current context. `NotFound` when it exists in the ABI but not
/// here (no stream in effect, no call response being delivered, TCP and gRPC buffers).
pub(crate) fn buffer_of(state: &HostState, ty: u32) -> Result<&[u8], Status> {
    match ty {
        buffer::HTTP_REQUEST_BODY => state
            .stream()
            .map(|s| s.request_body.as_slice())
            .ok_or(Status::NotFound),
        buffer::HTTP_RESPONSE_BODY => state
            .stream()
            .map(|s| s.response_body.as_slice())
            .ok_or(Status::NotFound),
        buffer::HTTP_CALL_RESPONSE_BODY => state
            .call_response
            .as_ref()
            .map(|c| c.body.as_slice())
            .ok_or(Status::NotFound),
        buffer::VM_CONFIGURATION => Ok(state.env.vm_config.as_slice()),
        buffer::PLUGIN_CONFIGURATION => Ok(state.env.plugin_config.as_slice()),
        buffer::DOWNSTREAM_DATA
        | buffer::UPSTREAM_DATA
        | buffer::GRPC_CALL_MESSAGE
        | buffer::FOREIGN_FUNCTION_ARGUMENTS => Err(Status::NotFound),
        _ => Err(Status::BadArgument),
    }
}

/// Replaces `size` bytes at `start` with `value`; `start` at or past the end appends.
pub(crate) fn splice(buf: &mut Vec<u8>, start: usize, size: usize, value: &[u8]) {
    if start >= buf.len() {
        buf.extend_from_slice(value);
        return;
    }
    let end = start.saturating_add(size).min(buf.len());
    buf.splice(start..end, value.iter().copied());
}

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         ty: u32,
         start: u32,
         max: u32,
         ptr_ptr: u32,
         size_ptr: u32|
         -> wasmtime::Result<u32> {
            let slice = match buffer_of(caller.data(), ty) {
                Ok(b) => {
                    let start = start as usize;
                    if start > b.len() {
                        return Ok(Status::BadArgument.code());
                    }
                    let end = start.saturating_add(max as usize).min(b.len());
                    b[start..end].to_vec()
                }
                Err(s) => return Ok(s.code()),
            };
            Ok(Mem::return_bytes(&mut caller, &slice, ptr_ptr, size_ptr)?.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         ty: u32,
         start: u32,
         size: u32,
         ptr: u32,
         len: u32|
         -> u32 {
            code((|| {
                let value = Mem::read(&mut caller, ptr, len)?;
                let state = caller.data_mut();
                let buf = match ty {
                    buffer::HTTP_REQUEST_BODY => state.stream_mut().map(|s| &mut s.request_body),
                    buffer::HTTP_RESPONSE_BODY => state.stream_mut().map(|s| &mut s.response_body),
                    t if t <= buffer::FOREIGN_FUNCTION_ARGUMENTS => return Err(Status::NotFound),
                    _ => return Err(Status::BadArgument),
                }
                .ok_or(Status::NotFound)?;
                splice(buf, start as usize, size as usize, &value);
                Ok(Status::Ok)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut caller: Caller<'_, HostState>, ty: u32, size_ptr: u32, flags_ptr: u32| -> u32 {
            code((|| {
                let len = buffer_of(caller.data(), ty)?.len() as u32;
                Mem::write_u32(&mut caller, size_ptr, len)?;
                Mem::write_u32(&mut caller, flags_ptr, 0)?;
                Ok(Status::Ok)
            })())
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::splice;

    #[test]
    fn splice_prepends_replaces_appends() {
        let mut b = b"world".to_vec();
        splice(&mut b, 0, 0, b"hello ");
        assert_eq!(b, b"hello world");
        splice(&mut b, 0, 5, b"HELLO");
        assert_eq!(b, b"HELLO world");
        splice(&mut b, usize::MAX, 0, b"!");
        assert_eq!(b, b"HELLO world!");
        splice(&mut b, 0, usize::MAX, b"x");
        assert_eq!(b, b"x");
    }
}
