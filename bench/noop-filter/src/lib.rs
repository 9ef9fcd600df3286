//! Two baselines for mixmode's happy path, one .wasm, chosen by the plugin configuration:
//! - `{}` (or anything else): **no-op**. Every callback keeps the SDK's default (Continue).
//! - `floor`: the least any filter that can replay a request must do (docs/envoy-facts.md#request-phase: request data is
//!   gone by the response phase, so the copy is taken on the way in, on every request): one raw
//!   read of all request headers, a copy of each body chunk, one read of the response `:status`.
//!   The same raw ABI calls mixmode makes, and nothing else.
//!
//! Same SDK and release profile as mixmode, so no-op → floor is the price of being able to
//! replay, and floor → mixmode is what mixmode's own logic adds.

use std::ptr::null_mut;
use std::rc::Rc;
use std::cell::Cell;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { floor: Rc::new(Cell::new(false)) })
    });
}}

extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
}

const REQUEST_HEADERS: u32 = 0;
const RESPONSE_HEADERS: u32 = 2;
const REQUEST_BODY: u32 = 0;

/// Takes ownership of a buffer the host allocated through the SDK's `proxy_on_memory_allocate`.
fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host filled `size` bytes of a buffer the SDK's allocator gave it, with that
    // capacity; ownership passes to us (the SDK's own getters do the same).
    unsafe { Vec::from_raw_parts(data, size, size) }
}

struct Root {
    floor: Rc<Cell<bool>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        self.floor.set(config.trim_ascii() == b"floor");
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.floor.get() {
            Some(Box::new(Floor::default()))
        } else {
            Some(Box::new(Noop))
        }
    }
}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {}

#[derive(Default)]
struct Floor {
    headers: Vec<u8>,
    body: Vec<u8>,
    status: Vec<u8>,
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (mut data, mut size) = (null_mut(), 0);
        // SAFETY: out-pointers to locals.
        if unsafe { proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) } == 0 {
            self.headers = owned(data, size);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        let (mut data, mut size) = (null_mut(), 0);
        // SAFETY: out-pointers to locals.
        if unsafe { proxy_get_buffer_bytes(REQUEST_BODY, 0, body_size, &mut data, &mut size) } == 0
        {
            self.body.extend_from_slice(&owned(data, size));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (mut data, mut size) = (null_mut(), 0);
        let key = b":status";
        // SAFETY: pointer/length of a live slice; out-pointers to locals.
        if unsafe {
            proxy_get_header_map_value(RESPONSE_HEADERS, key.as_ptr(), key.len(), &mut data, &mut size)
        } == 0
        {
            self.status = owned(data, size);
        }
        Action::Continue
    }
}
