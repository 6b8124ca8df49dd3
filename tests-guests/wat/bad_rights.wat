;; path_open on the first preopen (fd 3) with rights of all ones: wasmtime-wasi
;; cannot convert them and aborts the guest instead of answering an errno.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "x")
  (func (export "_start")
    (drop (call $open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 1)
      (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))))
