//! Logging: `proxy_log`, `proxy_get_log_level`, and stdout/stderr (`fd_write`), which Envoy
//! turns into info and error log lines; `proc_exit`, which Envoy only logs.

use crate::host::{code, HostState, Mem};
use crate::types::{LogLevel, Status};
use wasmtime::{Caller, Linker};

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Caller<'_, HostState>, level: u32, ptr: u32, len: u32| -> u32 {
            code((|| {
                let level = LogLevel::from_raw(level).ok_or(Status::BadArgument)?;
                let msg = Mem::read(&mut caller, ptr, len)?;
                caller
                    .data()
                    .log(level, String::from_utf8_lossy(&msg).into_owned());
                Ok(Status::Ok)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Caller<'_, HostState>, ret: u32| -> u32 {
            let level = caller.data().env.log_level as u32;
            code(Mem::write_u32(&mut caller, ret, level).map(|_| Status::Ok))
        },
    )?;
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        linker.func_wrap(module, "fd_write", fd_write)?;
        linker.func_wrap(module, "proc_exit", proc_exit)?;
    }
    Ok(())
}

/// Envoy 1.40 (cpp-host `wasi_unstable_proc_exit`) logs this at trace and returns: the VM
/// goes on (an AssemblyScript `abort` then reaches its `unreachable` and traps). During
/// start-up the call is outside the allow-list and traps with `restricted_callback`.
fn proc_exit(caller: Caller<'_, HostState>, _code: u32) {
    caller
        .data()
        .log(LogLevel::Trace, "wasi_unstable proc_exit".to_string());
}

const ERRNO_SUCCESS: u32 = 0;
const ERRNO_BADF: u32 = 8;
const ERRNO_FAULT: u32 = 21;

/// Writes to stdout become info lines, to stderr error lines (proxy-wasm-cpp-host's rule);
/// other descriptors do not exist in a filter.
fn fd_write(
    mut caller: Caller<'_, HostState>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    nwritten: u32,
) -> u32 {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return ERRNO_BADF,
    };
    let mut data = Vec::new();
    for i in 0..iovs_len {
        let Ok(iov) = Mem::read(&mut caller, iovs.wrapping_add(i * 8), 8) else {
            return ERRNO_FAULT;
        };
        let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        match Mem::read(&mut caller, ptr, len) {
            Ok(bytes) => data.extend_from_slice(&bytes),
            Err(_) => return ERRNO_FAULT,
        }
    }
    let written = data.len() as u32;
    let mut text = String::from_utf8_lossy(&data).into_owned();
    while text.ends_with('\n') {
        text.pop();
    }
    if !text.is_empty() {
        caller.data().log(level, text);
    }
    if Mem::write_u32(&mut caller, nwritten, written).is_err() {
        return ERRNO_FAULT;
    }
    ERRNO_SUCCESS
}
