//! Stream control: `proxy_continue_stream`, `proxy_close_stream`, `proxy_send_local_response`
//! (and the ABI 0.1 spellings `proxy_continue_request`/`proxy_continue_response`).
//!
//! The host only records what the filter asked; the front end acts on it once the callback
//! returns, which is also when Envoy acts (a local reply is deferred until the callback ends).

use crate::host::{code, HostState, Mem};
use crate::maps;
use crate::types::{stream, Status};
use crate::worker::{LocalReply, StreamEvent};
use wasmtime::{Caller, Linker};

fn continue_stream(state: &mut HostState, ty: u32) -> Status {
    let event = match ty {
        stream::HTTP_REQUEST => StreamEvent::ContinueRequest,
        stream::HTTP_RESPONSE => StreamEvent::ContinueResponse,
        stream::DOWNSTREAM | stream::UPSTREAM => return Status::Unimplemented,
        _ => return Status::BadArgument,
    };
    // On a root context Envoy has no stream to resume and answers Ok.
    if let Some(s) = state.stream() {
        let _ = s.events.send(event);
    }
    Status::Ok
}

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut caller: Caller<'_, HostState>, ty: u32| -> u32 {
            continue_stream(caller.data_mut(), ty).code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_request",
        |mut caller: Caller<'_, HostState>| -> u32 {
            continue_stream(caller.data_mut(), stream::HTTP_REQUEST).code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_response",
        |mut caller: Caller<'_, HostState>| -> u32 {
            continue_stream(caller.data_mut(), stream::HTTP_RESPONSE).code()
        },
    )?;
    linker.func_wrap("env", "proxy_clear_route_cache", || -> u32 {
        Status::Ok.code()
    })?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut caller: Caller<'_, HostState>, ty: u32| -> u32 {
            match ty {
                stream::HTTP_REQUEST | stream::HTTP_RESPONSE => {
                    if let Some(s) = caller.data_mut().stream() {
                        let _ = s.events.send(StreamEvent::Reset);
                    }
                    Status::Ok.code()
                }
                stream::DOWNSTREAM | stream::UPSTREAM => Status::Unimplemented.code(),
                _ => Status::BadArgument.code(),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Caller<'_, HostState>,
         status: u32,
         details_ptr: u32,
         details_len: u32,
         body_ptr: u32,
         body_len: u32,
         headers_ptr: u32,
         headers_len: u32,
         _grpc_status: i32|
         -> u32 {
            code((|| {
                let details = Mem::read(&mut caller, details_ptr, details_len)?;
                let body = Mem::read(&mut caller, body_ptr, body_len)?;
                let raw = Mem::read(&mut caller, headers_ptr, headers_len)?;
                let headers = maps::deserialize(&raw).ok_or(Status::BadArgument)?;
                let Some(s) = caller.data_mut().stream_mut() else {
                    return Ok(Status::Ok);
                };
                // Envoy ignores a second local reply on the same stream (envoy#36809).
                if s.local_reply_sent {
                    return Ok(Status::Ok);
                }
                s.local_reply_sent = true;
                let _ = s.events.send(StreamEvent::LocalReply(LocalReply {
                    status: status as u16,
                    details: String::from_utf8_lossy(&details).into_owned(),
                    headers,
                    body,
                }));
                Ok(Status::Ok)
            })())
        },
    )?;
    Ok(())
}
