;; Imports a host function Warden does not provide.
(module
  (import "warden" "secret_get" (func $secret_get (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (drop (call $secret_get (i32.const 0)))))
