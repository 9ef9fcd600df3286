//! HTTP calls: `proxy_http_call` (checked at once, sent when the callback returns) and
//! `proxy_get_status`. The answer arrives through `proxy_on_http_call_response` (worker.rs).

use crate::abi::headers::get_value;
use crate::host::{Cluster, HostState, Mem, PendingCall};
use crate::maps;
use crate::types::{Headers, Status};
use std::net::SocketAddr;
use std::time::Duration;
use wasmtime::{Caller, Linker};

/// Validates a call as Envoy does before any socket is touched: unknown cluster or a missing
/// `:authority`/`:method`/`:path` is `BadArgument`; an ORIGINAL_DST cluster without a usable
/// `x-envoy-original-dst-host` is `InternalFailure`. Both come back at once, with no callback.
pub(crate) fn plan_call(
    cluster: Option<&Cluster>,
    headers: &Headers,
) -> Result<SocketAddr, Status> {
    let cluster = cluster.ok_or(Status::BadArgument)?;
    for required in [&b":authority"[..], b":method", b":path"] {
        match get_value(headers, required) {
            Some(v) if !v.is_empty() => {}
            _ => return Err(Status::BadArgument),
        }
    }
    match cluster {
        Cluster::Static(addr) => Ok(*addr),
        Cluster::OriginalDst => get_value(headers, b"x-envoy-original-dst-host")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.trim().parse::<SocketAddr>().ok())
            .ok_or(Status::InternalFailure),
    }
}

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut caller: Caller<'_, HostState>,
         up_ptr: u32,
         up_len: u32,
         h_ptr: u32,
         h_len: u32,
         b_ptr: u32,
         b_len: u32,
         t_ptr: u32,
         t_len: u32,
         timeout_ms: u32,
         ret_token: u32|
         -> u32 {
            let r = (|| {
                let name = Mem::read(&mut caller, up_ptr, up_len)?;
                let raw = Mem::read(&mut caller, h_ptr, h_len)?;
                let body = Mem::read(&mut caller, b_ptr, b_len)?;
                let _trailers = Mem::read(&mut caller, t_ptr, t_len)?;
                let mut headers = maps::deserialize(&raw).ok_or(Status::BadArgument)?;
                let name = String::from_utf8_lossy(&name).into_owned();
                let target = plan_call(caller.data().env.clusters.get(&name), &headers)?;
                // What Envoy's router adds to every dispatched call.
                headers.push((b"x-envoy-internal".to_vec(), b"true".to_vec()));
                if timeout_ms > 0 {
                    headers.push((
                        b"x-envoy-expected-rq-timeout-ms".to_vec(),
                        timeout_ms.to_string().into_bytes(),
                    ));
                }
                let state = caller.data_mut();
                state.next_call_token = state.next_call_token.wrapping_add(1).max(1);
                let token = state.next_call_token;
                let root = state.root_context;
                state.call_roots.insert(token, root);
                state.pending_calls.push(PendingCall {
                    token,
                    target,
                    headers,
                    body,
                    // Envoy: a timeout of 0 means none at all.
                    timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u64)),
                });
                Mem::write_u32(&mut caller, ret_token, token)?;
                Ok(Status::Ok)
            })();
            match r {
                Ok(s) | Err(s) => s.code(),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut caller: Caller<'_, HostState>,
         code_ptr: u32,
         msg_ptr_ptr: u32,
         msg_size_ptr: u32|
         -> wasmtime::Result<u32> {
            let status = match caller.data().call_response.as_ref() {
                Some(c) => get_value(&c.headers, b":status")
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|s| s.parse::<u32>().ok())
                    .unwrap_or(0),
                None => return Ok(Status::NotFound.code()),
            };
            if let Err(s) = Mem::write_u32(&mut caller, code_ptr, status) {
                return Ok(s.code());
            }
            Ok(Mem::return_bytes(&mut caller, &[], msg_ptr_ptr, msg_size_ptr)?.code())
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn refusals_come_at_once() {
        let ok = h(&[(":method", "GET"), (":path", "/"), (":authority", "x")]);
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(plan_call(None, &ok), Err(Status::BadArgument));
        assert_eq!(plan_call(Some(&Cluster::Static(addr)), &ok), Ok(addr));
        let no_authority = h(&[(":method", "GET"), (":path", "/")]);
        assert_eq!(
            plan_call(Some(&Cluster::Static(addr)), &no_authority),
            Err(Status::BadArgument)
        );
        assert_eq!(
            plan_call(Some(&Cluster::OriginalDst), &ok),
            Err(Status::InternalFailure)
        );
        let mut bad = ok.clone();
        bad.push((
            b"x-envoy-original-dst-host".to_vec(),
            b"not-an-address".to_vec(),
        ));
        assert_eq!(
            plan_call(Some(&Cluster::OriginalDst), &bad),
            Err(Status::InternalFailure)
        );
        // The first copy of the header wins.
        let mut two = ok.clone();
        two.push((
            b"x-envoy-original-dst-host".to_vec(),
            b"127.0.0.1:7".to_vec(),
        ));
        two.push((
            b"x-envoy-original-dst-host".to_vec(),
            b"127.0.0.1:8".to_vec(),
        ));
        assert_eq!(
            plan_call(Some(&Cluster::OriginalDst), &two),
            Ok("127.0.0.1:7".parse().unwrap_or_else(|_| unreachable!()))
        );
    }
}
