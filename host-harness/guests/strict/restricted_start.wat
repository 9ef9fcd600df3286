;; Defines a metric in _initialize (what a proxy_wasm::main! block calling define_metric does):
;; outside cpp-host's start-up allow-list, so the call traps.
(module
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "early_metric")
  (func (export "proxy_abi_version_0_2_1"))
  (global $heap (mut i32) (i32.const 8192))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "_initialize")
    (drop (call $define (i32.const 0) (i32.const 16) (i32.const 12) (i32.const 64))))
)
