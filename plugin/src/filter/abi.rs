//! Raw proxy-wasm ABI 0.2.1 calls whose status can be an error. The SDK's own wrappers `panic!`
//! on any status they did not expect and on non-UTF-8 values (docs/envoy-facts.md#sdk-and-failure); these return
//! `None`/`false` instead and read values as bytes. Statuses are taken as plain `u32` so an
//! unknown status is just another error.

use crate::core::pairs::{parse_pairs, serialize_pairs, Pairs};
use std::ptr::{null, null_mut};
use std::time::Duration;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const CAS_MISMATCH: u32 = 8;

pub mod map {
    pub const REQUEST_HEADERS: u32 = 0;
    pub const RESPONSE_HEADERS: u32 = 2;
    pub const CALL_RESPONSE_HEADERS: u32 = 6;
}

pub mod buffer {
    pub const REQUEST_BODY: u32 = 0;
    pub const CALL_RESPONSE_BODY: u32 = 4;
    pub const PLUGIN_CONFIGURATION: u32 = 7;
}

pub mod level {
    pub const DEBUG: u32 = 1;
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
    pub const CRITICAL: u32 = 5;
}

const STREAM_HTTP_RESPONSE: u32 = 1;
pub const METRIC_COUNTER: u32 = 0;
pub const METRIC_GAUGE: u32 = 1;

#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

/// Takes ownership of memory the host allocated through the SDK's `proxy_on_memory_allocate`
/// (a `Vec<u8>` of capacity `size`, leaked).
fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: the host wrote `size` bytes into a buffer it obtained from our allocator with
    // exactly that capacity; we are its only owner.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

pub fn log(level: u32, message: &str) {
    // SAFETY: pointer and length of a live str.
    unsafe {
        proxy_log(level, message.as_ptr(), message.len());
    }
}

pub fn now_ns() -> u64 {
    let mut t: u64 = 0;
    // SAFETY: `t` outlives the call.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    if status == OK {
        t
    } else {
        0
    }
}

pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

pub fn get_buffer(buffer_type: u32, start: usize, max_size: usize) -> Option<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: out-pointers to locals; the returned buffer is ours.
    let status =
        unsafe { proxy_get_buffer_bytes(buffer_type, start, max_size, &mut data, &mut size) };
    match status {
        OK => Some(owned(data, size)),
        NOT_FOUND => Some(Vec::new()),
        _ => None,
    }
}

/// All headers of `map_type` in the ABI's serialization (see `core::pairs`): ONE host call.
pub fn get_pairs_raw(map_type: u32) -> Option<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: out-pointers to locals; the returned buffer is ours.
    let status = unsafe { proxy_get_header_map_pairs(map_type, &mut data, &mut size) };
    (status == OK).then(|| owned(data, size))
}

/// All headers of `map_type` as bytes, in order, duplicates kept.
pub fn get_pairs(map_type: u32) -> Option<Pairs> {
    parse_pairs(&get_pairs_raw(map_type)?)
}

pub fn get_header(map_type: u32, name: &str) -> Option<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: pointer/length of a live str; out-pointers to locals.
    let status = unsafe {
        proxy_get_header_map_value(map_type, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    // A present header with an empty value comes back OK with no buffer: it is not absent
    // (docs/design.md#the-mismatch-signal tells an empty `x-app-version` from a missing one).
    (status == OK).then(|| owned(data, size))
}

pub fn replace_header(map_type: u32, name: &str, value: &[u8]) -> bool {
    // SAFETY: pointers/lengths of live slices.
    let status = unsafe {
        proxy_replace_header_map_value(
            map_type,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    status == OK
}

pub fn remove_header(map_type: u32, name: &str) -> bool {
    // SAFETY: pointer/length of a live str.
    let status = unsafe { proxy_remove_header_map_value(map_type, name.as_ptr(), name.len()) };
    status == OK
}

pub fn get_property(path: &[&str]) -> Option<Vec<u8>> {
    let mut serialized = Vec::new();
    for (i, part) in path.iter().enumerate() {
        if i > 0 {
            serialized.push(0);
        }
        serialized.extend_from_slice(part.as_bytes());
    }
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: pointer/length of a live Vec; out-pointers to locals.
    let status =
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) };
    if status != OK || data.is_null() {
        return None;
    }
    Some(owned(data, size))
}

pub enum SharedGet {
    Found(Vec<u8>, u32),
    Absent,
    Failed,
}

pub fn get_shared_data(key: &str) -> SharedGet {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: pointer/length of a live str; out-pointers to locals.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status {
        OK => SharedGet::Found(owned(data, size), cas),
        NOT_FOUND => SharedGet::Absent,
        _ => SharedGet::Failed,
    }
}

pub enum SharedSet {
    Ok,
    CasMismatch,
    Failed,
}

pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> SharedSet {
    // SAFETY: pointers/lengths of live slices.
    let status =
        unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) };
    match status {
        OK => SharedSet::Ok,
        CAS_MISMATCH => SharedSet::CasMismatch,
        _ => SharedSet::Failed,
    }
}

pub fn resume_http_response() -> bool {
    // SAFETY: no pointers.
    unsafe { proxy_continue_stream(STREAM_HTTP_RESPONSE) == OK }
}

/// A local reply; header values are bytes (the SDK's version takes only &str).
pub fn send_http_response(status: u16, headers: &[(&[u8], &[u8])], body: &[u8]) -> bool {
    let Some(serialized) = serialize_pairs(headers) else {
        return false;
    };
    // SAFETY: pointers/lengths of live buffers.
    let status = unsafe {
        proxy_send_local_response(
            u32::from(status),
            null(),
            0,
            body.as_ptr(),
            body.len(),
            serialized.as_ptr(),
            serialized.len(),
            -1,
        )
    };
    status == OK
}

pub fn define_metric(metric_type: u32, name: &str) -> Option<u32> {
    let mut id: u32 = 0;
    // SAFETY: pointer/length of a live str; out-pointer to a local.
    let status = unsafe { proxy_define_metric(metric_type, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

pub fn increment_metric(id: u32, by: i64) {
    // SAFETY: no pointers. An error only loses one count.
    unsafe {
        proxy_increment_metric(id, by);
    }
}

/// An HTTP call through `cluster`: Ok(its token), or Err(the status the host refused it with).
/// Through the SDK, not the raw ABI: the SDK hands the answer to the calling context by the token
/// its own `dispatch_http_call` registers (docs/envoy-facts.md#sdk-and-failure). The SDK panics
/// on any status but Ok, BadArgument and InternalFailure; Envoy refuses a call only with those
/// two (docs/envoy-facts.md#response-phase-and-calls). No trailers: none of our calls has any.
pub fn dispatch_http_call(
    cluster: &str,
    headers: &[(&str, String)],
    body: Option<&[u8]>,
    timeout_ms: u32,
) -> Result<u32, String> {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    proxy_wasm::hostcalls::dispatch_http_call(
        cluster,
        headers,
        body,
        Vec::new(),
        Duration::from_millis(u64::from(timeout_ms)),
    )
    .map_err(|status| format!("{status:?}"))
}

/// The SDK's `set_tick_period` panics on any status but Ok.
pub fn set_tick_period_ms(period_ms: u32) -> bool {
    // SAFETY: no pointers.
    unsafe { proxy_set_tick_period_milliseconds(period_ms) == OK }
}

pub fn record_metric(id: u32, value: u64) {
    // SAFETY: no pointers. An error only loses one sample.
    unsafe {
        proxy_record_metric(id, value);
    }
}
