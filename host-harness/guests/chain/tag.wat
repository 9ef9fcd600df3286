;; A filter that marks what passes through it with its plugin configuration (its "tag"), for
;; the filter-chain and vm_id tests (tests/chain.rs):
;; - request headers: adds `x-order: <tag>` and writes shared data `last` = tag; a tag starting
;;   with `!` answers a local reply 403 with the tag as body instead (and pauses);
;; - response headers: adds `x-order: <tag>`, then `x-saw: <shared data last>` and
;;   `x-tick: <shared data tick>` for the entries its vm_id's store holds; a tag starting with
;;   `?` answers a local reply 418 with the tag as body instead (and pauses).
(module
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-order")
  (data (i32.const 32) "last")
  (data (i32.const 48) "x-saw")
  (data (i32.const 64) "tick")
  (data (i32.const 80) "x-tick")
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
  ;; Adds header `name` to map `map` with the value of shared-data `key`, if the store has it.
  (func $add_shared (param $map i32) (param $name i32) (param $name_len i32) (param $key i32) (param $key_len i32)
    (if (i32.eqz (call $get_shared (local.get $key) (local.get $key_len) (i32.const 264) (i32.const 268) (i32.const 272)))
      (then
        (drop (call $add_header (local.get $map) (local.get $name) (local.get $name_len)
          (i32.load (i32.const 264)) (i32.load (i32.const 268)))))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.eq (i32.load8_u (global.get $tag)) (i32.const 33))
      (then
        (drop (call $reply (i32.const 403) (i32.const 0) (i32.const 0)
          (global.get $tag) (global.get $tag_len) (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 1))))
    (drop (call $add_header (i32.const 0) (i32.const 16) (i32.const 7) (global.get $tag) (global.get $tag_len)))
    (drop (call $set_shared (i32.const 32) (i32.const 4) (global.get $tag) (global.get $tag_len) (i32.const 0)))
    i32.const 0)
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (i32.eq (i32.load8_u (global.get $tag)) (i32.const 63))
      (then
        (drop (call $reply (i32.const 418) (i32.const 0) (i32.const 0)
          (global.get $tag) (global.get $tag_len) (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 1))))
    (drop (call $add_header (i32.const 2) (i32.const 16) (i32.const 7) (global.get $tag) (global.get $tag_len)))
    (call $add_shared (i32.const 2) (i32.const 48) (i32.const 5) (i32.const 32) (i32.const 4))
    (call $add_shared (i32.const 2) (i32.const 80) (i32.const 6) (i32.const 64) (i32.const 4))
    i32.const 0)
)
