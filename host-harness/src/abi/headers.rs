//! Header and trailer maps. A map that does not exist in the current phase answers like Envoy:
//! a single read (or a write) is `BadArgument`, a read of all pairs is an empty map (§3a).

use crate::host::{code, HostState, Mem};
pub(crate) use crate::maps::get_value;
use crate::maps::{self, name_eq};
use crate::types::{map, Headers, Status};
use wasmtime::{Caller, Linker};

/// `Err(BadArgument)` for a map type outside the ABI; `Ok(None)` for one not available now.
pub(crate) fn map_of(state: &HostState, ty: u32) -> Result<Option<&Headers>, Status> {
    let stream = state.stream();
    Ok(match ty {
        map::HTTP_REQUEST_HEADERS => stream.and_then(|s| s.request_headers.as_ref()),
        map::HTTP_REQUEST_TRAILERS => stream.and_then(|s| s.request_trailers.as_ref()),
        map::HTTP_RESPONSE_HEADERS => stream.and_then(|s| s.response_headers.as_ref()),
        map::HTTP_RESPONSE_TRAILERS => stream.and_then(|s| s.response_trailers.as_ref()),
        map::GRPC_CALL_INITIAL_METADATA | map::GRPC_CALL_TRAILING_METADATA => None,
        map::HTTP_CALL_RESPONSE_HEADERS => state.call_response.as_ref().map(|c| &c.headers),
        map::HTTP_CALL_RESPONSE_TRAILERS => state.call_response.as_ref().map(|c| &c.trailers),
        _ => return Err(Status::BadArgument),
    })
}

fn map_of_mut(state: &mut HostState, ty: u32) -> Result<&mut Headers, Status> {
    if ty > map::HTTP_CALL_RESPONSE_TRAILERS {
        return Err(Status::BadArgument);
    }
    let stream = state.stream_mut();
    match ty {
        map::HTTP_REQUEST_HEADERS => stream.and_then(|s| s.request_headers.as_mut()),
        map::HTTP_REQUEST_TRAILERS => stream.and_then(|s| s.request_trailers.as_mut()),
        map::HTTP_RESPONSE_HEADERS => stream.and_then(|s| s.response_headers.as_mut()),
        map::HTTP_RESPONSE_TRAILERS => stream.and_then(|s| s.response_trailers.as_mut()),
        // Call responses and gRPC metadata are read-only.
        _ => None,
    }
    .ok_or(Status::BadArgument)
}

/// Envoy's `setCopy`: the first entry keeps its place with the new value, later ones go.
pub(crate) fn replace(headers: &mut Headers, key: &[u8], value: &[u8]) {
    let mut found = false;
    headers.retain_mut(|(k, v)| {
        if !name_eq(k, key) {
            return true;
        }
        if found {
            return false;
        }
        found = true;
        *v = value.to_vec();
        true
    });
    if !found {
        headers.push((key.to_ascii_lowercase(), value.to_vec()));
    }
}

pub(crate) fn remove(headers: &mut Headers, key: &[u8]) {
    headers.retain(|(k, _)| !name_eq(k, key));
}

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut caller: Caller<'_, HostState>, ty: u32, ret: u32| -> u32 {
            code((|| {
                let size = maps::serialize(map_of(caller.data(), ty)?.ok_or(Status::BadArgument)?)
                    .len() as u32;
                Mem::write_u32(&mut caller, ret, size)?;
                Ok(Status::Ok)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Caller<'_, HostState>,
         ty: u32,
         ptr_ptr: u32,
         size_ptr: u32|
         -> wasmtime::Result<u32> {
            let bytes = match map_of(caller.data(), ty) {
                Ok(Some(h)) => maps::serialize(h),
                Ok(None) => maps::serialize(&[]),
                Err(s) => return Ok(s.code()),
            };
            Ok(Mem::return_bytes(&mut caller, &bytes, ptr_ptr, size_ptr)?.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Caller<'_, HostState>, ty: u32, ptr: u32, len: u32| -> u32 {
            code((|| {
                let bytes = Mem::read(&mut caller, ptr, len)?;
                let pairs = maps::deserialize(&bytes).ok_or(Status::BadArgument)?;
                let target = map_of_mut(caller.data_mut(), ty)?;
                *target = pairs
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect();
                Ok(Status::Ok)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Caller<'_, HostState>,
         ty: u32,
         key_ptr: u32,
         key_len: u32,
         ptr_ptr: u32,
         size_ptr: u32|
         -> wasmtime::Result<u32> {
            let key = match Mem::read(&mut caller, key_ptr, key_len) {
                Ok(k) => k,
                Err(s) => return Ok(s.code()),
            };
            let value = match map_of(caller.data(), ty) {
                Ok(Some(h)) => match get_value(h, &key) {
                    Some(v) => v.to_vec(),
                    None => return Ok(Status::NotFound.code()),
                },
                Ok(None) => return Ok(Status::BadArgument.code()),
                Err(s) => return Ok(s.code()),
            };
            Ok(Mem::return_bytes(&mut caller, &value, ptr_ptr, size_ptr)?.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut caller: Caller<'_, HostState>,
         ty: u32,
         key_ptr: u32,
         key_len: u32,
         val_ptr: u32,
         val_len: u32|
         -> u32 {
            code((|| {
                let key = Mem::read(&mut caller, key_ptr, key_len)?;
                let value = Mem::read(&mut caller, val_ptr, val_len)?;
                map_of_mut(caller.data_mut(), ty)?.push((key.to_ascii_lowercase(), value));
                Ok(Status::Ok)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut caller: Caller<'_, HostState>,
         ty: u32,
         key_ptr: u32,
         key_len: u32,
         val_ptr: u32,
         val_len: u32|
         -> u32 {
            code((|| {
                let key = Mem::read(&mut caller, key_ptr, key_len)?;
                let value = Mem::read(&mut caller, val_ptr, val_len)?;
                replace(map_of_mut(caller.data_mut(), ty)?, &key, &value);
                Ok(Status::Ok)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, HostState>, ty: u32, key_ptr: u32, key_len: u32| -> u32 {
            code((|| {
                let key = Mem::read(&mut caller, key_ptr, key_len)?;
                remove(map_of_mut(caller.data_mut(), ty)?, &key);
                Ok(Status::Ok)
            })())
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
    fn replace_keeps_position_and_drops_duplicates() {
        let mut m = h(&[("a", "1"), ("x", "1"), ("b", "2"), ("X", "2")]);
        replace(&mut m, b"x", b"9");
        assert_eq!(m, h(&[("a", "1"), ("x", "9"), ("b", "2")]));
        replace(&mut m, b"New", b"n");
        assert_eq!(m.last(), Some(&(b"new".to_vec(), b"n".to_vec())));
    }

    #[test]
    fn lookups_ignore_case_and_return_first() {
        let m = h(&[("Set-Cookie", "a"), ("set-cookie", "b")]);
        assert_eq!(get_value(&m, b"set-cookie"), Some(&b"a"[..]));
        let mut m = m;
        remove(&mut m, b"SET-COOKIE");
        assert!(m.is_empty());
    }
}
