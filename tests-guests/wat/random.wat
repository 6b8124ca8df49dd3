;; Asks random_get for 16 bytes and exits with the errno it returned (0
;; when granted random:read, 76 = NOTCAPABLE when not).
(module
  (import "wasi_snapshot_preview1" "random_get"
    (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $proc_exit (call $random_get (i32.const 0) (i32.const 16)))))
