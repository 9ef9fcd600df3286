;; Declares ABI 0.2.1 but exports the 0.1.0 (two-argument) proxy_on_request_headers.
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (global $heap (mut i32) (i32.const 8192))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_request_headers") (param i32 i32) (result i32) i32.const 0)
)
