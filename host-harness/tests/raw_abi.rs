//! Raw-ABI guests written in WAT: every status the host answers for calls it cannot serve,
//! and the three ways a module starts (`_initialize`, `_start`, a start section), with the
//! old `wasi_unstable` module name. What Envoy refuses at load and at start-up is in
//! `strict.rs`.

mod common;
use common::*;
use host_harness::{Harness, LogLevel};

/// On request headers, calls each probe and answers with a body of one status byte per probe.
const PROBES: &str = r#"
(module
  (import "env" "proxy_grpc_call" (func $grpc_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_ctx (param i32) (result i32)))
  (import "env" "proxy_done" (func $done (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_metric" (func $get_metric (param i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (global $heap (mut i32) (i32.const 8192))
  (data (i32.const 100) "nowhere")
  (data (i32.const 200) "k")
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    global.get $heap
    local.set $p
    global.get $heap
    local.get $n
    i32.add
    global.set $heap
    local.get $p)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
  (func $put (param $i i32) (param $v i32)
    (i32.store8 (i32.add (i32.const 1024) (local.get $i)) (local.get $v)))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $put (i32.const 0) (call $grpc_call (i32.const 100) (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 300)))
    (call $put (i32.const 1) (call $get_header (i32.const 99) (i32.const 200) (i32.const 1) (i32.const 300) (i32.const 304)))
    (call $put (i32.const 2) (call $get_buffer (i32.const 42) (i32.const 0) (i32.const 10) (i32.const 300) (i32.const 304)))
    (call $put (i32.const 3) (call $get_buffer (i32.const 2) (i32.const 0) (i32.const 10) (i32.const 300) (i32.const 304)))
    (call $put (i32.const 4) (call $continue (i32.const 2)))
    (call $put (i32.const 5) (call $continue (i32.const 9)))
    (call $put (i32.const 6) (call $get_header (i32.const 0) (i32.const 0xfffffff0) (i32.const 100) (i32.const 300) (i32.const 304)))
    (call $put (i32.const 7) (call $http_call (i32.const 100) (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 300)))
    (call $put (i32.const 8) (call $set_ctx (i32.const 12345)))
    (call $put (i32.const 9) (call $done))
    (call $put (i32.const 10) (call $get_shared (i32.const 200) (i32.const 1) (i32.const 300) (i32.const 304) (i32.const 308)))
    (call $put (i32.const 11) (call $dequeue (i32.const 77) (i32.const 300) (i32.const 304)))
    (call $put (i32.const 12) (call $get_metric (i32.const 77) (i32.const 300)))
    (call $put (i32.const 13) (call $define_metric (i32.const 9) (i32.const 200) (i32.const 1) (i32.const 300)))
    (call $put (i32.const 14) (call $foreign (i32.const 100) (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 300) (i32.const 304)))
    (call $put (i32.const 15) (call $close (i32.const 3)))
    (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 1024) (i32.const 16) (i32.const 0) (i32.const 0) (i32.const 0)))
    i32.const 1)
)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_the_host_cannot_serve_answer_a_status_and_never_trap() {
    let up = upstream(|_| Reply::ok("never")).await;
    let h = Harness::builder()
        .plugin_wasm_bytes(PROBES.as_bytes().to_vec())
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/", &[]).await;
    assert_eq!(got.status, 200);
    let expected: Vec<u8> = vec![
        12, // grpc_call: Unimplemented
        2,  // unknown map type: BadArgument
        2,  // unknown buffer type: BadArgument
        1,  // downstream data in an HTTP filter: NotFound
        12, // continue_stream(DOWNSTREAM): Unimplemented
        2,  // continue_stream(9): BadArgument
        6,  // a key outside memory: InvalidMemoryAccess
        2,  // http_call to an unknown cluster: BadArgument
        2,  // set_effective_context(unknown): BadArgument
        1,  // proxy_done with nothing pending: NotFound
        1,  // shared data, absent key: NotFound
        1,  // dequeue, unknown queue: NotFound
        1,  // get_metric, unknown id: NotFound
        2,  // define_metric, unknown type: BadArgument
        1,  // foreign function nobody registered: NotFound
        12, // close_stream(UPSTREAM): Unimplemented
    ];
    assert_eq!(got.body, expected);
    assert!(up.requests().is_empty());
    h.shutdown().await;
}

/// A command module (`_start`) printing through the old `wasi_unstable.fd_write`.
const START_MODULE: &str = r#"
(module
  (import "wasi_unstable" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from _start\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 18))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 4096)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_abi_version_0_2_0"))
)
"#;

/// Only a start section, logging through `proxy_log` and refusing nothing.
const START_SECTION_MODULE: &str = r#"
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from the start section")
  (func $init (drop (call $log (i32.const 3) (i32.const 16) (i32.const 28))))
  (start $init)
  (func (export "malloc") (param i32) (result i32) i32.const 4096)
  (func (export "proxy_abi_version_0_2_1"))
)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_start_with_start_or_a_start_section() {
    let up = upstream(|_| Reply::ok("through")).await;
    let h = Harness::builder()
        .plugin_wasm_bytes(START_MODULE.as_bytes().to_vec())
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    assert!(h
        .logs()
        .contains(&(LogLevel::Info, "hello from _start".to_string())));
    // No HTTP callbacks exported: everything continues.
    assert_eq!(get(h.listener_addrs()[0], "/", &[]).await.text(), "through");
    h.shutdown().await;

    let h = Harness::builder()
        .plugin_wasm_bytes(START_SECTION_MODULE.as_bytes().to_vec())
        .workers(2)
        .start()
        .await
        .unwrap();
    // Canary, main and two workers each ran the start section.
    let lines = h.logs();
    assert_eq!(
        lines
            .iter()
            .filter(|(l, m)| *l == LogLevel::Warn && m == "hello from the start section")
            .count(),
        4
    );
    h.shutdown().await;
}
