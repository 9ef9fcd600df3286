;; A filter that shows what a host tells it of the request's protocol and of trailers, marked with
;; its plugin configuration (its "tag"), for host-harness/tests/protocols.rs and the same test on
;; Envoy (tests/tests/plugins.rs):
;; - request headers: adds `x-protocol: <property request.protocol>` and `x-order: <tag>`;
;; - request trailers (map type 1) and response trailers (map type 3): reads `x-seen` there and,
;;   if a filter before it added one, adds `x-prev: <its first value>`; then adds `x-seen: <tag>`.
;; Continue everywhere.
(module
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-order")
  (data (i32.const 32) "x-protocol")
  (data (i32.const 48) "x-seen")
  (data (i32.const 56) "x-prev")
  ;; A property path: its segments joined by NUL.
  (data (i32.const 64) "request\00protocol")
  (global $heap (mut i32) (i32.const 8192))
  (global $tag (mut i32) (i32.const 0))
  (global $tag_len (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (i32.const 0))
      (then
        (drop (call $get_buffer (i32.const 7) (i32.const 0) (local.get $size) (i32.const 256) (i32.const 260)))
        (global.set $tag (i32.load (i32.const 256)))
        (global.set $tag_len (i32.load (i32.const 260)))))
    i32.const 1)
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.eqz (call $get_property (i32.const 64) (i32.const 16) (i32.const 264) (i32.const 268)))
      (then
        (drop (call $add_header (i32.const 0) (i32.const 32) (i32.const 10)
          (i32.load (i32.const 264)) (i32.load (i32.const 268))))))
    (drop (call $add_header (i32.const 0) (i32.const 16) (i32.const 7) (global.get $tag) (global.get $tag_len)))
    i32.const 0)
  ;; Marks trailer map `map`: `x-prev: <x-seen there>` if it has one, then `x-seen: <tag>`.
  (func $mark (param $map i32)
    (if (i32.eqz (call $get_header (local.get $map) (i32.const 48) (i32.const 6) (i32.const 272) (i32.const 276)))
      (then
        (drop (call $add_header (local.get $map) (i32.const 56) (i32.const 6)
          (i32.load (i32.const 272)) (i32.load (i32.const 276))))))
    (drop (call $add_header (local.get $map) (i32.const 48) (i32.const 6) (global.get $tag) (global.get $tag_len))))
  (func (export "proxy_on_request_trailers") (param i32 i32) (result i32)
    (call $mark (i32.const 1))
    i32.const 0)
  (func (export "proxy_on_response_trailers") (param i32 i32) (result i32)
    (call $mark (i32.const 3))
    i32.const 0)
)
