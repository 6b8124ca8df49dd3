;; Reads the wall clock with clock_time_get and exits with the errno it
;; returned (0 when granted clock:read, 76 = NOTCAPABLE when not).
(module
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $proc_exit (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 0)))))
